"""Host containers end to end: a real daemon driving real podman, with images built locally.

These tests need podman (with runc) and busybox-static; ``make test`` installs them. Without
them the tests fail, never skip. Engine options come from ``CONTAINERS_CONF``
(examples/containers.conf unless the environment says otherwise).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from reconciler.containers import PodmanEngine
from tests.daemon import Daemon, eventually
from tests.images import build_test_images, podman, require_podman, reset_storage

MISSING = "oci-archive:/nonexistent/no-such-image.tar"


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    require_podman()
    return build_test_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
def daemon(daemons, images):
    started = daemons(["--variant", "aws-dev"],
                      env={"CONTAINERS_CONF": os.environ["CONTAINERS_CONF"]}, ready=True)
    yield started
    started.stop()
    reset_storage(started.state_dir / "containers")


def storage(d: Daemon) -> Path:
    return d.state_dir / "containers"


def commit(d: Daemon, containers: dict, **settings) -> dict:
    d.ok("PATCH", "/settings", {"host-containers": containers, **settings})
    return d.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]


def failures(receipt: dict) -> list[str]:
    return [f"{s['kind']} {s['name']}: {s['detail']}" for s in receipt["steps"]
            if s["result"] == "failed"]


def steps(receipt: dict) -> dict[str, dict]:
    return {s["name"]: s for s in receipt["steps"] if s["kind"] == "container"}


def running(d: Daemon) -> dict[str, str]:
    """name -> id of the running containers in the daemon's storage."""
    listed = json.loads(podman(storage(d), "ps", "--format", "json") or "[]")
    return {c["Names"][0]: c["Id"] for c in listed if c["State"] == "running"}


def exec_in(d: Daemon, name: str, script: str) -> subprocess.CompletedProcess:
    command = PodmanEngine(storage(d)).command("exec", name, "/bin/sh", "-c", script)
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def container_status(d: Daemon) -> dict[str, dict]:
    return d.ok("GET", "/status")["containers"]["host-containers"]


def test_enable_change_source_disable(daemon, images):
    hello = base64.b64encode(b"hello, container\n").decode()
    receipt = commit(
        daemon,
        {
            "a": {"source": images["v1"], "enabled": True, "user-data": hello},
            "b": {"source": images["v1"], "enabled": True},
        },
    )
    assert receipt["ok"], failures(receipt)
    made = steps(receipt)
    assert {made["a"]["result"], made["b"]["result"]} == {"created"}
    assert made["a"]["digest"].startswith("sha256:")
    first = running(daemon)
    assert set(first) == {"a", "b"}

    persistent = daemon.state_dir / "host-containers" / "a"
    assert stat.S_IMODE(persistent.stat().st_mode) == 0o700
    assert (persistent / "user-data").read_bytes() == b"hello, container\n"
    inside = exec_in(
        daemon,
        "a",
        "cat /etc/image-version /.bottlerocket/host-containers/a/user-data"
        " && echo kept > /.bottlerocket/host-containers/a/mine && test -S /run/api.sock"
        " && test -x /usr/local/bin/apiclient",
    )
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout == "v1\nhello, container\n"
    status = container_status(daemon)
    assert status["a"]["state"] == "running" and status["a"]["digest"] == made["a"]["digest"]

    # A new source recreates that container only; its storage is kept.
    receipt = commit(daemon, {"a": {"source": images["v2"]}})
    assert receipt["ok"], failures(receipt)
    assert set(steps(receipt)) == {"a"}
    assert steps(receipt)["a"]["result"] == "recreated"
    assert "source" in steps(receipt)["a"]["detail"]
    second = running(daemon)
    assert second["a"] != first["a"] and second["b"] == first["b"]
    inside = exec_in(daemon, "a", "cat /etc/image-version /.bottlerocket/host-containers/a/mine")
    assert inside.stdout == "v2\nkept\n", inside.stderr

    # Disabled: stopped and removed; deleted from settings: the same. Storage stays.
    receipt = commit(daemon, {"a": {"enabled": False}})
    assert steps(receipt)["a"]["result"] == "removed"
    assert running(daemon) == {"b": first["b"]}
    receipt = commit(daemon, {"b": None})
    assert steps(receipt)["b"]["result"] == "removed"
    assert running(daemon) == {}
    assert (persistent / "mine").read_text() == "kept\n"
    assert container_status(daemon) == {}


def test_removed_by_hand_comes_back_and_strangers_are_left_alone(daemon, images):
    stranger = podman(storage(daemon), "run", "-d", "--name", "stranger", images["v1"]).strip()
    receipt = commit(
        daemon,
        {
            "a": {"source": images["v1"], "enabled": True},
            "stranger": {"source": images["v1"], "enabled": True},
        },
    )
    assert not receipt["ok"]
    assert "not ours" in steps(receipt)["stranger"]["detail"]
    before = running(daemon)
    assert before["stranger"] == stranger

    podman(storage(daemon), "rm", "--force", "--time", "0", "a")
    after = eventually(lambda: (r := running(daemon)).get("a") not in (None, before["a"]) and r,
                       timeout=30)
    assert after["stranger"] == stranger
    drift = eventually(
        lambda: [e for e in daemon.ok("GET", "/events") if e["type"] == "drift"
                 and e["data"].get("container") == "a"]
    )
    # "removed", or "exited" when the pass woken by the kill came before the removal.
    assert "removed" in drift[0]["data"]["message"] or "exited" in drift[0]["data"]["message"]
    # One restart, or two when the pass woken by "died" raced the hand-removal.
    eventually(lambda: container_status(daemon)["a"]["restarts"] >= 1)

    commit(daemon, {"a": None, "stranger": None})
    assert running(daemon) == {"stranger": stranger}


def test_superpowered_sees_the_host_a_normal_one_does_not(daemon, images):
    receipt = commit(
        daemon,
        {
            "super": {"source": images["v1"], "enabled": True, "superpowered": True},
            "plain": {"source": images["v1"], "enabled": True},
        },
    )
    assert receipt["ok"], failures(receipt)
    pid = daemon.process.pid
    store = f"/.bottlerocket/rootfs{daemon.state_dir}/store.db"
    probe = f"test -f {store} && test -d /proc/{pid}"
    assert exec_in(daemon, "super", probe).returncode == 0
    assert "reconciler" in exec_in(daemon, "super", f"cat /proc/{pid}/cmdline").stdout
    denied = exec_in(daemon, "super", f"touch /.bottlerocket/rootfs{daemon.state_dir}/x")
    assert denied.returncode != 0  # the host root is read-only
    assert exec_in(daemon, "plain", f"test -e {store}").returncode != 0
    assert exec_in(daemon, "plain", f"test -d /proc/{pid}").returncode != 0 or pid == 1
    assert exec_in(daemon, "plain", "ls /.bottlerocket").stdout.split() == ["host-containers"]


def test_python_container_calls_apiclient_over_the_socket(daemon, images):
    receipt = commit(
        daemon,
        {"admin": {"source": images["python"], "enabled": True}},
        motd="hello from inside",
    )
    assert receipt["ok"], failures(receipt)
    answer = exec_in(daemon, "admin", "apiclient get settings.motd")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"settings": {"motd": "hello from inside"}}
    raw = exec_in(daemon, "admin", "apiclient -s /run/api.sock -u /settings?keys=settings.motd")
    assert json.loads(raw.stdout) == {"motd": "hello from inside"}, raw.stderr

    # A new daemon (new socket) keeps the container, and its apiclient reaches the new daemon.
    before = running(daemon)
    daemon.stop()
    again = Daemon(daemon.state_dir, ["--variant", "aws-dev"])
    try:
        eventually(lambda: again.ok("GET", "/status")["state"] == "Ready", timeout=30)
        assert running(again) == before
        answer = exec_in(again, "admin", "apiclient get settings.motd")
        assert json.loads(answer.stdout) == {"settings": {"motd": "hello from inside"}}
    finally:
        again.stop()


def test_bad_source_leaves_the_others_running_and_says_why(daemon, images):
    receipt = commit(
        daemon,
        {
            "good": {"source": images["v1"], "enabled": True},
            "bad": {"source": MISSING, "enabled": True},
        },
    )
    assert not receipt["ok"]
    assert steps(receipt)["good"]["result"] == "created"
    assert steps(receipt)["bad"]["result"] == "failed"
    assert "no-such-image.tar" in steps(receipt)["bad"]["detail"]
    good = running(daemon)["good"]

    # A bad new source for a running container keeps the old one running.
    receipt = commit(daemon, {"good": {"source": MISSING}})
    assert steps(receipt)["good"]["result"] == "failed"
    assert running(daemon) == {"good": good}

    status = daemon.ok("GET", "/status")
    assert status["state"] == "Degraded"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert any(r.startswith("container bad:") for r in degraded["reasons"])
    assert "no-such-image.tar" in status["containers"]["host-containers"]["bad"]["last_error"]

    receipt = commit(daemon, {"good": {"source": images["v1"]}, "bad": {"enabled": False}})
    assert receipt["ok"], failures(receipt)
    assert running(daemon) == {"good": good}  # back to what runs: nothing to do


def test_plan_lists_containers_that_would_change(daemon, images):
    commit(daemon, {"a": {"source": images["v1"], "enabled": True},
                    "b": {"source": images["v1"], "enabled": True}})
    before = running(daemon)
    daemon.ok("PATCH", "/settings?tx=p", {"host-containers": {
        "a": {"superpowered": True}, "b": None, "c": {"source": images["v2"], "enabled": True}}})
    plan = daemon.ok("POST", "/tx/plan?tx=p")
    actions = {item["name"]: (item["action"], item["reason"]) for item in plan["containers"]}
    assert actions == {
        "a": ("recreate", "superpowered false -> true"),
        "b": ("remove", "no longer in settings"),
        "c": ("create", "not running: no container"),
    }
    assert running(daemon) == before


@pytest.mark.parametrize("point", ["container-removed:a", "container-created:a"])
def test_killed_during_recreation_converges_after_restart(tmp_path, images, point):
    """SIGKILL while a changed source recreates a container: after a restart, the container
    runs the new source, its storage is kept, and the other container was never touched."""
    state = tmp_path / "state"
    env = {"CONTAINERS_CONF": os.environ["CONTAINERS_CONF"]}
    d = Daemon(state, ["--variant", "aws-dev"], env=env)
    try:
        receipt = commit(d, {"a": {"source": images["v1"], "enabled": True},
                             "b": {"source": images["v1"], "enabled": True}})
        assert receipt["ok"], failures(receipt)
        exec_in(d, "a", "echo kept > /.bottlerocket/host-containers/a/mine")
        untouched = running(d)["b"]
    finally:
        d.stop()
    d = Daemon(state, [], env={**env, "RECONCILER_CRASH_AT": point})
    d.ok("PATCH", "/settings", {"host-containers": {"a": {"source": images["v2"]}}})
    d.request("POST", "/tx/commit_and_apply")
    eventually(lambda: d.process.poll() is not None, timeout=60)
    assert d.process.returncode == -9, d.logs()
    d.stop()
    d = Daemon(state, [], env=env)
    try:
        eventually(lambda: d.ok("GET", "/status")["state"] == "Ready", timeout=60)
        now = running(d)
        assert set(now) == {"a", "b"} and now["b"] == untouched
        inside = exec_in(d, "a", "cat /etc/image-version /.bottlerocket/host-containers/a/mine")
        assert inside.stdout == "v2\nkept\n", inside.stderr
    finally:
        d.stop()
        reset_storage(state / "containers")
