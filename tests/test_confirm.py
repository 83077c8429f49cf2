"""Try and confirm: a commit made with a deadline returns to the previous settings by itself."""

from __future__ import annotations

import signal

from reconciler.store import Store
from tests.daemon import Daemon, eventually


def motd(daemon: Daemon) -> str:
    return daemon.ok("GET", "/settings?keys=settings.motd").get("motd", "")


def test_unconfirmed_change_returns_by_itself(tmp_path):
    daemon = Daemon(tmp_path / "state")
    try:
        before = motd(daemon)
        out = daemon.apiclient("set", "--confirm", "2", "motd=on trial")
        assert "On trial: run 'apiclient confirm' before" in out.stdout, out
        assert motd(daemon) == "on trial"
        assert daemon.ok("GET", "/status")["pending_confirmation"]["previous"] >= 1
        eventually(lambda: motd(daemon) == before, timeout=20)
        eventually(lambda: (daemon.root / "etc/motd").read_text().startswith(before[:20]),
                   timeout=20)
        assert daemon.ok("GET", "/status")["pending_confirmation"] is None
        assert any(e["type"] == "confirm" and "not confirmed in time" in e["data"]["message"]
                   for e in daemon.ok("GET", "/events"))
    finally:
        daemon.stop()


def test_confirmed_change_stays(tmp_path):
    daemon = Daemon(tmp_path / "state")
    try:
        daemon.apiclient("set", "--confirm", "3", "motd=kept")
        assert daemon.apiclient("confirm").returncode == 0
        status = daemon.ok("GET", "/status")
        assert status["pending_confirmation"] is None
        assert daemon.apiclient("confirm").returncode == 1  # nothing waits any more
        generation = status["live_generation"]
        eventually(lambda: daemon.ok("GET", "/status")["applied_generation"] >= generation)
        assert motd(daemon) == "kept"
    finally:
        daemon.stop()
    with Store(tmp_path / "state/store.db") as store:  # and no rollback was ever made
        assert store.live()["settings.motd"] == "kept"


def test_the_deadline_survives_a_crash(tmp_path):
    state = tmp_path / "state"
    daemon = Daemon(state)
    before = motd(daemon)
    daemon.apiclient("set", "--confirm", "3", "motd=then crash")
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    daemon = Daemon(state)  # inside the window: the trial is picked up again
    try:
        eventually(lambda: motd(daemon) == before, timeout=20)
    finally:
        daemon.stop()


def test_bad_confirm_values_are_refused(tmp_path):
    daemon = Daemon(tmp_path / "state")
    try:
        for value in ("0", "-1", "nan", "inf", "x", "86401"):
            daemon.ok("PATCH", "/settings?tx=t", {"motd": "x"})
            status, text = daemon.request("POST", f"/tx/commit_and_apply?tx=t&confirm={value}")
            assert status == 400 and "confirm" in str(text), (value, status, text)
        assert motd(daemon) != "x"  # nothing was committed
        status, _ = daemon.request("POST", "/tx/confirm")
        assert status == 404
    finally:
        daemon.stop()
