"""End to end: 1.0.0 -> 1.1.0 (a migration renames a setting) -> 1.2.0 whose health check fails
-> automatic fallback to 1.1.0 with the store migrated backward.

Each "boot" is what the daemon does (see the wiring in the report): the simulated bootloader
picks a set, `prepare_boot` migrates the store to the booted version before the store is
opened, the boot pipeline and the first reconcile pass run, and the boot gate marks the set
successful only when the pass and the health checks pass. The update itself goes through the
API's dispatcher (`UpdateManager`: refresh -> prepare -> activate), which runs real `updog`
child processes against a TUF repository served on 127.0.0.1; `updog.toml` is rendered from the
settings by the reconciler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.boot import boot
from reconciler.host import open_host
from reconciler.migrator import prepare_boot
from reconciler.updates_executor import updog_command
from tests.updates.conftest import VARIANT
from tests.updates.simhost import Sim, make_sim
from tests.updates.test_gpt import assert_sgdisk_agrees
from updates import status as sm
from updates.gptprio import Flags
from updates.health import BootGate
from updates.manager import UpdateManager

RENAME = {"migration": 1, "name": "rename-admin", "version": "1.1.0", "steps": [
    {"op": "rename", "from": "settings.host-containers.tools",
     "to": "settings.host-containers.debug"}]}
REPLACE_MOTD = {"migration": 1, "name": "new-motd", "version": "1.2.0", "steps": [
    {"op": "replace", "key": "settings.motd", "old": "Welcome to the reconciler!",
     "new": "Welcome to 1.2!"}]}
HEALTH = {"health-checks": {"workload": {
    "command": ["sh", "-c", 'test "$OS_VERSION_ID" != 1.2.0'], "timeout": 10}}}


def user_data(sim: Sim, extra: str = "") -> Path:
    """Update repository, no waves, a setting the 1.1.0 migration renames; `extra` TOML."""
    path = sim.tmp / "user-data.toml"
    base = sim.server.base_url
    path.write_text(f"""
[settings.updates]
metadata-base-url = "{base}/metadata/"
targets-base-url = "{base}/targets/"
ignore-waves = true
[settings.host-containers.tools]
enabled = false
superpowered = false
source = "registry.example.com/admin:v1"
""" + extra)
    return path


def boot_host(sim: Sim) -> dict[str, Any]:
    """One boot of the host: bootloader, migrator, boot pipeline, first pass, boot gate."""
    booted = sim.reboot()
    info = prepare_boot(sim.state, sim.root, str(sim.disk))
    with open_host(sim.state, sim.root, VARIANT) as host:
        boot(host.store, host.schema, [user_data(sim)])
        receipt = host.reconciler.run_pass(reason="boot")
        gate = BootGate(str(sim.disk), {"OS_VERSION_ID": info.version})
        outcome = gate.after_first_pass(receipt["ok"], {**host.store.live_document()["updates"],
                                                        **HEALTH})
        live = host.store.live()
        history = [g.source for g in host.store.generations()]
    assert_sgdisk_agrees(sim.disk)
    return {"set": booted, "version": info.version, "migration": info.migration,
            "outcome": outcome, "live": live, "history": history, "pass_ok": receipt["ok"]}


def update_via_api(sim: Sim, expected: str) -> dict[str, Any]:
    manager = UpdateManager(updog_command(sim.root), disk=str(sim.disk))
    status = manager.run("refresh")
    assert status.update_state == sm.AVAILABLE, status
    assert status.chosen_update and status.chosen_update.version == expected
    status = manager.run("prepare")
    assert status.update_state == sm.STAGED, status.most_recent_command
    status = manager.run("activate")
    assert status.update_state == sm.READY, status.most_recent_command
    body = status.to_json()
    assert body["staging_partition"] == {"image": {"arch": "x86_64", "version": expected,
                                                   "variant": VARIANT}, "next_to_boot": True}
    assert body["active_partition"]["next_to_boot"] is False
    assert body["most_recent_command"]["cmd_type"] == "activate"
    return body


def test_update_migrate_health_gate_and_fallback(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", migrations={"migrate_v1.1.0_rename-admin.json": RENAME})

    first = boot_host(sim)
    assert (first["set"], first["version"], first["pass_ok"]) == ("A", "1.0.0", True)
    assert first["outcome"]["marked_successful"]
    assert "settings.host-containers.tools.source" in first["live"]

    update_via_api(sim, "1.1.0")
    second = boot_host(sim)
    assert (second["set"], second["version"]) == ("B", "1.1.0")
    assert second["migration"].direction == "forward"
    assert second["migration"].migrations == ("migrate_v1.1.0_rename-admin.json",)
    assert "settings.host-containers.tools.source" not in second["live"]
    assert second["live"]["settings.host-containers.debug.source"] == \
        "registry.example.com/admin:v1"
    assert "migration:1.0.0->1.1.0" in second["history"]
    assert second["outcome"]["marked_successful"], second["outcome"]
    assert sim.flags()["B"] == Flags(2, 0, True)

    sim.publish("1.2.0", migrations={"migrate_v1.2.0_new-motd.json": REPLACE_MOTD})
    update_via_api(sim, "1.2.0")
    third = boot_host(sim)
    assert (third["set"], third["version"]) == ("A", "1.2.0")
    assert third["live"]["settings.motd"] == "Welcome to 1.2!"
    assert not third["outcome"]["marked_successful"]
    assert "health check(s) failed: workload" in third["outcome"]["reason"]
    assert sim.flags()["A"] == Flags(2, 0, False)

    fourth = boot_host(sim)  # not marked: the bootloader falls back
    assert (fourth["set"], fourth["version"]) == ("B", "1.1.0")
    assert fourth["migration"].direction == "backward"
    assert fourth["live"]["settings.motd"] == "Welcome to the reconciler!"
    assert fourth["live"]["settings.host-containers.debug.enabled"] is False
    assert fourth["outcome"]["marked_successful"]
    assert sim.reboot() == "B"  # and it stays there
