"""Bootstrap containers on real podman: run to completion at boot, in name order, before the
first pass; ``once`` exactly once in the host's life; an essential failure fails the boot."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from reconciler.containers.bootstrap import due, identity
from tests.daemon import Daemon, eventually
from tests.images import build_image, require_podman, reset_storage
from updates.partitions import OsDisk, create_os_disk

ENV = {"CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", "")}
# Runs its user data as a shell script (a bootstrap container's usual shape).
RUN_USER_DATA = ('["/bin/sh", "-c", "for f in /.bottlerocket/bootstrap-containers/*/user-data;'
                 ' do sh \\"$f\\" || exit $?; done"]')


@pytest.fixture(scope="module")
def script_image(tmp_path_factory):
    require_podman()
    ENV["CONTAINERS_CONF"] = os.environ["CONTAINERS_CONF"]
    return build_image(tmp_path_factory.mktemp("bootstrap-images"), "bootscript", "v1",
                       python=True, command=RUN_USER_DATA)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_user_data(path: Path, containers: dict) -> Path:
    lines = ["[settings]"]
    for name, entry in containers.items():
        lines.append(f'[settings.bootstrap-containers."{name}"]')
        lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def ready(d: Daemon, last: str) -> dict:
    """The status once this boot's bootstrap containers ran (``last`` is the last by name) and
    a pass followed (the receipt of an earlier boot is there from the start)."""
    def check():
        status = d.ok("GET", "/status")
        done = last in status["bootstrap"]["containers"]
        return done and status["state"] != "Reconciling" and status
    return eventually(check, timeout=120)


def test_due_is_name_ordered_skips_off_and_once_already_run():
    entries = {"b": {"source": "x", "mode": "always"}, "a": {"source": "x", "mode": "once"},
               "c": {"source": "x"}, "d": {"source": "x", "mode": "sometimes"}}
    runs, invalid = due(entries, {})
    assert [r.name for r in runs] == ["a", "b"] and list(invalid) == ["d"]
    runs, _ = due(entries, {"a": identity(entries["a"])})
    assert [r.name for r in runs] == ["b"]
    changed = {**entries, "a": {"source": "y", "mode": "once"}}  # a new definition runs again
    assert [r.name for r in due(changed, {"a": identity(entries["a"])})[0]] == ["a", "b"]


def test_once_runs_exactly_once_across_three_restarts(tmp_path, script_image):
    state = tmp_path / "state"
    mine = "/.bottlerocket/bootstrap-containers"
    first = (f"echo run >> {mine}/a-once/runs\n"
             f"apiclient raw -u /status > {mine}/a-once/status.json\n")
    # b runs after a (name order): a's file is there already, seen through the host's root.
    second = (f"test -f /.bottlerocket/rootfs{state}/bootstrap-containers/a-once/runs || exit 3\n"
              f"echo run >> {mine}/b-always/runs\n")
    user_data = write_user_data(tmp_path / "user-data.toml", {
        "a-once": {"source": script_image, "mode": "once", "user-data": b64(first)},
        "b-always": {"source": script_image, "mode": "always", "user-data": b64(second)},
    })
    runs = state / "bootstrap-containers"
    try:
        d = Daemon(state, ["--variant", "aws-dev", "--user-data", str(user_data)], env=ENV)
        status = ready(d, "b-always")
        assert status["bootstrap"]["containers"]["a-once"]["ok"], status["bootstrap"]
        assert status["bootstrap"]["containers"]["b-always"]["ok"], status["bootstrap"]
        # It ran before the first pass: no receipt existed yet when it asked for the status.
        assert json.loads((runs / "a-once/status.json").read_text())["last_receipt"] is None
        assert d.ok("GET", "/settings")["bootstrap-containers"]["a-once"]["mode"] == "off"
        # Put back to once by hand: the durable record still says it ran.
        d.ok("PATCH", "/settings", {"bootstrap-containers": {"a-once": {"mode": "once"}}})
        d.ok("POST", "/tx/commit_and_apply?wait=true")
        for _ in range(3):
            assert d.stop() == 0, d.logs()
            d = Daemon(state, [], env=ENV)
            status = ready(d, "b-always")
            assert status["state"] == "Ready", status["conditions"]
        assert (runs / "a-once/runs").read_text() == "run\n"
        assert (runs / "b-always/runs").read_text() == "run\n" * 4
    finally:
        d.stop()
        reset_storage(state / "containers")


def test_essential_failure_leaves_the_boot_unmarked_and_status_degraded(tmp_path,
                                                                        script_image):
    disk = tmp_path / "disk.img"
    create_os_disk(disk, 8 << 20, version="1.0.0", variant="aws-dev", arch="x86_64")
    with OsDisk(disk) as opened:
        assert opened.boot() == "A"
    user_data = write_user_data(tmp_path / "user-data.toml", {
        "broken": {"source": script_image, "mode": "always", "essential": True,
                   "user-data": b64("echo cannot set up the disks >&2\nexit 1\n")},
        "optional": {"source": script_image, "mode": "always", "user-data": b64("exit 4\n")},
    })
    state = tmp_path / "state"
    d = Daemon(state, ["--variant", "aws-dev", "--disk", str(disk), "--user-data",
                       str(user_data)], env=ENV)
    try:
        boot = eventually(lambda: d.ok("GET", "/status")["updates"]["boot"], timeout=120)
        assert not boot["marked_successful"], boot
        assert boot["reason"] == "the first reconcile pass after boot failed"
        status = d.ok("GET", "/status")
        assert status["state"] == "Degraded"
        reasons = next(c for c in status["conditions"] if c["type"] == "Degraded")["reasons"]
        assert any(r.startswith("bootstrap broken: essential bootstrap container failed at boot:"
                                " exited 1: cannot set up the disks") for r in reasons), reasons
        assert not any("optional" in r for r in reasons)  # not essential: reported, not fatal
        assert status["bootstrap"]["containers"]["optional"]["exit_code"] == 4
    finally:
        d.stop()
        reset_storage(state / "containers")
