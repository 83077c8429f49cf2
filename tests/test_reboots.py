"""Reboot coordination: a host takes a FleetLock slot before rebooting and gives it back only
once its new boot is confirmed (real etcd, real fleetlock server, real daemons)."""

from __future__ import annotations

import asyncio
import os

import pytest

from hostcore.commands import SubprocessRunner
from reconciler.events import Events
from reconciler.fleet import protocol
from reconciler.fleet.client import FleetLockClient
from reconciler.fleet.reboots import SLOT_META, RebootSlots, reboot_host
from reconciler.store import Store
from tests.daemon import Daemon, eventually
from tests.etcd import Etcd, FleetLockServer


@pytest.fixture
def lock_server(tmp_path):
    etcd = Etcd(tmp_path / "etcd")
    server = FleetLockServer(etcd, tmp_path / "fleetlock.log", "--slots", "1")
    yield server
    server.stop()
    etcd.stop()


def coordinated(tmp_path, base: str) -> Daemon:
    user_data = tmp_path / "user-data.toml"
    user_data.write_text(f'[settings.coordination.reboot-lock]\nurl = "{base}"\n')
    return Daemon(tmp_path / "state", ["--user-data", str(user_data)])


def test_reboot_waits_for_a_slot_and_gives_it_back_after_the_next_boot(tmp_path, lock_server):
    other = FleetLockClient(lock_server.base, protocol.ClientParams("other-host"))
    other.pre_reboot()  # the group's only slot is taken
    daemon = coordinated(tmp_path, lock_server.base)
    try:
        node = daemon.ok("GET", "/settings?keys=settings.coordination.node-id")
        node_id = node["coordination"]["node-id"]
        refused = daemon.apiclient("reboot")
        assert refused.returncode == 1
        assert "waiting for a reboot slot in group default" in refused.stderr
        assert "other-host" in refused.stderr
        status = daemon.ok("GET", "/status")["coordination"]
        assert status["state"] == "waiting" and "other-host" in status["reason"]

        other.steady_state()
        assert daemon.apiclient("reboot").returncode == 0
        assert lock_server.holders() == [node_id]
        assert daemon.ok("GET", "/status")["coordination"]["state"] == "holding"
    finally:
        daemon.stop()
    assert lock_server.holders() == [node_id]  # held across the "reboot"

    daemon = Daemon(tmp_path / "state")  # the host comes back: once confirmed, slot released
    try:
        eventually(lambda: lock_server.holders() == [], timeout=30)
        eventually(lambda: daemon.ok("GET", "/status")["coordination"]["state"] == "idle")
    finally:
        daemon.stop()
    with Store(tmp_path / "state/store.db") as store:
        assert store.get_meta(SLOT_META) is None


def test_an_unconfirmed_boot_keeps_its_slot(tmp_path, lock_server):
    with Store(tmp_path / "store.db") as store:
        store.set_meta(SLOT_META, {"url": lock_server.base, "group": "default", "id": "h1",
                                   "taken_by": "an earlier boot"})
        FleetLockClient(lock_server.base, protocol.ClientParams("h1")).pre_reboot()
        confirmed = {"value": False}
        slots = RebootSlots(store, lambda: confirmed["value"])
        slots.RETRY = 0.2

        async def scenario() -> None:
            task = asyncio.create_task(slots.run())
            await asyncio.sleep(1.0)
            assert lock_server.holders() == ["h1"]  # the health gate has not passed
            assert slots.status()["state"] == "holding"
            confirmed["value"] = True
            slots.poke()
            for _ in range(100):
                if not lock_server.holders():
                    break
                await asyncio.sleep(0.1)
            slots.stop()
            await task

        asyncio.run(scenario())
        assert lock_server.holders() == []
        assert store.get_meta(SLOT_META) is None


def test_an_unreachable_lock_server_defers_the_reboot(tmp_path):
    daemon = coordinated(tmp_path, "http://127.0.0.1:9/")
    try:
        refused = daemon.apiclient("reboot")
        assert refused.returncode == 1 and "waiting for a reboot slot" in refused.stderr
    finally:
        daemon.stop()


@pytest.mark.parametrize(("body", "result"), [
    ("kill -TERM $$", "requested"),  # stopped with our service by the reboot it queued
    ("echo 'Failed to talk to init daemon.' >&2; exit 1", "failed"),
    ("kill -KILL $$", "failed"),
])
def test_a_shutdown_stopped_by_its_own_reboot_is_a_reboot_requested(tmp_path, monkeypatch,
                                                                   body, result):
    """systemd stops our cgroup, ``shutdown`` with it, as soon as the reboot job is queued: a
    ``shutdown`` ended by SIGTERM asked for a reboot that is under way; any other end fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "shutdown").write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / "shutdown").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    events = Events()
    outcome = reboot_host(None, {}, events, SubprocessRunner(), sandbox=False)
    assert outcome.result == result, outcome
    said = [e["data"]["message"] for e in events.since(0) if e["type"] == "reboot"]
    assert said == (["reboot requested"] if result == "requested" else []), said
    if result == "failed":
        assert outcome.detail.split(":")[0] in ("1", "-9"), outcome
