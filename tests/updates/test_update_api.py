"""The update state machine (pure), the dispatcher and the HTTP endpoints (409/404/423)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from reconciler.api import updates_routes
from reconciler.updates_executor import UpdatesExecutor
from updates import osimage
from updates import status as sm
from updates.gptprio import Flags, Sets
from updates.health import BootGate, CheckResult, decide, parse_checks, run_checks
from updates.manager import Uninitialized, UpdateManager
from updates.partitions import OsDisk, create_os_disk
from updates.semver import Version

T = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
OK = sm.Command("refresh", "Success", T, 0, "")
IMG = sm.Image("x86_64", "1.0.0", "aws-dev")
U = [{"variant": "aws-dev", "arch": "x86_64", "version": v, "max_version": "1.2.0"}
     for v in ("1.1.0", "1.2.0", "0.9.0")]


def test_transitions() -> None:
    s = sm.initial(IMG, True)
    with pytest.raises(sm.NotAllowed):
        sm.check_command(s, "prepare")
    s = sm.after_refresh(s, OK, U, Version.parse("1.0.0"), None)
    assert s.update_state == sm.AVAILABLE and s.chosen_update.version == "1.2.0"
    assert s.available_updates == ("1.2.0", "1.1.0", "0.9.0")
    sm.check_command(s, "prepare")
    with pytest.raises(sm.NotAllowed):
        sm.check_command(s, "activate")
    s = sm.after_prepare(s, sm.Command("prepare", "Success", T, 0, ""))
    assert s.update_state == sm.STAGED and s.staging_partition.next_to_boot is False
    s = sm.after_activate(s, sm.Command("activate", "Success", T, 0, ""))
    assert s.update_state == sm.READY
    assert (s.staging_partition.next_to_boot, s.active_partition.next_to_boot) == (True, False)
    s2 = sm.after_refresh(s, OK, [], Version.parse("1.0.0"), None)
    assert s2.update_state == sm.READY and s2.chosen_update is None  # state kept
    s = sm.after_deactivate(s, sm.Command("deactivate", "Success", T, 0, ""))
    assert s.update_state == sm.STAGED and s.active_partition.next_to_boot is True


def test_failures_are_recorded() -> None:
    s = sm.after_refresh(sm.initial(IMG, True), OK, U, Version.parse("1.0.0"), None)
    s = sm.after_prepare(s, sm.Command("prepare", "Failed", T, 1, "boom"))
    assert s.update_state == sm.AVAILABLE and s.staging_partition is None
    assert s.to_json()["most_recent_command"] == {
        "cmd_type": "prepare", "cmd_status": "Failed", "timestamp": "2024-01-02T03:04:05Z",
        "exit_status": 1, "stderr": "boom"}
    failed = sm.after_refresh(s, sm.Command("refresh", "Failed", T, 1, "x"), U,
                              Version.parse("1.0.0"), None)
    assert failed.update_state == sm.IDLE and failed.chosen_update is None


def test_choose_with_version_lock_and_regret() -> None:
    v = Version.parse
    assert sm.choose(U, v("1.2.0"), None) is None
    assert sm.choose(U, v("1.0.0"), v("0.9.0"))["version"] == "0.9.0"  # downgrade pin
    assert sm.choose(U, v("1.1.0"), v("1.1.0")) is None
    assert sm.choose(U, v("1.3.0"), None)["version"] == "1.2.0"  # above the ceiling


def test_status_json_field_order() -> None:
    assert list(sm.initial(IMG, True).to_json()) == [
        "update_state", "available_updates", "chosen_update", "active_partition",
        "staging_partition", "most_recent_command",
        "no_update_reason", "progress"]  # ours, after upstream's fields


def test_maintenance_window_and_auto_command() -> None:
    at = lambda h, m: datetime(2024, 1, 1, h, m, tzinfo=UTC)  # noqa: E731
    assert sm.in_window(at(3, 0), "02:00", "04:00")
    assert not sm.in_window(at(4, 0), "02:00", "04:00")
    assert sm.in_window(at(23, 30), "23:00", "01:00") and sm.in_window(at(0, 30), "23:00", "01:00")
    assert not sm.in_window(at(12, 0), "23:00", "01:00")
    assert sm.in_window(at(12, 0), None, None)
    assert [sm.auto_command(s, True) for s in (sm.IDLE, sm.AVAILABLE, sm.STAGED, sm.READY)] == [
        "refresh", "prepare", "activate", None]
    assert sm.auto_command(sm.IDLE, False) is None
    # before this boot is confirmed, nothing is prepared over its fallback
    assert sm.auto_command(sm.AVAILABLE, True, boot_confirmed=False) is None
    assert sm.auto_command(sm.IDLE, True, boot_confirmed=False) == "refresh"


def test_health_decisions(tmp_path: Path) -> None:
    checks = parse_checks({"health-checks": {"a": {"command": ["true"]},
                                             "b": {"command": ["sh", "-c", "exit 3"]}}})
    results = run_checks(checks, {})
    assert [r.ok for r in results] == [True, False] and "exited 3" in results[1].detail
    assert decide(True, results)[0] is False
    assert decide(False, [])[0] is False
    assert decide(True, [CheckResult("a", True)]) == (True, "first pass ok, 1 health check(s) "
                                                            "passed")


# ---------------------------------------------------------------- dispatcher and endpoints

FAKE_UPDOG = """
import json, sys, time, pathlib
gate = pathlib.Path(sys.argv[1])
while not gate.exists():
    time.sleep(0.01)
verb = sys.argv[2]
if verb == "check-update":
    print(json.dumps([{"variant": "aws-dev", "arch": "x86_64", "version": "1.1.0",
                       "max_version": "1.1.0"}]))
elif verb == "update-image" and (gate.parent / "fail").exists():
    print("disk on fire", file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture
def manager(tmp_path: Path) -> UpdateManager:
    disk = tmp_path / "disk.img"
    create_os_disk(disk, 4 << 20)
    script = tmp_path / "fake_updog.py"
    script.write_text(FAKE_UPDOG)
    return UpdateManager([sys.executable, str(script), str(tmp_path / "gate")], disk=str(disk))


def serve(manager: UpdateManager, scenario) -> None:  # noqa: ANN001 - async callable
    async def main() -> None:
        app = web.Application()
        updates_routes.register(app, manager=manager)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(main())


async def wait_done(client: TestClient) -> dict:
    async with asyncio.timeout(60):  # fail, never hang
        while True:
            response = await client.get("/updates/status")
            if response.status != 423:
                assert response.status == 200
                return await response.json()
            await asyncio.sleep(0.02)


def test_endpoints_codes_and_flow(manager: UpdateManager, tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    async def scenario(client: TestClient) -> None:
        response = await client.get("/updates/status")
        assert response.status == 404 and "uninitialized" in await response.text()
        assert (await client.post("/actions/prepare-update")).status == 409  # Idle
        assert (await client.post("/actions/refresh-updates")).status == 204
        assert (await client.get("/updates/status")).status == 423  # updog still running
        assert (await client.post("/actions/refresh-updates")).status == 423
        gate.touch()
        status = await wait_done(client)
        assert status["update_state"] == "Available"
        assert status["chosen_update"] == {"arch": "x86_64", "version": "1.1.0",
                                           "variant": "aws-dev"}
        assert status["active_partition"]["image"]["version"] == "1.0.0"
        assert (await client.post("/actions/activate-update")).status == 409
        (tmp_path / "fail").touch()
        assert (await client.post("/actions/prepare-update")).status == 204
        status = await wait_done(client)
        assert status["update_state"] == "Available"
        assert status["most_recent_command"]["cmd_status"] == "Failed"
        assert "disk on fire" in status["most_recent_command"]["stderr"]
        (tmp_path / "fail").unlink()
        assert (await client.post("/actions/prepare-update")).status == 204
        status = await wait_done(client)
        assert status["update_state"] == "Staged"
        assert (await client.post("/actions/deactivate-update")).status == 409
        assert (await client.post("/actions/activate-update")).status == 204
        assert (await wait_done(client))["update_state"] == "Ready"
        assert (await client.post("/actions/deactivate-update")).status == 204
        assert (await wait_done(client))["update_state"] == "Staged"

    serve(manager, scenario)


def test_missing_staged_image_is_404() -> None:
    s = sm.UpdateStatus(update_state=sm.STAGED)
    with pytest.raises(sm.NoStagedImage):
        sm.check_command(s, "activate")
    with pytest.raises(sm.NoChosenUpdate):
        sm.check_command(sm.UpdateStatus(update_state=sm.AVAILABLE), "prepare")


def test_not_configured_without_a_disk() -> None:
    async def scenario(client: TestClient) -> None:
        response = await client.post("/actions/refresh-updates")
        assert response.status == 404 and "--disk" in await response.text()

    async def main() -> None:
        app = web.Application()
        updates_routes.register(app)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(main())


def test_automatic_policy_drives_the_machine(manager: UpdateManager, tmp_path: Path) -> None:
    (tmp_path / "gate").touch()
    executor = UpdatesExecutor(store=None, manager=manager,  # type: ignore[arg-type]
                               clock=lambda: datetime(2024, 1, 1, 3, 0, tzinfo=UTC))
    off = {"updates": {}}
    assert executor.reconcile(off, 1, set()) == [] and executor.plan(off) == []
    closed = {"updates": {"automatic": True,
                          "maintenance-window": {"start": "05:00", "end": "06:00"}}}
    assert executor.reconcile(closed, 1, set()) == []
    policy = {"updates": {"automatic": True,
                          "maintenance-window": {"start": "02:00", "end": "04:00"}}}
    for expected, state in (("refresh", "Available"), ("prepare", "Staged"),
                            ("activate", "Ready")):
        steps = executor.reconcile(policy, 1, set())
        assert [s["name"] for s in steps] == [expected]
        manager.wait()
        assert manager.status().update_state == state
    assert executor.reconcile(policy, 1, set()) == []  # Ready: rebooting is not its call
    assert executor.status()["update_state"] == "Ready"
    with pytest.raises(Uninitialized):
        UpdateManager(["true"], disk=None).status()
    json.dumps(manager.status().to_json())


def test_automatic_policy_retries_a_failed_step_an_hour_later(manager: UpdateManager,
                                                              tmp_path: Path) -> None:
    (tmp_path / "gate").touch()
    (tmp_path / "fail").touch()  # update-image fails ("disk on fire")
    now = [datetime(2024, 1, 1, 3, 0, tzinfo=UTC)]
    elapsed = [0.0]  # monotonic seconds: the delay follows them, not the wall clock
    executor = UpdatesExecutor(store=None, manager=manager,  # type: ignore[arg-type]
                               clock=lambda: now[0], monotonic=lambda: elapsed[0])
    policy = {"updates": {"automatic": True}}
    for expected in ("refresh", "prepare"):
        assert [s["name"] for s in executor.reconcile(policy, 1, set())] == [expected]
        manager.wait()
    assert manager.status().most_recent_command.cmd_status == "Failed"
    assert executor.reconcile(policy, 1, set()) == []  # not at every pass
    elapsed[0] += 59 * 60
    now[0] -= timedelta(days=1)  # NTP corrects the wall clock back a day: no 25 h wait
    assert executor.reconcile(policy, 1, set()) == []
    (tmp_path / "fail").unlink()
    elapsed[0] += 2 * 60
    assert [s["name"] for s in executor.reconcile(policy, 1, set())] == ["prepare"]
    manager.wait()
    assert manager.status().update_state == "Staged"


def test_automatic_policy_prepares_only_after_the_boot_gate_confirmed_this_boot(
        manager: UpdateManager, tmp_path: Path) -> None:
    (tmp_path / "gate").touch()
    gate = BootGate(disk=None)
    executor = UpdatesExecutor(store=None, manager=manager, gate=gate)  # type: ignore[arg-type]
    policy = {"updates": {"automatic": True}}
    assert [s["name"] for s in executor.reconcile(policy, 1, set())] == ["refresh"]
    manager.wait()
    assert executor.reconcile(policy, 1, set()) == []  # gate not decided yet
    gate.outcome = {"marked_successful": False, "reason": "health check(s) failed"}
    assert executor.reconcile(policy, 1, set()) == []  # the fallback must stay whole
    gate.outcome = {"marked_successful": True}
    assert [s["name"] for s in executor.reconcile(policy, 1, set())] == ["prepare"]
    manager.wait()


def test_status_read_off_the_disk_after_a_restart() -> None:
    new = sm.Image("x86_64", "1.1.0", "aws-dev")
    idle = sm.from_disk(Sets(Flags(1, 0, True), Flags(0, 0, False), "A"), IMG, None)
    assert idle == sm.initial(IMG, True)
    staged = sm.from_disk(Sets(Flags(1, 0, True), Flags(0, 1, False), "A"), IMG, new)
    assert (staged.update_state, staged.chosen_update) == (sm.STAGED, new)
    assert staged.staging_partition == sm.Partition(new, False)
    sm.check_command(staged, "activate")
    ready = sm.from_disk(Sets(Flags(1, 0, True), Flags(2, 1, False), "A"), IMG, new)
    assert ready.update_state == sm.READY
    assert ready.active_partition == sm.Partition(IMG, False)
    assert ready.staging_partition == sm.Partition(new, True)
    sm.check_command(ready, "deactivate")
    # an old set to fall back to, a failed boot's leftovers: nothing to report
    for b in (Flags(1, 0, True), Flags(2, 0, False)):
        assert sm.from_disk(Sets(Flags(2, 0, True), b, "A"), IMG, new).update_state == sm.IDLE


def test_a_restarted_manager_reports_the_update_on_the_disk(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    create_os_disk(disk, 4 << 20)
    with pytest.raises(Uninitialized):
        UpdateManager(["true"], disk=str(disk)).status()
    with OsDisk(disk) as d:
        os.pwrite(d.fd, osimage.root_image("1.1.0", "aws-dev", arch="x86_64"),
                  d.entry("B", "root").offset)
        d.apply("mark-inactive-valid")
    status = UpdateManager(["true"], disk=str(disk)).status()
    assert status.update_state == sm.STAGED and status.chosen_update.version == "1.1.0"
    with OsDisk(disk) as d:
        d.apply("upgrade-to-inactive")
    status = UpdateManager(["true"], disk=str(disk)).status()
    assert status.update_state == sm.READY and status.staging_partition.next_to_boot
