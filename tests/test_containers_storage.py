"""F2 (issue 19): a host container's persistent storage cannot fill the state disk.

With ``--host-container-quota`` each container's storage is a loop-mounted file system of its
own; without it, the store keeps a reserve (``--store-reserve``): writes that would eat it get a
clear 507, and disabling the container that fills the disk (PATCH + commit) always works. Each
case runs on a small tmpfs made by the test, with a real container writing until ENOSPC."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from reconciler.containers.planner import DesiredContainer
from reconciler.containers.storage import ContainerStorage
from reconciler.reserve import MARGIN, only_disables_host_containers
from tests.daemon import Daemon, eventually
from tests.faultutil import free_bytes, small_fs
from tests.images import build_image, podman, require_podman, reset_storage

# Fills its persistent directory until the file system says no, then stays up.
FILLER = ('["/bin/sh", "-c", "trap \'exit 0\' TERM; dd if=/dev/zero '
          'of=/.bottlerocket/host-containers/filler/fill bs=64k; '
          'touch /.bottlerocket/host-containers/filler/full; sleep 2147483647 & wait"]')


@pytest.fixture(scope="module")
def filler(tmp_path_factory) -> str:
    require_podman()
    return build_image(tmp_path_factory.mktemp("filler"), "filler", "v1", command=FILLER)


def _unmount_under(directory: Path) -> None:
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        target = line.split()[1]
        if target.startswith(f"{directory}/"):
            subprocess.run(["umount", "-l", target], check=False)


def test_a_quota_is_a_file_system_of_its_own_allocated_at_once(tmp_path: Path) -> None:
    with small_fs(tmp_path / "state", "64m") as state:
        storage = ContainerStorage(state / "host-containers", quota=8 << 20)
        old = storage.base / "filler"
        old.mkdir(parents=True)
        (old / "kept").write_text("from before the quota")
        want = DesiredContainer("filler", "oci-archive:/x", user_data=base64.b64encode(
            b"hello").decode())
        try:
            path = storage.prepare(want)
            assert os.path.ismount(path)
            assert (path / "kept").read_text() == "from before the quota"
            assert (path / "user-data").read_bytes() == b"hello"
            before = free_bytes(state)
            with pytest.raises(OSError) as full, open(path / "fill", "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
                    os.fsync(f.fileno())
            assert full.value.errno == 28  # ENOSPC, inside its own file system
            assert abs(free_bytes(state) - before) < (1 << 20)  # the state disk did not move
            assert storage.prepare(want) == path  # mounted once, not twice
        finally:
            _unmount_under(state)


def test_only_disabling_patches_pass_the_reserve() -> None:
    assert only_disables_host_containers([{"host-containers": {"a": {"enabled": False}}}])
    assert not only_disables_host_containers([{"host-containers": {"a": {"enabled": True}}}])
    assert not only_disables_host_containers([{"host-containers": {"a": {"enabled": False}},
                                               "motd": "x"}])
    assert not only_disables_host_containers([])


def _status(d: Daemon) -> dict:
    return d.ok("GET", "/status")


def _reasons(view: dict) -> list[str]:
    return next(c["reasons"] for c in view["conditions"] if c["type"] == "Degraded")


def _filler_daemon(state: Path, source: str, *args: str) -> Daemon:
    d = Daemon(state, ["--variant", "aws-dev", *args],
               env={"CONTAINERS_CONF": os.environ["CONTAINERS_CONF"]})
    d.ok("PATCH", "/settings", {"host-containers": {"filler": {"enabled": True,
                                                               "source": source}}})
    receipt = d.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]
    assert receipt["ok"], json.dumps(receipt)[:2000]
    return d


def test_a_container_filling_the_state_disk_leaves_the_store_its_reserve(tmp_path, filler):
    with small_fs(tmp_path / "small", "128m") as small:
        state = small / "host"
        d = _filler_daemon(state, filler, "--store-reserve", "16M")
        try:
            storage = state / "host-containers/filler"
            eventually(lambda: (storage / "full").exists(), timeout=120)
            assert free_bytes(small) < MARGIN  # the container took all but the reserve
            assert (state / "store-reserve").stat().st_blocks * 512 >= 16 << 20
            code, text = d.request("PATCH", "/settings", {"motd": "refused"})
            assert code == 507 and "reserve" in text and "enabled=false" in text, (code, text)
            view = _status(d)  # status says so while it is so
            assert view["state"] == "Degraded"
            assert any("state disk full" in r for r in _reasons(view)), _reasons(view)
            # disabling the container always works
            code, _ = d.request("PATCH", "/settings",
                                {"host-containers": {"filler": {"enabled": False}}})
            assert code == 204
            receipt = d.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]
            assert receipt["ok"], json.dumps(receipt)[:2000]
            assert "filler" not in podman(state / "containers", "ps", "-a", "--format",
                                          "{{.Names}}")
            # what the reserve gave back is not for ordinary writes while the disk is full
            assert d.request("PATCH", "/settings", {"motd": "still refused"})[0] == 507
            (storage / "fill").unlink()  # the operator frees the space: back to normal
            d.ok("PATCH", "/settings", {"motd": "space again"})
            assert d.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]["ok"]
            eventually(lambda: (state / "store-reserve").stat().st_blocks * 512 >= 16 << 20)
            eventually(lambda: not any("state disk full" in r for r in _reasons(_status(d))))
        finally:
            d.stop()
            reset_storage(state / "containers")


def test_with_a_quota_a_container_fills_only_its_own_file_system(tmp_path, filler):
    with small_fs(tmp_path / "small", "128m") as small:
        state = small / "host"
        d = _filler_daemon(state, filler, "--host-container-quota", "8M")
        try:
            storage = state / "host-containers/filler"
            assert os.path.ismount(storage)
            eventually(lambda: (storage / "full").exists(), timeout=120)
            assert free_bytes(small) > 32 << 20  # the state disk kept its space
            d.ok("PATCH", "/settings", {"motd": "still writable"})
            assert d.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]["ok"]
        finally:
            d.stop()
            reset_storage(state / "containers")
            _unmount_under(small)
