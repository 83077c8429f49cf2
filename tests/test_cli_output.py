"""Human output of ``apiclient`` and ``reconciler plan``/``serve --once`` (issue 18 items 3-4).

Summaries for people (tables, local and relative times, colour on a real terminal, off when
piped, with ``NO_COLOR`` or ``--color never``), JSON with ``--json`` byte for byte as before;
``apiclient get`` redacts secrets; ``serve --once --desired`` applies the files. The terminal is a
real pseudo-terminal (``pty``), the daemon a real one on its Unix socket.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from hostcore import unixhttp
from reconciler.apiclient import format as fmt
from tests.daemon import REPO, Daemon, cli, eventually, ok

USER_DATA = "examples/user-data/aws-dev.toml"
ESC = "\033["


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    running = Daemon(tmp_path_factory.mktemp("output") / "state",
                     ["--variant", "aws-dev", "--user-data", USER_DATA])
    eventually(lambda: running.ok("GET", "/status")["state"] == "Ready", 120)  # the first pass
    yield running
    running.stop()


def on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``args`` with stdout on a pseudo-terminal; (exit status, what it printed)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=slave, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            process.kill()
            raise AssertionError(f"{args}: no output within 60 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return process.wait(timeout=60), b"".join(chunks).decode()


def client_env(daemon: Daemon, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    return {**env, "APICLIENT_SOCKET": str(daemon.socket), "TERM": "xterm", **extra}


# ---- apiclient ---------------------------------------------------------------------------------


def test_status_is_coloured_on_a_terminal_and_plain_otherwise(daemon):
    command = [sys.executable, "-m", "reconciler.apiclient", "status"]
    code, shown = on_terminal(command, client_env(daemon))
    assert code == 0, shown
    assert f"{ESC}1;32mReady" in shown  # the headline, green
    assert "CONDITION" in shown
    code, shown = on_terminal(command, client_env(daemon, NO_COLOR="1"))
    assert code == 0 and ESC not in shown and "State:       Ready" in shown
    code, shown = on_terminal([*command, "--color", "never"], client_env(daemon))
    assert code == 0 and ESC not in shown
    piped = ok(daemon.apiclient("status"))
    assert ESC not in piped and "State:       Ready" in piped
    forced = ok(daemon.apiclient("status", "--color", "always"))
    assert f"{ESC}1;32mReady" in forced


def test_json_forms_never_carry_colour(daemon):
    command = [sys.executable, "-m", "reconciler.apiclient"]
    for args in (["-u", "/settings"], ["status", "--json"], ["history", "--json"],
                 ["get", "settings.motd"]):
        code, shown = on_terminal([*command, *args], client_env(daemon))
        assert code == 0, (args, shown)
        assert ESC not in shown, args
        json.loads(shown)


def test_raw_stays_bottlerocket_byte_for_byte(daemon):
    """``apiclient -u /settings`` prints the body as the server sent it (one line), as
    Bottlerocket's does; the secret is not redacted there (it is what GET /settings says)."""
    raw = ok(daemon.apiclient("-u", "/settings"))
    assert raw.count("\n") == 1
    connection = unixhttp.UnixHTTPConnection(str(daemon.socket), timeout=30)
    try:
        body = connection.request("GET", "/settings").body.decode()
    finally:
        connection.close()
    assert raw == (body if body.endswith("\n") else body + "\n")
    assert json.loads(raw)["host-containers"]["admin"]["user-data"] != fmt_redacted()


def fmt_redacted() -> str:
    from reconciler.redact import REDACTED

    return REDACTED


def test_get_redacts_secrets_as_explain_does(daemon):
    shown = json.loads(ok(daemon.apiclient("get", "settings.host-containers.admin")))
    admin = shown["settings"]["host-containers"]["admin"]
    assert admin["user-data"] == fmt_redacted()
    assert admin["superpowered"] is True  # the rest as it is
    explained = ok(daemon.apiclient("explain", "host-containers.admin.user-data"))
    assert fmt_redacted() in explained
    secret = json.loads(ok(daemon.apiclient("-u", "/settings")))[
        "host-containers"]["admin"]["user-data"]
    everything = ok(daemon.apiclient("get"))
    assert secret not in everything and fmt_redacted() in everything
    revealed = json.loads(ok(daemon.apiclient("get", "--reveal", "host-containers.admin")))
    assert revealed["settings"]["host-containers"]["admin"]["user-data"] == secret


# ---- reconciler plan and serve --once ----------------------------------------------------------


def test_plan_prints_a_summary_coloured_on_a_terminal_and_json_with_json(tmp_path):
    state = tmp_path / "state"
    assert cli("serve", "--state-dir", state, "--user-data", USER_DATA, "--once").returncode == 0
    (state / "root/etc/motd").write_text("edited by hand\n")
    summary = cli("plan", "--state-dir", state)
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.startswith(f"Plan for {state} (live generation 1)")
    assert "Files (1):" in summary.stdout and "    -edited by hand" in summary.stdout
    assert ESC not in summary.stdout
    raw = json.loads(ok(cli("plan", "--state-dir", state, "--json")))
    (motd,) = raw["files"]
    assert motd["name"] == "motd" and "-edited by hand" in motd["diff"]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    code, shown = on_terminal([sys.executable, "-m", "reconciler.cli", "plan", "--state-dir",
                               str(state)], env)
    assert code == 0, shown
    assert f"{ESC}31m-edited by hand{fmt.RESET}" in shown  # the removed line, red
    assert f"{ESC}32m+hello from the fleet" in shown


def test_serve_once_prints_a_summary_or_json(tmp_path):
    summary = cli("serve", "--state-dir", tmp_path / "a", "--user-data", USER_DATA, "--once")
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.startswith("Applied: ok (generation 1")
    assert "file motd (/etc/motd): written" in summary.stdout
    receipt = json.loads(ok(cli("serve", "--state-dir", tmp_path / "b", "--user-data",
                                USER_DATA, "--once", "--json")))
    assert receipt["ok"] is True and receipt["generation"] == 1


def test_serve_once_applies_the_desired_files(tmp_path):
    desired = tmp_path / "desired.toml"
    desired.write_text('[settings]\nmotd = "from the desired file"\n')
    state = tmp_path / "state"
    done = cli("serve", "--state-dir", state, "--user-data", USER_DATA, "--desired", desired,
               "--once")
    assert done.returncode == 0, done.stderr
    assert (state / "root/etc/motd").read_text().startswith("from the desired file")
    from reconciler.store import Store

    with Store(state / "store.db") as store:
        assert store.sources()["settings.motd"] == f"file:{desired}"


def test_serve_once_refuses_a_bad_desired_file_and_runs_no_pass(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(textwrap.dedent("""
        [settings]
        motd = "never applied"
        [settings.ntp]
        time-server = ["x"]
    """))
    state = tmp_path / "state"
    done = cli("serve", "--state-dir", state, "--user-data", USER_DATA, "--desired", bad,
               "--once")
    assert done.returncode == 1
    assert "settings.ntp.time-server" in done.stderr and str(bad) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (state / "root/etc/motd").exists()  # no pass ran


# ---- the pure formatting -----------------------------------------------------------------------


def test_relative_times():
    assert fmt.relative(100.0, 100.4) == "now"
    assert fmt.relative(100.0, 142.0) == "42 s ago"
    assert fmt.relative(0.0, 3 * 60 + 5) == "3 min ago"
    assert fmt.relative(0.0, 5 * 3600) == "5 h ago"
    assert fmt.relative(0.0, 86400) == "1 day ago"
    assert fmt.relative(0.0, 3 * 86400) == "3 days ago"
    assert fmt.relative(120.0, 0.0) == "in 2 min"
    assert fmt.when(None, 0.0) == "-"
    shown = fmt.when(1_700_000_000.0, 1_700_000_060.0)
    assert shown.endswith(" (1 min ago)") and shown.startswith("2023-11-1")


def test_tables_align_coloured_cells_by_what_shows():
    style = fmt.Style(True)
    lines = fmt.table(["A", "B", "C"], [[style.paint("x", "red"), "yy", "z"], ["www", "v", ""]])
    plain = [line.replace(f"{ESC}1m", "").replace(f"{ESC}31m", "").replace(fmt.RESET, "")
             for line in lines]
    assert plain == ["A    B   C", "x    yy  z", "www  v"]
    assert fmt.table(["A", "B"], [["1", "2"]]) == ["A  B", "1  2"]


def test_history_names_who_and_the_source_kind():
    now = 1_000_000.0
    items = [
        {"generation": 3, "time": now - 90, "source": "api:apiclient-set-1f2e", "tx": "x",
         "actor": {"uid": 1000, "user": "alice"},
         "changes": [{"key": "settings.motd", "old": "a", "new": "b"}]},
        {"generation": 2, "time": now - 7200, "source": "git:0123abcd", "actor": None,
         "changes": [{"key": "settings.ntp.time-servers", "old": None, "new": ["x"]}]},
        {"generation": 1, "time": now - 7300, "source": "default,user-data:10-local", "actor": {
            "uid": 4242, "user": None}, "changes": [{"key": "settings.motd", "old": "b",
                                                     "new": None}]},
    ]
    lines = fmt.history_lines(items, now)
    assert lines[0].split() == ["GEN", "WHEN", "SOURCE", "WHO", "WHAT"]
    assert "(1 min ago)  api " in lines[1] and "alice (uid 1000)" in lines[1]
    assert 'settings.motd: "a" -> "b"' in lines[1]
    assert " git " in lines[2] and " daemon " in lines[2]
    assert '+settings.ntp.time-servers=["x"]' in lines[2]
    assert " default+user-data " in lines[3] and "uid 4242" in lines[3]
    assert lines[3].endswith("-settings.motd")
    assert fmt.history_lines([], now) == ["No generations"]


def test_plan_lines_colour_the_diff_only_when_asked():
    answer = {"generation": 4, "files": [{"name": "motd", "path": "/etc/motd", "reason": "",
                                          "diff": "--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new"}],
              "services": [], "errors": {}}
    plain = fmt.plan_lines(answer, "Plan")
    assert plain[:2] == ["Plan (live generation 4)", "Files (1):"]
    assert "    -old" in plain and "    +new" in plain and not any(ESC in x for x in plain)
    coloured = fmt.plan_lines(answer, "Plan", fmt.Style(True))
    assert f"    {ESC}31m-old{fmt.RESET}" in coloured
    assert f"    {ESC}32m+new{fmt.RESET}" in coloured
    assert f"    {ESC}36m@@ -1 +1 @@{fmt.RESET}" in coloured
