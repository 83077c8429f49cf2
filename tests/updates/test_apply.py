"""updog update / update-image / update-apply / update-revert on a disk image, and crash safety.

After every SIGKILL (at random moments during the image write, and between each step) the disk
boots the running set with its version, and a retry succeeds.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.updates.conftest import VARIANT
from tests.updates.simhost import REPO, Sim, make_sim
from tests.updates.test_gpt import assert_sgdisk_agrees
from updates.apply import MigrationCache
from updates.gptprio import Flags
from updates.partitions import OsDisk


def test_update_image_then_apply_then_boot(sim: Sim) -> None:
    done = sim.updog("update-image")
    assert done.stdout == f"Update applied: {VARIANT} 1.1.0\n"
    assert "Starting update to 1.1.0" in done.stderr
    assert sim.flags()["B"] == Flags(0, 1, False) and sim.flags()["next"] == "A"
    assert_sgdisk_agrees(sim.disk)
    with OsDisk(sim.disk, writable=False) as d:
        assert d.identity("B")["VERSION_ID"] == "1.1.0"
    cache = MigrationCache.under(sim.root / "var/lib/updog")
    assert any(p.name.endswith(".manifest.json") for p in cache.targets.iterdir())
    assert (cache.metadata / "timestamp.json").exists()
    assert (cache.metadata / "1.root.json").exists()
    sim.updog("update-apply")
    assert sim.flags()["B"] == Flags(2, 1, False)
    assert_sgdisk_agrees(sim.disk)
    sim.updog("update-revert")
    assert sim.flags()["next"] == "A"
    sim.updog("update-apply")
    assert sim.reboot() == "B"
    assert sim.running_version() == "1.1.0"
    assert_sgdisk_agrees(sim.disk)


def test_update_with_reboot_and_json(sim: Sim) -> None:
    done = sim.updog("update", "--reboot", "--json")
    obj = json.loads(done.stdout[: done.stdout.rindex("}") + 1])
    assert obj["version"] == "1.1.0"
    assert "Rebooted (simulated): Set B" in done.stdout
    assert sim.running_version() == "1.1.0"
    done = sim.updog("update")
    assert done.returncode == 0 and "No update required" in done.stderr


def test_no_update_overwrites_the_fallback_of_an_unconfirmed_boot(sim: Sim) -> None:
    sim.updog("update", "--reboot")  # now on 1.1.0 in set B, not marked successful (yet)
    assert sim.flags()["A"] == Flags(1, 0, True)
    sim.publish("1.2.0")
    before = sim.disk.read_bytes()
    done = sim.updog("update", check=False)
    assert done.returncode == 1
    assert "set B has not been marked successful" in done.stderr
    assert "refusing to overwrite it" in done.stderr
    assert sim.disk.read_bytes() == before
    assert sim.reboot() == "A" and sim.running_version() == "1.0.0"  # the fallback is whole
    sim.updog("update", "--reboot")
    assert sim.running_version() == "1.2.0"  # from a confirmed (successful) set A, it may go


def test_tampered_image_is_never_marked_valid(sim: Sim) -> None:
    stored = next(p for p in (sim.repo / "targets").iterdir() if p.name.endswith("-root.img"))
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    done = sim.updog("update", check=False)
    assert done.returncode == 1 and "tampered target" in done.stderr
    assert sim.flags()["B"] == Flags(0, 0, False)
    assert sim.reboot() == "A" and sim.running_version() == "1.0.0"


def test_release_without_a_migrations_entry_needs_none(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", migrations={}, from_version="1.0.5")  # no entry from 1.0.0
    sim.updog("update")
    assert sim.reboot() == "B" and sim.running_version() == "1.1.0"


def test_image_too_large_for_partition(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", sizes={"root": 4 << 20})
    before = sim.disk.read_bytes()
    done = sim.updog("update", check=False)
    assert done.returncode == 1 and "does not fit" in done.stderr
    assert sim.disk.read_bytes() == before


def test_update_requires_a_running_set_record(sim: Sim, capsys) -> None:
    from updates import updog

    code = updog.main(["update", "--root", str(sim.root), "--disk", str(sim.tmp / "nope.img")])
    assert code == 1 and "cannot open" in capsys.readouterr().err


# ---------------------------------------------------------------- crash safety

STEPPER = """
import os, signal, sys
from pathlib import Path
from updates import apply
from updates.check import (CheckRequest, HostPaths, fetch_manifest, host_policy,
                           load_host, open_client)
from updates.partitions import OsDisk
from updates.selection import choose_update
from updates.timefmt import utcnow
root, disk, stop = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
paths = HostPaths(root / "etc/updog.toml", root / "var/lib/updog",
                  root / "usr/share/updog/root.json", None)
def hook(step):
    if step == stop:
        os.kill(os.getpid(), signal.SIGKILL)
with OsDisk(disk) as d:
    fields = d.identity(d.require_active())
host = load_host(paths, version=fields["VERSION_ID"], variant=fields["VARIANT_ID"],
                 arch=fields["ARCH"])
with open_client(host) as client:
    manifest = fetch_manifest(client)
    chosen = choose_update(manifest, host_policy(host, CheckRequest()), utcnow())
    hook("chosen")
    apply.cache_for_migrator(client, manifest, host.identity.version, chosen.version,
                             apply.MigrationCache.under(paths.state_dir))
    hook("cached")
    with OsDisk(disk) as d:
        apply.update_image(d, client, chosen, hook=hook)
        apply.update_flags(d)
        hook("flagged")
"""


def check_boots_running_set(sim: Sim, version: str = "1.0.0") -> None:
    """The disk boots the set that ran before (or the fully written new one)."""
    booted = sim.reboot()
    assert booted == "A", booted
    assert sim.running_version() == version
    assert_sgdisk_agrees(sim.disk)


@pytest.mark.parametrize("stop", ["chosen", "cached", "cleared", "wrote-root", "wrote-boot",
                                  "wrote-hash", "marked-valid"])
def test_sigkill_between_steps_boots_the_running_set(sim: Sim, stop: str) -> None:
    # a first, complete staging so the inactive set holds something "valid" to clear
    sim.updog("update-image")
    done = subprocess.run([sys.executable, "-c", STEPPER, str(sim.root), str(sim.disk), stop],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    if stop == "marked-valid":
        assert sim.flags()["B"] == Flags(0, 1, False)  # valid, but not chosen to boot
    check_boots_running_set(sim)
    sim.updog("update")  # a retry succeeds
    assert sim.reboot() == "B" and sim.running_version() == "1.1.0"


def test_sigkill_after_flags_boots_the_new_set(sim: Sim) -> None:
    done = subprocess.run([sys.executable, "-c", STEPPER, str(sim.root), str(sim.disk),
                           "flagged"], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == -signal.SIGKILL
    assert sim.reboot() == "B" and sim.running_version() == "1.1.0"


def test_sigkill_during_image_write(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    sim.disk.unlink()
    from updates.partitions import create_os_disk

    create_os_disk(sim.disk, 48 << 20, version="1.0.0", variant=VARIANT, arch="x86_64")
    sim.publish("1.1.0", sizes={"root": 12 << 20, "boot": 2 << 20, "hash": 2 << 20})
    rng = random.Random(11)
    killed_mid_way = 0
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-m", "updates.updog", "update", "--root", str(sim.root),
             "--disk", str(sim.disk)], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        assert child.stderr is not None
        child.stderr.readline()  # "Starting update to 1.1.0": the write is about to start
        time.sleep(rng.uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        child.communicate()
        booted = sim.reboot()
        assert_sgdisk_agrees(sim.disk)
        if booted == "B":  # killed after the flags flipped: the verified new set boots
            assert sim.running_version() == "1.1.0"
            return
        assert booted == "A" and sim.running_version() == "1.0.0"
        killed_mid_way += child.returncode != 0
    assert killed_mid_way
    sim.updog("update")
    assert sim.reboot() == "B" and sim.running_version() == "1.1.0"
    assert_sgdisk_agrees(sim.disk)
