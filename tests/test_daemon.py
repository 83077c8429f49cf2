"""The daemon end to end: real process, real socket, real files."""

from __future__ import annotations

import os
import socket
import stat
import textwrap
import threading
from pathlib import Path

import pytest

from tests.daemon import REPO, Daemon, cli, eventually

AWS_DEV = str(REPO / "examples/user-data/aws-dev.toml")


@pytest.fixture
def daemon(daemons):
    return daemons(["--variant", "aws-dev", "--user-data", AWS_DEV], ready=True)


def motd(d: Daemon) -> str:
    path = d.root / "etc/motd"
    return path.read_text() if path.exists() else ""


def commit_and_wait(d: Daemon, patch: dict, tx: str = "default") -> dict:
    d.ok("PATCH", f"/settings?tx={tx}", patch)
    return d.ok("POST", f"/tx/commit_and_apply?tx={tx}&wait=true")


def test_socket_is_0660_and_sigterm_stops_cleanly(tmp_path):
    d = Daemon(tmp_path / "state", ["--user-data", AWS_DEV])
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o660
    assert d.stop() == 0
    assert not d.socket.exists()


def test_sd_notify_ready(tmp_path):
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(30)
        d = Daemon(tmp_path / "state", [], env={"NOTIFY_SOCKET": address})
        try:
            assert listener.recv(100) == b"READY=1"
        finally:
            d.stop()


def test_bottlerocket_readme_flow(daemon):
    assert "hello from the fleet" in eventually(lambda: motd(daemon))
    assert daemon.request("PATCH", "/settings", {"motd": "my own value!"})[0] == 204
    assert daemon.ok("GET", "/tx") == {"motd": "my own value!"}
    assert daemon.ok("POST", "/tx/commit_and_apply") == ["settings.motd"]
    eventually(lambda: motd(daemon) == "my own value!\n" or motd(daemon) == "my own value!")


def test_wait_returns_the_receipt_of_that_generation(daemon):
    result = commit_and_wait(daemon, {"motd": "waited"})
    assert result["changed"] == ["settings.motd"]
    assert result["receipt"]["generation"] == result["generation"]
    assert result["receipt"]["ok"]
    assert motd(daemon).startswith("waited")


def test_null_deletes_and_default_comes_back(daemon):
    commit_and_wait(daemon, {"motd": "temporary"})
    commit_and_wait(daemon, {"motd": None})
    value = daemon.ok("GET", "/settings?keys=settings.motd")["motd"]
    assert value != "temporary" and motd(daemon).startswith(value)
    provenance = daemon.ok("GET", "/provenance?keys=settings.motd")
    assert provenance["settings.motd"]["source"] == "default"


def test_rollback_restores_values_and_files(daemon):
    first = commit_and_wait(daemon, {"motd": "first"})["generation"]
    commit_and_wait(daemon, {"motd": "second", "aws": {"region": "eu-west-1"}})
    result = daemon.ok("POST", f"/actions/rollback-settings?generation={first}")
    assert set(result["changed"]) == {"settings.motd", "settings.aws.region"}
    eventually(lambda: motd(daemon).startswith("first"))
    history = daemon.ok("GET", "/provenance?keys=settings.motd&history=true")["settings.motd"]
    assert history["source"] == f"rollback:{first}"
    assert [h["new"] for h in history["history"][:3]] == ["first", "second", "first"]


def test_hand_edit_is_reverted_with_an_event(daemon):
    eventually(lambda: daemon.ok("GET", "/status")["state"] == "Ready")
    expected = motd(daemon)
    (daemon.root / "etc/motd").write_text("edited by hand\n")
    eventually(lambda: motd(daemon) == expected, timeout=1.0)
    events = eventually(lambda: [e for e in daemon.ok("GET", "/events") if e["type"] == "drift"])
    assert "/etc/motd" in events[0]["data"]["message"]


def test_errors_name_the_key_and_change_nothing(daemon):
    status, text = daemon.request("PATCH", "/settings", {"ntp": {"time-server": ["x"]}})
    assert status == 400 and "settings.ntp.time-server" in text and "time-servers" in text
    status, text = daemon.request("PATCH", "/settings", raw=b"{not json")
    assert status == 400
    assert daemon.request("POST", "/tx/commit")[0] == 422
    assert daemon.request("PATCH", "/settings", raw=b"{" + b" " * 2_000_000 + b"}")[0] == 413
    assert daemon.request("GET", "/services?names=nope")[0] == 404
    assert daemon.request("GET", "/metadata/affected-services")[0] == 400
    assert daemon.request("GET", "/settings?keys=")[0] == 400
    assert daemon.ok("GET", "/tx/list") == []


def test_keypair_patch_guesses_types(daemon):
    daemon.ok("PATCH", "/settings/keypair", {"request_payload": ["updates.seed=42",
                                                                  "motd=kp"]})
    assert daemon.ok("GET", "/tx") == {"motd": "kp", "updates": {"seed": 42}}


def test_metadata_endpoints(daemon):
    affected = daemon.ok("GET", "/metadata/affected-services?keys=settings.ntp.time-servers")
    assert affected == {"settings.ntp.time-servers": ["chronyd"]}
    assert "settings.updates.seed" in daemon.ok("GET", "/metadata/setting-generators")
    assert daemon.ok("GET", "/configuration-files?names=motd")["motd"]["path"] == "/etc/motd"
    model = daemon.ok("GET", "/")
    assert {"settings", "services", "configuration-files", "os"} <= set(model)
    expected = {"settings": {"motd": model["settings"]["motd"]}}
    assert daemon.ok("GET", "/?prefix=settings.motd") == expected


def test_plan_is_a_dry_run(daemon):
    eventually(lambda: motd(daemon))
    before = motd(daemon)
    daemon.ok("PATCH", "/settings?tx=p", {"motd": "planned"})
    plan = daemon.ok("POST", "/tx/plan?tx=p")
    assert plan["settings"][0]["key"] == "settings.motd"
    (file,) = plan["files"]
    assert file["path"] == "/etc/motd" and "+planned" in file["diff"]
    assert [s["name"] for s in plan["services"]] == ["motd"]
    assert motd(daemon) == before and daemon.ok("GET", "/tx/list") == ["p"]


def test_concurrent_clients_lose_nothing(tmp_path):
    d = Daemon(tmp_path / "state", ["--variant", "aws-k8s", "--user-data",
                                    str(REPO / "examples/user-data/aws-k8s.toml")])
    clients, rounds = 8, 200
    failures: list[str] = []

    def client(n: int) -> None:
        for i in range(rounds):
            tx = f"client-{n}"
            status, text = d.request("PATCH", f"/settings?tx={tx}",
                                     {"kubernetes": {"node-labels": {f"c{n}-{i}": "v"}}})
            status2, _ = d.request("POST", f"/tx/commit?tx={tx}")
            if status != 204 or status2 != 200:
                failures.append(f"{n}/{i}: {status} {text} {status2}")

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        labels = d.ok("GET", "/settings?prefix=kubernetes.node-labels")["kubernetes"]["node-labels"]
        assert {f"c{n}-{i}" for n in range(clients) for i in range(rounds)} <= set(labels)
    finally:
        d.stop()


FLAKY_METADATA = """
[configuration-files.motd]
path = "/etc/motd"
template = "motd.j2"

[configuration-files.region]
path = "/etc/region"
template = "region.j2"

[services.motd]
configuration-files = ["motd"]
affected-by = ["settings.motd"]
restart-commands = [["{python}", "-c", "import sys; sys.exit(0)"]]
sandbox-safe = true

[services.region]
configuration-files = ["region"]
affected-by = ["settings.aws.region"]
restart-commands = [["{python}", "{checker}", "{root}/etc/region"]]
sandbox-safe = true
"""

CHECKER = """
import sys
if open(sys.argv[1]).read().strip() == "us-fail-1":
    print("region service refuses us-fail-1")
    sys.exit(3)
"""


def test_failing_restart_is_isolated_and_recovers(tmp_path, scratch_renderers):
    state = tmp_path / "state"
    checker = tmp_path / "checker.py"
    checker.write_text(CHECKER)
    renderers = scratch_renderers(FLAKY_METADATA, {
        "motd.j2": "{{ settings.motd }}\n",
        "region.j2": "{{ settings.aws.region | default('none') }}\n",
    }, checker=checker, root=state / "root")
    d = Daemon(state, ["--renderers", str(renderers), "--interval", "0.5"])
    try:
        receipt = commit_and_wait(d, {"motd": "still applied", "aws": {"region": "us-fail-1"}})
        results = {s["name"]: s["result"] for s in receipt["receipt"]["steps"]
                   if s["kind"] == "service"}
        assert results == {"motd": "restarted", "region": "failed"}
        assert motd(d) == "still applied\n"
        status = d.ok("GET", "/status")
        assert status["state"] == "Degraded"
        assert any("refuses us-fail-1" in r for r in status["conditions"][2]["reasons"])
        commit_and_wait(d, {"aws": {"region": "us-east-1"}})
        eventually(lambda: d.ok("GET", "/status")["state"] == "Ready")
    finally:
        d.stop()


def test_invalid_user_data_fails_and_changes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(textwrap.dedent("""
        [settings]
        motd = "never applied"
        [settings.ntp]
        time-server = ["x"]
    """))
    state = tmp_path / "state"
    result = cli("serve", "--state-dir", state, "--user-data", bad, "--once")
    assert result.returncode == 1
    assert "settings.ntp.time-server" in result.stderr and str(bad) in result.stderr
    assert not (state / "root/etc/motd").exists()
    from reconciler.store import Store

    with Store(state / "store.db") as store:
        assert store.generation() == 0 and store.live() == {}


def test_serve_once_renders_the_example(tmp_path):
    state = tmp_path / "state"
    result = cli("serve", "--state-dir", state, "--user-data", AWS_DEV, "--once")
    assert result.returncode == 0, result.stderr
    assert "hello from the fleet" in Path(state / "root/etc/motd").read_text()
