"""A source that cannot be pulled never holds up the pass, on a real daemon and real podman.

A black-hole registry (accepts, never answers) makes a pull hang; a refused port makes it fail at
once. Neither delays a commit that only changes motd: the commit's pass returns with the file
written while the pull still hangs (it would wait for the pull otherwise), and the failing
container backs off and is named in status in one line. The time of that commit against the
same commit without the stuck container is printed by ``bench/bench_pulls.py``.
"""

from __future__ import annotations

import os

import pytest

from tests.daemon import Daemon, eventually
from tests.hostaccess import BlackHoleRegistry
from tests.images import require_podman, reset_storage


@pytest.fixture
def daemon(daemons):
    require_podman()
    d = daemons(["--variant", "aws-dev"], env={"CONTAINERS_CONF": os.environ["CONTAINERS_CONF"]})
    yield d
    d.stop()
    reset_storage(d.state_dir / "containers")


def commit(d: Daemon, patch: dict) -> dict:
    d.ok("PATCH", "/settings", patch)
    return d.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]


def container(d: Daemon, name: str) -> dict:
    return d.ok("GET", "/status")["containers"]["host-containers"].get(name, {})


def test_a_hanging_pull_does_not_hold_up_a_motd_commit(daemon):
    registry = BlackHoleRegistry()
    try:
        receipt = commit(daemon, {"host-containers": {
            "stuck": {"source": registry.source, "enabled": True}}})
        step = next(s for s in receipt["steps"] if s["name"] == "stuck")
        assert step["result"] == "pending" and "pulling" in step["detail"], step
        eventually(lambda: registry.accepted, timeout=30)  # podman is talking to it
        receipt = commit(daemon, {"motd": "not held up"})
        assert receipt["ok"], receipt
        assert (daemon.root / "etc/motd").read_text().startswith("not held up")
        # The pull still hangs: the pass above did not wait for it.
        assert container(daemon, "stuck")["state"] == "pulling"
    finally:
        registry.close()


def test_a_failing_pull_backs_off_and_status_names_it_in_one_line(daemon):
    refused = "127.0.0.1:1/nothing/here:1"
    commit(daemon, {"host-containers": {"refused": {"source": refused, "enabled": True}}})
    def failed():
        return container(daemon, "refused").get("state") == "failed"
    eventually(failed, timeout=120, interval=0.2)
    receipt = commit(daemon, {"motd": "still converging"})
    assert (daemon.root / "etc/motd").read_text().startswith("still converging")
    step = next(s for s in receipt["steps"] if s["name"] == "refused")
    assert step["result"] == "failed"
    status = daemon.ok("GET", "/status")
    assert status["state"] == "Degraded"
    reasons = next(c for c in status["conditions"] if c["type"] == "Degraded")["reasons"]
    (reason,) = [r for r in reasons if r.startswith("container refused:")]
    assert f"source {refused}: pull failed (attempt " in reason and "next attempt in" in reason
    assert "\n" not in reason
