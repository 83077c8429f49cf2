"""Status tells the truth, through a real daemon: a failing boot health check, an invalid git
revision, a rejected desired-state file and a crash-looping host container each turn the
headline of ``apiclient status`` away from Ready with the reason, and each is a warning line in
a log run at ``--log-level warning``. Also: a failed ``sync?wait`` is an error, the first git
sync is no drift, the pass's own writes are no file change, events are CloudEvents."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from tests.daemon import Daemon, eventually, ok
from tests.images import build_image, require_podman, reset_storage
from tests.test_gitops import Fleet
from updates.partitions import create_os_disk


def log_lines(daemon: Daemon, level: str | None = None) -> list[dict]:
    """The daemon's JSON log lines (stderr is not a terminal), of ``level`` when given."""
    lines = []
    for line in daemon.logs().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if level is None or entry.get("level") == level:
                lines.append(entry)
    return lines


def warned(daemon: Daemon, text: str) -> bool:
    return any(text in entry["event"] for entry in log_lines(daemon, "warning"))


def headline(daemon: Daemon) -> list[str]:
    """``apiclient status``'s first two lines: State (with the reason) and Why."""
    return ok(daemon.apiclient("status")).splitlines()[:2]


def test_failing_health_check_is_degraded_with_the_reason_and_a_warning(tmp_path):
    disk = tmp_path / "disk.img"
    create_os_disk(disk, 8 << 20, version="1.0.0", variant="aws-dev")
    user_data = tmp_path / "user-data.toml"
    user_data.write_text('[settings.updates.health-checks.always-fails]\n'
                         'command = ["/bin/false"]\n')
    daemon = Daemon(tmp_path / "state", ["--disk", str(disk), "--user-data", str(user_data)],
                    log_level="warning")
    try:
        eventually(lambda: daemon.ok("GET", "/status")["updates"]["boot"], timeout=30)
        status = daemon.ok("GET", "/status")
        assert status["last_receipt"]["ok"] is True  # the pass was fine, the boot is not
        assert (status["state"], status["reason"]) == ("Degraded", "BootNotMarkedSuccessful")
        state, why = headline(daemon)
        assert state.startswith("State:       Degraded: BootNotMarkedSuccessful")
        assert "always-fails: exited 1" in why
        boot = next(c for c in status["conditions"] if c["type"] == "BootHealth")
        assert boot["status"] is False and boot["observedGeneration"] == 1
        assert next(c for c in status["conditions"] if c["type"] == "Stalled")["status"] is True
        assert eventually(lambda: warned(daemon, "boot NOT marked successful"))
        assert not log_lines(daemon, "info")  # --log-level warning: nothing else
    finally:
        daemon.stop()


def _git_host(tmp_path: Path, fleet: Fleet) -> Daemon:
    user_data = tmp_path / "host.toml"  # user data sets the motd, which git then takes over
    user_data.write_text(
        f'[settings]\nmotd = "from user data"\n[settings.gitops]\nurl = "{fleet.url}"\n'
        'ref = "main"\npath = "clusters/prod"\nhost-id = "web-1"\ngroups = ["web"]\n'
        "interval = 3600\n")
    daemon = Daemon(tmp_path / "host", ["--user-data", str(user_data)], log_level="warning")
    eventually(lambda: daemon.ok("GET", "/status")["gitops"]["condition"] == "Synced",
               timeout=30)
    return daemon


def test_invalid_git_revision_is_degraded_sync_fails_and_warns(tmp_path):
    fleet = Fleet(tmp_path)
    daemon = _git_host(tmp_path, fleet)
    try:
        # the first sync took settings.motd over from user data: that is no drift
        events = daemon.ok("GET", "/events")
        assert not [e for e in events if e["type"] == "drift"], events
        assert not warned(daemon, "changed outside git")
        eventually(lambda: daemon.ok("GET", "/status")["state"] == "Ready")

        good = fleet.git("rev-parse", "HEAD")
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = 5\n')
        bad = fleet.commit("not text")
        raw = daemon.apiclient("-m", "POST", "-u", "/actions/sync?wait=true")
        assert raw.returncode != 0 and "Status 422" in raw.stderr, raw
        assert daemon.apiclient("sync").returncode == 1
        status = daemon.ok("GET", "/status")
        assert (status["state"], status["reason"]) == ("Degraded", "RevisionInvalid")
        state, why = headline(daemon)
        assert state.startswith("State:       Degraded: RevisionInvalid")
        assert bad[:12] in why and "hosts/web-1.toml" in why and "settings.motd" in why
        assert status["gitops"]["applied_commit"] == good
        assert warned(daemon, f"git sync invalid: commit {bad[:12]}")

        # a ref that does not exist: the fetch fails (502), and the headline says so
        ok(daemon.apiclient("set", "--force", "gitops.ref=no-such-branch"))
        answer = daemon.request("POST", "/actions/sync?wait=true")
        assert answer[0] == 502 and answer[1]["sync"]["condition"] == "Failed"
        assert daemon.ok("GET", "/status")["reason"] == "FetchFailed"
        assert warned(daemon, "git sync failed")
    finally:
        daemon.stop()


def test_rejected_desired_file_is_degraded_with_the_reason_and_a_warning(tmp_path):
    desired = tmp_path / "desired.toml"
    desired.write_text('[settings]\nmotd = "from the file"\n')
    daemon = Daemon(tmp_path / "state", ["--desired", str(desired)], log_level="warning")
    try:
        eventually(lambda: daemon.ok("GET", "/status")["state"] == "Ready", timeout=30)
        desired.write_text('[settings]\nmotd = 5\n')
        status = eventually(lambda: (s := daemon.ok("GET", "/status"))["state"] == "Degraded"
                            and s)
        assert status["reason"] == "FilesInvalid"
        state, why = headline(daemon)
        assert state.startswith("State:       Degraded: FilesInvalid")
        assert str(desired) in why and "settings.motd" in why
        assert (daemon.root / "etc/motd").read_text().startswith("from the file")
        assert warned(daemon, "desired-state files not applied")
        desired.write_text('[settings]\nmotd = "fixed"\n')  # fixed: Ready again
        eventually(lambda: daemon.ok("GET", "/status")["state"] == "Ready")
    finally:
        daemon.stop()


def test_crash_looping_host_container_is_degraded_with_the_reason_and_a_warning(tmp_path):
    require_podman()
    workdir = tmp_path / "images"
    try:
        source = build_image(workdir, "status-crasher", "v1",
                             command='["/bin/sh", "-c", "echo status-crasher dying; exit 3"]')
    finally:
        reset_storage(workdir / "builder")
    daemon = Daemon(tmp_path / "state", env={"CONTAINERS_CONF": os.environ["CONTAINERS_CONF"]},
                    log_level="warning")
    try:
        daemon.ok("PATCH", "/settings", {"host-containers": {"crasher": {
            "source": source, "enabled": True}}})
        daemon.ok("POST", "/tx/commit_and_apply?wait=true")
        status = eventually(
            lambda: (s := daemon.ok("GET", "/status"))["reason"] == "CrashLooping" and s,
            timeout=120)
        assert status["state"] == "Degraded"
        state, why = headline(daemon)
        assert state.startswith("State:       Degraded: CrashLooping")
        assert "crasher crash-looping" in why and "exited (code 3)" in why
        assert warned(daemon, "host container crasher is crash-looping")
    finally:
        daemon.stop()
        reset_storage(daemon.state_dir / "containers")


def test_the_pass_s_own_writes_are_no_file_change_and_events_are_cloudevents(tmp_path):
    daemon = Daemon(tmp_path / "state")
    try:
        eventually(lambda: daemon.ok("GET", "/status")["state"] == "Ready", timeout=30)
        receipts = []
        for text in ("one", "two", "three"):
            daemon.ok("PATCH", "/settings", {"motd": text})
            receipts.append(daemon.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"])
        # consecutive passes, each for its commit: no echo of our own write in between
        assert [r["reason"] for r in receipts] == ["commit"] * 3
        assert [r["pass"] - receipts[0]["pass"] for r in receipts] == [0, 1, 2]
        assert "file changed" not in ok(daemon.apiclient("status"))

        (daemon.root / "etc/motd").write_text("edited by hand\n")
        drift = eventually(lambda: [e for e in daemon.ok("GET", "/events")
                                    if e["type"] == "drift"])
        events = daemon.ok("GET", "/events")
        for event in events:
            assert event["specversion"] == "1.0"
            assert event["source"].startswith("/host-reconciler/")
            assert event["data"]["message"] and event["datacontenttype"] == "application/json"
            assert datetime.fromisoformat(event["time"]).tzinfo is not None
        assert len({e["id"] for e in events}) == len(events)
        assert drift[0]["subject"] == "/etc/motd"
        commits = [e for e in events if e["type"] == "commit"]
        assert commits[-1]["subject"] == f"generations/{commits[-1]['data']['generation']}"
        assert any(e.get("kind") == "drift" and "/etc/motd" in e["event"]
                   for e in log_lines(daemon, "warning"))
        listed = ok(daemon.apiclient("events"))
        assert "drift" in listed and "/etc/motd drifted; rewritten" in listed
    finally:
        daemon.stop()


@pytest.fixture(autouse=True)
def _containers_conf(monkeypatch):
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("CONTAINERS_CONF", os.environ.get(
        "CONTAINERS_CONF", str(repo / "examples/containers.conf")))
    assert shutil.which("git"), "git is needed (scripts/install-system-deps.sh)"
