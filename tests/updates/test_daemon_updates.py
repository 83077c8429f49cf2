"""The whole A/B update flow through the real daemon: `reconciler serve --disk PATH`.

`test_e2e.py` drives the same scenario through library calls; here every part is the product's
own wiring: `open_host(disk=...)` (boot identity, store migration at start), the updates
executor's boot gate after the first pass (`Worker.after_pass`), health checks declared in the
*settings* (user data), `GET /status` and `GET /updates/status`, and `apiclient update
check|apply|cancel` run as a child process against the daemon's socket; each update command
runs a real `updog` child against a TUF repository served on 127.0.0.1. A "reboot" is SIGTERM,
the simulated bootloader (`signpost boot`) on the disk image, and a new daemon process.

1.0.0 (set A) -> 1.1.0 (B; a migration renames a setting) -> 1.2.0 (A; the health check fails,
the boot is not marked, no update may overwrite the fallback) -> back on 1.1.0 (B), the store
migrated backward.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

from tests.daemon import Daemon, eventually, ok
from tests.updates import test_e2e as e2e
from tests.updates.conftest import ARCH, VARIANT
from tests.updates.simhost import Sim, make_sim
from tests.updates.test_e2e import RENAME, REPLACE_MOTD
from tests.updates.test_gpt import assert_sgdisk_agrees
from updates.gptprio import Flags
from updates.partitions import OsDisk

DEFAULT_MOTD = "Welcome to the reconciler!"


def user_data(sim: Sim, check: str = """sh -c 'test "$OS_VERSION_ID" != 1.2.0'""") -> Path:
    """test_e2e's user data, with a health check (`check`, a shell command) in the settings."""
    return e2e.user_data(sim, extra=f"""
[settings.updates.health-checks.workload]
command = {json.dumps(shlex.split(check))}
timeout = 10
""")


def start(sim: Sim, data: Path | None = None) -> Daemon:
    return Daemon(sim.state, ["--variant", VARIANT, "--disk", str(sim.disk),
                              "--root", str(sim.root), "--interval", "3600",
                              "--user-data", str(data or user_data(sim))])


def boot(sim: Sim, expected_set: str) -> tuple[Daemon, dict[str, Any]]:
    """The bootloader picks a set, the daemon starts; returns it and its boot gate's outcome."""
    assert sim.reboot() == expected_set
    daemon = start(sim)
    try:
        outcome = eventually(lambda: daemon.ok("GET", "/status")["updates"]["boot"], timeout=20)
    except BaseException:
        daemon.stop()
        raise
    return daemon, outcome


def reboot(sim: Sim, daemon: Daemon, expected_set: str) -> tuple[Daemon, dict[str, Any]]:
    assert daemon.stop() == 0, daemon.logs()
    assert_sgdisk_agrees(sim.disk)
    return boot(sim, expected_set)


def image(version: str) -> dict[str, str]:
    return {"arch": ARCH, "version": version, "variant": VARIANT}


def check(daemon: Daemon, expected: str) -> dict[str, Any]:
    body = json.loads(ok(daemon.apiclient("update", "check")))
    assert body["update_state"] == "Available", body
    assert body["chosen_update"] == image(expected)
    assert expected in body["available_updates"]
    return body


def apply(daemon: Daemon, running: str, expected: str) -> dict[str, Any]:
    assert "will take effect on next reboot" in ok(daemon.apiclient("update", "apply"))
    body = daemon.ok("GET", "/updates/status")
    assert body["update_state"] == "Ready", body
    assert body["chosen_update"] == image(expected)
    assert body["staging_partition"] == {"image": image(expected), "next_to_boot": True}
    assert body["active_partition"] == {"image": image(running), "next_to_boot": False}
    recent = body["most_recent_command"]
    assert (recent["cmd_type"], recent["cmd_status"], recent["exit_status"]) == (
        "activate", "Success", 0)
    return body


def settings(daemon: Daemon) -> dict[str, Any]:
    return daemon.ok("GET", "/settings")


def partition_digest(sim: Sim, set_name: str) -> str:
    """The bytes of a set's three partitions (boot, root, hash)."""
    digest = hashlib.sha256()
    with OsDisk(sim.disk, writable=False) as disk, open(sim.disk, "rb") as raw:
        for kind in ("boot", "root", "hash"):
            entry = disk.entry(set_name, kind)
            raw.seek(entry.offset)
            digest.update(raw.read(entry.size))
    return digest.hexdigest()


def test_daemon_update_migrate_health_gate_and_fallback(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", migrations={"migrate_v1.1.0_rename-admin.json": RENAME})

    # -- boot 1: 1.0.0 in set A, marked successful by the daemon's boot gate
    daemon, outcome = boot(sim, "A")
    try:
        assert daemon.ok("GET", "/os")["version_id"] == "1.0.0"
        assert outcome["marked_successful"], outcome
        assert outcome["set"] == "A"
        assert outcome["health_checks"] == [{"name": "workload", "ok": True, "detail": ""}]
        assert sim.flags()["A"].successful
        assert eventually(lambda: "boot marked successful (set A)" in daemon.logs())
        assert settings(daemon)["host-containers"]["tools"]["source"] == \
            "registry.example.com/admin:v1"
        assert f'metadata_base_url = "{sim.server.base_url}/metadata/"' in \
            (sim.root / "etc/updog.toml").read_text()  # rendered from the settings
        assert daemon.request("GET", "/updates/status")[0] == 404  # never initialized

        check(daemon, "1.1.0")
        apply(daemon, "1.0.0", "1.1.0")
        assert sim.flags()["next"] == "B"
        # cancel once: Ready -> Staged, the next boot is A again
        assert "canceled" in ok(daemon.apiclient("update", "cancel"))
        body = daemon.ok("GET", "/updates/status")
        assert body["update_state"] == "Staged"
        assert body["staging_partition"] == {"image": image("1.1.0"), "next_to_boot": False}
        assert body["active_partition"]["next_to_boot"] is True
        assert body["most_recent_command"]["cmd_type"] == "deactivate"
        assert sim.flags()["next"] == "A"
        apply(daemon, "1.0.0", "1.1.0")  # prepare again from Staged, then activate
        assert sim.flags()["next"] == "B"
        # a daemon restart (no reboot) still reports the activated update, read off the disk
        assert daemon.stop() == 0, daemon.logs()
        daemon = start(sim)
        body = daemon.ok("GET", "/updates/status")
        assert body["update_state"] == "Ready", body
        assert body["staging_partition"] == {"image": image("1.1.0"), "next_to_boot": True}
    finally:
        daemon.stop()

    # -- boot 2: 1.1.0 in set B, the store migrated forward (tools -> debug), marked
    daemon, outcome = boot(sim, "B")
    try:
        assert daemon.ok("GET", "/os")["version_id"] == "1.1.0"
        assert outcome["marked_successful"], outcome
        assert sim.flags()["B"] == Flags(2, 0, True)
        containers = settings(daemon)["host-containers"]
        assert "tools" not in containers
        assert containers["debug"] == {"enabled": False, "superpowered": False,
                                         "source": "registry.example.com/admin:v1"}
        history = [g["source"] for g in daemon.ok("GET", "/generations")]
        assert "migration:1.0.0->1.1.0" in history

        sim.publish("1.2.0", migrations={"migrate_v1.2.0_new-motd.json": REPLACE_MOTD})
        assert "will take effect" in ok(daemon.apiclient("update", "apply", "--check"))
        assert daemon.ok("GET", "/updates/status")["staging_partition"] == {
            "image": image("1.2.0"), "next_to_boot": True}
        daemon, outcome = reboot(sim, daemon, "A")

        # -- boot 3: 1.2.0 in set A; the health check fails: not marked
        assert daemon.ok("GET", "/os")["version_id"] == "1.2.0"
        assert settings(daemon)["motd"] == "Welcome to 1.2!"
        assert not outcome["marked_successful"], outcome
        assert "health check(s) failed: workload" in outcome["reason"]
        assert outcome["health_checks"][0]["ok"] is False
        status = daemon.ok("GET", "/status")
        assert status["last_receipt"]["ok"] is True  # the pass itself was fine
        assert status["state"] == "Degraded"  # ...but the boot failed its health gate
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert any("boot not marked successful" in r and "workload" in r
                   for r in degraded["reasons"]), degraded
        assert any(e["type"] == "boot-health" and e["data"]["marked_successful"] is False
                   and e["data"]["failed_checks"] == ["workload"]
                   for e in daemon.ok("GET", "/events"))
        assert eventually(lambda: "boot NOT marked successful" in daemon.logs())
        assert "warn" in next(line for line in daemon.logs().splitlines()
                              if "boot NOT marked successful" in line).lower()
        rollback = eventually(lambda: next(
            (c for c in daemon.ok("GET", "/status")["conditions"]
             if c["type"] == "RollbackAvailable" and c["status"] is not None), None))
        assert rollback["status"] is True and "set B holds 1.1.0" in rollback["reason"]
        assert sim.flags()["A"] == Flags(2, 0, False)
        fallback = sim.flags()["B"]
        assert fallback.successful and fallback.priority > 0
        before = partition_digest(sim, "B")

        # an update now would overwrite the fallback of this unconfirmed boot: refused
        sim.publish("1.3.0")
        check(daemon, "1.3.0")
        refused = daemon.apiclient("update", "apply")
        assert refused.returncode == 1, refused.stdout
        assert "update prepare failed" in refused.stderr
        assert "refusing to overwrite it" in refused.stderr
        body = daemon.ok("GET", "/updates/status")
        assert body["update_state"] == "Available"
        assert body["staging_partition"] is None
        assert body["most_recent_command"]["cmd_type"] == "prepare"
        assert body["most_recent_command"]["cmd_status"] == "Failed"
        assert sim.flags()["B"] == fallback
        assert sim.flags()["next"] == "B"
        assert partition_digest(sim, "B") == before
        daemon, outcome = reboot(sim, daemon, "B")

        # -- boot 4: the bootloader fell back to 1.1.0, the store migrated backward, marked
        assert daemon.ok("GET", "/os")["version_id"] == "1.1.0"
        assert outcome["marked_successful"], outcome
        current = settings(daemon)
        assert current["motd"] == DEFAULT_MOTD
        assert current["host-containers"]["debug"]["enabled"] is False
        assert "tools" not in current["host-containers"]
        history = [g["source"] for g in daemon.ok("GET", "/generations")]
        assert "migration:1.2.0->1.1.0" in history
        assert sim.flags()["B"].successful
    finally:
        daemon.stop()
    assert sim.reboot() == "B"  # and it stays there
    assert sim.running_version() == "1.1.0"


def test_the_api_answers_while_health_checks_run(tmp_path: Path, serve) -> None:
    """A slow health check does not hold up the daemon: it runs off the event loop."""
    sim = make_sim(tmp_path, serve)
    release = tmp_path / "release"
    data = user_data(sim, f"sh -c 'while [ ! -e {release} ]; do sleep 0.05; done'")
    assert sim.reboot() == "A"
    daemon = start(sim, data)
    try:
        eventually(lambda: daemon.ok("GET", "/status")["last_receipt"], timeout=20)
        # the first pass is done, the check is still waiting: the API answers all the same
        assert daemon.ok("GET", "/status")["updates"]["boot"] is None
        assert daemon.ok("GET", "/os")["version_id"] == "1.0.0"
        release.touch()
        outcome = eventually(lambda: daemon.ok("GET", "/status")["updates"]["boot"], timeout=20)
        assert outcome["marked_successful"], outcome
        assert sim.flags()["A"].successful
    finally:
        assert daemon.stop() == 0, daemon.logs()
