"""``apiclient`` against a real daemon: Bottlerocket's raw form and every subcommand.

No mocks: each test starts ``reconciler serve`` (variant aws-dev, the example user data) in a
subprocess and runs the client as ``python -m reconciler.apiclient`` with ``APICLIENT_SOCKET``.
"""

from __future__ import annotations

import http.server
import json
import os
import pwd
import re
import selectors
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from hostcore import unixhttp
from tests.daemon import REPO, Daemon, eventually, ok

USER_DATA = "examples/user-data/aws-dev.toml"
BOOT_MOTD = "hello from the fleet"  # from the example user data
DEFAULT_MOTD = "Welcome to the reconciler!"  # schemas/defaults.toml


def motd_file(daemon: Daemon) -> Path:
    return daemon.root / "etc" / "motd"


@pytest.fixture
def daemon(daemons) -> Daemon:
    return daemons(["--variant", "aws-dev", "--user-data", USER_DATA])


@pytest.fixture
def apiclient(daemon: Daemon) -> Callable[..., subprocess.CompletedProcess[str]]:
    return daemon.apiclient


def settings(apiclient) -> dict:
    return json.loads(ok(apiclient("-u", "/settings")))


def transactions(apiclient) -> list[str]:
    return json.loads(ok(apiclient("-u", "/tx/list")))


def live_generation(apiclient) -> int:
    return json.loads(ok(apiclient("status", "--json")))["live_generation"]


def wait_ready(apiclient) -> dict:
    def ready():
        status = json.loads(ok(apiclient("status", "--json")))
        return status if status["state"] == "Ready" else None

    return eventually(ready, timeout=20)


# ---- Bottlerocket's raw form -------------------------------------------------------------------


def test_readme_settings_commands_verbatim(daemon, apiclient):
    # apiclient -u /settings
    assert settings(apiclient)["motd"] == BOOT_MOTD
    # apiclient -m PATCH -u /settings -d '{"motd": "my own value!"}'
    patched = apiclient("-m", "PATCH", "-u", "/settings", "-d", '{"motd": "my own value!"}')
    assert ok(patched) == ""
    # apiclient -u /tx
    assert json.loads(ok(apiclient("-u", "/tx"))) == {"motd": "my own value!"}
    assert settings(apiclient)["motd"] == BOOT_MOTD  # pending until committed
    # apiclient -m POST -u /tx/commit_and_apply
    assert json.loads(ok(apiclient("-m", "POST", "-u", "/tx/commit_and_apply"))) == [
        "settings.motd"
    ]
    eventually(
        lambda: (
            motd_file(daemon).is_file() and motd_file(daemon).read_text().strip() == "my own value!"
        ),
        timeout=20,
    )
    assert settings(apiclient)["motd"] == "my own value!"


def test_raw_subcommand_and_X_synonym(apiclient):
    ok(apiclient("-u", "/settings", "-X", "PATCH", "-d", '{"motd": "via -X"}'))
    assert json.loads(ok(apiclient("raw", "-u", "/tx"))) == {"motd": "via -X"}
    ok(apiclient("raw", "-X", "PATCH", "-u", "/settings", "-d", '{"motd": "via raw"}'))
    assert json.loads(ok(apiclient("-u", "/tx"))) == {"motd": "via raw"}
    verbose = apiclient("-v", "-m", "DELETE", "-u", "/tx")
    assert json.loads(ok(verbose)) == ["settings.motd"]
    assert verbose.stderr.startswith("200")


def test_verbose_prints_status_of_an_empty_answer(apiclient):
    result = apiclient("-v", "-m", "PATCH", "-u", "/settings", "-d", '{"motd": "x"}')
    assert ok(result) == ""
    assert result.stderr.startswith("204")


def test_non_2xx_exits_1_with_the_status_message(apiclient):
    missing = apiclient("-u", "/no-such-endpoint")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("Status 404 when GETing /no-such-endpoint: ")

    invalid = apiclient("-m", "PATCH", "-u", "/settings", "-d", '{"motd": 5}')
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("Status 400 when PATCHing /settings: ")
    assert "settings.motd" in invalid.stderr

    nothing = apiclient("-m", "POST", "-u", "/tx/commit")
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("Status 422 when POSTing /tx/commit: ")


def test_unreachable_socket_is_reported(apiclient, tmp_path):
    result = apiclient("-s", str(tmp_path / "nowhere.sock"), "get", "settings.motd")
    assert result.returncode == 1
    assert "nowhere.sock" in result.stderr


# ---- get ---------------------------------------------------------------------------------------


def test_get(apiclient):
    assert json.loads(ok(apiclient("get", "settings.motd"))) == {"settings": {"motd": BOOT_MOTD}}
    merged = json.loads(ok(apiclient("get", "settings.motd", "os.arch")))
    assert merged["settings"] == {"motd": BOOT_MOTD}
    assert list(merged["os"]) == ["arch"]
    everything = json.loads(ok(apiclient("get")))
    assert set(everything) == {"os", "settings"}
    assert everything["settings"]["aws"]["region"] == "us-west-2"
    assert json.loads(ok(apiclient("get", "motd"))) == {"settings": {"motd": BOOT_MOTD}}
    assert json.loads(ok(apiclient("get", "/os")))["variant_id"] == "aws-dev"



def test_get_of_an_unknown_key_exits_1_naming_it(apiclient):
    missing = apiclient("get", "settings.nope")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("apiclient get: settings.nope: not set")
    # what exists is still printed; the exit status says something was missing
    partly = apiclient("get", "motd", "no-such-thing")
    assert partly.returncode == 1
    assert json.loads(partly.stdout) == {"settings": {"motd": BOOT_MOTD}}
    assert "settings.no-such-thing" in partly.stderr


# ---- set ---------------------------------------------------------------------------------------


def test_set_keypairs(daemon, apiclient):
    result = apiclient(
        "set", "motd=set by keypair", 'settings.ntp.time-servers=["ntp.example.com"]'
    )
    out = ok(result)
    assert "settings.motd" in out and "settings.ntp.time-servers" in out
    assert re.search(r"generation \d+", out)
    assert "Applied: ok" in out
    # the pass has finished when ``set`` returns
    assert motd_file(daemon).read_text().strip() == "set by keypair"
    current = settings(apiclient)
    assert current["motd"] == "set by keypair"
    assert current["ntp"]["time-servers"] == ["ntp.example.com"]
    assert not [t for t in transactions(apiclient) if t.startswith("apiclient-set-")]


def test_set_json(daemon, apiclient):
    out = ok(apiclient("set", "--json", '{"motd": "set by json"}'))
    assert "settings.motd" in out
    assert motd_file(daemon).read_text().strip() == "set by json"
    ok(apiclient("set", "-j", '{"aws": {"region": "eu-west-1"}}'))
    assert settings(apiclient)["aws"]["region"] == "eu-west-1"


def test_set_invalid_value_changes_nothing(apiclient):
    before = live_generation(apiclient)
    result = apiclient("set", "motd=fine", "aws.region=not a region")
    assert result.returncode == 1
    assert result.stderr.startswith("settings.aws.region: ")  # the reason first
    assert result.stderr.rstrip().endswith("(status 400)")
    assert "apiclient-set-" not in result.stderr and "PATCHing" not in result.stderr
    verbose = apiclient("-v", "set", "aws.region=not a region")
    assert verbose.stderr.startswith("settings.aws.region: ")
    assert "(status 400 when PATCHing /settings/keypair?tx=apiclient-set-" in verbose.stderr
    assert settings(apiclient)["motd"] == BOOT_MOTD
    assert live_generation(apiclient) == before
    assert transactions(apiclient) == []


def test_set_null_removes_the_key_and_its_default_comes_back(daemon, apiclient):
    ok(apiclient("set", "motd=null", "ntp.time-servers=[\"ntp.example.com\"]"))
    assert settings(apiclient)["motd"] == DEFAULT_MOTD  # not the string "null"
    assert settings(apiclient)["ntp"]["time-servers"] == ["ntp.example.com"]
    assert motd_file(daemon).read_text().strip() == DEFAULT_MOTD
    assert apiclient("set", "a..b=null").returncode == 1


def test_set_dry_run_prints_the_plan_and_changes_nothing(daemon, apiclient):
    before = live_generation(apiclient)
    out = ok(apiclient("set", "--dry-run", "motd=only a plan"))
    assert f'settings.motd: "{BOOT_MOTD}" -> "only a plan"' in out
    assert "+only a plan" in out and "/etc/motd" in out
    assert live_generation(apiclient) == before
    assert transactions(apiclient) == []
    assert motd_file(daemon).read_text().strip() == BOOT_MOTD
    document = '[settings]\nmotd = "applied dry"\n'
    out = ok(apiclient("apply", "--dry-run", stdin=document))
    assert '-> "applied dry"' in out
    assert live_generation(apiclient) == before and transactions(apiclient) == []


def test_set_tx_stages_without_committing(apiclient):
    before = live_generation(apiclient)
    out = ok(apiclient("set", "--tx", "review", "motd=staged"))
    assert "review" in out
    assert transactions(apiclient) == ["review"]
    assert live_generation(apiclient) == before
    assert '-> "staged"' in ok(apiclient("plan", "--tx", "review"))
    ok(apiclient("-m", "POST", "-u", "/tx/commit_and_apply?tx=review"))
    assert settings(apiclient)["motd"] == "staged"


def test_version_and_help_name_every_subcommand(apiclient):
    version = apiclient("--version")
    assert version.returncode == 0
    assert re.fullmatch(r"apiclient \d+\.\d+\.\d+\n", version.stdout)
    helped = ok(apiclient("--help"))
    for name in ("raw", "get", "set", "apply", "sync", "events", "update"):
        assert re.search(rf"^    {name} ", helped, re.MULTILINE), name
    assert "--dry-run" in ok(apiclient("set", "--help"))


def test_set_needs_pairs_or_json(apiclient):
    assert apiclient("set").returncode == 1
    assert apiclient("set", "novalue").returncode == 1


# ---- apply -------------------------------------------------------------------------------------


def test_apply_toml_files_in_order(daemon, apiclient, tmp_path):
    first = tmp_path / "first.toml"
    first.write_text(
        '[settings]\nmotd = "first"\n[settings.ntp]\ntime-servers = ["a.example.com"]\n'
    )
    second = tmp_path / "second.toml"
    second.write_text('[settings]\nmotd = "second wins"\n')
    out = ok(apiclient("apply", str(first), str(second)))
    assert "settings.motd" in out and "Applied: ok" in out
    current = settings(apiclient)
    assert current["motd"] == "second wins"
    assert current["ntp"]["time-servers"] == ["a.example.com"]
    assert motd_file(daemon).read_text().strip() == "second wins"
    assert transactions(apiclient) == []


def test_apply_stdin(daemon, apiclient):
    ok(apiclient("apply", stdin='[settings]\nmotd = "from stdin"\n'))
    assert motd_file(daemon).read_text().strip() == "from stdin"
    ok(apiclient("apply", "-", stdin='{"settings": {"motd": "json from stdin"}}'))
    assert settings(apiclient)["motd"] == "json from stdin"


def test_apply_yaml_file(apiclient):
    ok(apiclient("apply", "examples/user-data/aws-dev.yaml"))
    assert settings(apiclient)["aws"]["region"]


@pytest.mark.parametrize(
    "bad",
    [
        '[settings]\nmotd = "unterminated\n',  # not TOML
        "[settings]\nmotd = 42\n",  # parses, fails the schema on the server
        'motd = "no settings table"\n',
    ],
    ids=["syntax", "schema", "no-settings"],
)
def test_apply_with_one_bad_document_applies_nothing(apiclient, tmp_path, bad):
    good = tmp_path / "good.toml"
    good.write_text('[settings]\nmotd = "should not land"\n')
    broken = tmp_path / "broken.toml"
    broken.write_text(bad)
    before = live_generation(apiclient)
    result = apiclient("apply", str(good), str(broken))
    assert result.returncode == 1
    assert "broken.toml" in result.stderr
    assert settings(apiclient)["motd"] == BOOT_MOTD
    assert live_generation(apiclient) == before
    assert transactions(apiclient) == []


# ---- plan, status, history, rollback, explain --------------------------------------------------


def test_plan(apiclient):
    wait_ready(apiclient)  # the boot pass wrote /etc/motd: the plan's diff starts from it
    ok(apiclient("-m", "PATCH", "-u", "/settings?tx=review", "-d", '{"motd": "planned"}'))
    out = ok(apiclient("plan", "--tx", "review"))
    assert f'settings.motd: "{BOOT_MOTD}" -> "planned"' in out
    assert "/etc/motd" in out
    assert f"-{BOOT_MOTD}" in out and "+planned" in out  # the unified diff
    assert re.search(r"^  motd: would restart", out, re.MULTILINE)
    raw = json.loads(ok(apiclient("plan", "--tx", "review", "--json")))
    assert raw["settings"] == [{"key": "settings.motd", "old": BOOT_MOTD, "new": "planned"}]
    # a dry run: nothing committed
    assert settings(apiclient)["motd"] == BOOT_MOTD
    assert transactions(apiclient) == ["review"]
    assert "no pending change" in ok(apiclient("plan"))


def test_status(apiclient):
    raw = wait_ready(apiclient)
    out = ok(apiclient("status"))
    assert out.startswith("State:       Ready")
    live = raw["live_generation"]
    assert f"Generations: live {live}, applied {live}" in out
    assert re.search(r"^Last pass #\d+: ok", out, re.MULTILINE)


def test_history(apiclient):
    """A table (header first): generation, local and relative time, the source without its
    generated transaction name, who (the caller's uid and name, from SO_PEERCRED) and what."""
    ok(apiclient("set", "motd=for history"))
    lines = ok(apiclient("history")).splitlines()
    assert lines[0].split() == ["GEN", "WHEN", "SOURCE", "WHO", "WHAT"]
    newest = lines[1]
    assert newest.split()[0] == str(live_generation(apiclient))
    assert re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \((now|\d+ s ago)\) ", newest)
    user = pwd.getpwuid(os.getuid()).pw_name
    assert re.search(rf" api +{re.escape(user)} \(uid {os.getuid()}\) ", newest), newest
    assert f'settings.motd: "{BOOT_MOTD}" -> "for history"' in newest
    assert "apiclient-set-" not in newest
    assert re.search(r" default\+user-data\S* +daemon ", lines[-1])  # the boot generation
    assert len(ok(apiclient("history", "--limit", "1")).splitlines()) == 2
    raw = json.loads(ok(apiclient("history", "--json", "--limit", "1")))[0]
    assert raw["actor"] == {"uid": os.getuid(), "user": user}
    assert raw["source"].startswith("api:apiclient-set-")


def test_rollback(daemon, apiclient):
    ok(apiclient("set", "motd=mistake"))
    assert motd_file(daemon).read_text().strip() == "mistake"
    out = ok(apiclient("rollback"))
    assert "settings.motd" in out and "Applied: ok" in out
    assert settings(apiclient)["motd"] == BOOT_MOTD
    assert motd_file(daemon).read_text().strip() == BOOT_MOTD
    # explicit generation: back to the "mistake"
    mistake = json.loads(ok(apiclient("history", "--json")))[1]["generation"]
    ok(apiclient("rollback", "--generation", str(mistake)))
    assert settings(apiclient)["motd"] == "mistake"
    bad = apiclient("rollback", "--generation", "999")
    assert bad.returncode == 1 and "(status 404)" in bad.stderr


def test_explain_names_the_source(apiclient):
    out = ok(apiclient("explain", "motd"))
    assert out.startswith(f'settings.motd = "{BOOT_MOTD}"')
    assert re.search(r"source:\s+user-data", out)
    ok(apiclient("set", "motd=explained"))
    out = ok(apiclient("explain", "settings.motd"))
    assert re.search(r"source:\s+api:apiclient-set-", out)
    assert f'"{BOOT_MOTD}" -> "explained"' in out  # the key's history
    assert "user-data" in out
    missing = apiclient("explain", "no-such-key")
    assert missing.returncode == 1
    assert "not set" in missing.stdout


# ---- reboot, update ----------------------------------------------------------------------------


def test_reboot_in_a_sandbox_is_accepted(apiclient):
    assert "Reboot requested" in ok(apiclient("reboot"))


def test_update_check_reports_the_server(apiclient):
    result = apiclient("update", "check")
    if result.returncode == 0:  # the update endpoints exist
        assert "update_state" in json.loads(result.stdout)
    else:
        assert result.returncode == 1
        assert "(status " in result.stderr


# ---- events ------------------------------------------------------------------------------------


def test_events_lists_and_follows(apiclient, daemon):
    listed = ok(apiclient("events")).splitlines()
    assert any(" started " in line for line in listed)
    as_json = [json.loads(line) for line in ok(apiclient("events", "--json")).splitlines()]
    newest = max(e["seq"] for e in as_json)
    assert ok(apiclient("events", "--since", str(newest))) == ""

    follower = subprocess.Popen(
        [sys.executable, "-m", "reconciler.apiclient", "events", "--follow", "--json",
         "--since", str(newest), "--interval", "0.1"],
        cwd=REPO, env={**os.environ, "APICLIENT_SOCKET": str(daemon.socket)},
        stdout=subprocess.PIPE, text=True,
    )
    try:
        ok(apiclient("set", "motd=followed"))
        seen: list[dict] = []
        with selectors.DefaultSelector() as selector:
            selector.register(follower.stdout, selectors.EVENT_READ)

            def committed() -> bool:
                if selector.select(timeout=0.1):
                    seen.append(json.loads(follower.stdout.readline()))
                return any(e["type"] == "commit" for e in seen)

            eventually(committed, timeout=30)
        assert all(e["seq"] > newest for e in seen)
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(timeout=10)


# ---- sync, --force (a git source) --------------------------------------------------------------


def test_sync_and_force_with_a_git_source(tmp_path):
    from tests.test_gitops import Fleet, start

    fleet = Fleet(tmp_path)
    daemon = start(tmp_path, fleet)
    try:
        synced = daemon.apiclient("sync")
        assert synced.returncode == 0, synced.stderr
        assert synced.stdout.startswith("Git: Synced at ")

        refused = daemon.apiclient("set", "motd=mine")
        assert refused.returncode == 1
        assert "managed by git" in refused.stderr and "(status 409)" in refused.stderr
        ok(daemon.apiclient("set", "--force", "motd=mine"))
        assert (daemon.root / "etc/motd").read_text().strip() == "mine"

        good = fleet.git("rev-parse", "HEAD")
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = 5\n')
        bad = fleet.commit("not text")
        invalid = daemon.apiclient("sync")
        assert invalid.returncode == 1
        assert invalid.stderr.startswith(f"Git: Invalid at {good[:12]}: ")
        assert bad[:12] in invalid.stderr
        raw = daemon.apiclient("sync", "--json")
        assert raw.returncode == 1
        assert json.loads(raw.stdout)["sync"]["condition"] == "Invalid"
    finally:
        daemon.stop()


def test_sync_without_a_git_source_fails(apiclient):
    result = apiclient("sync")
    assert result.returncode == 1
    assert "settings.gitops.url is not set" in result.stderr


# ---- the HTTP/1.1 client (hostcore/unixhttp.py) against a real HTTP server -----------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[list[int]] = []

    def setup(self) -> None:
        super().setup()
        self.connections.append(id(self.connection))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello, ", b"chunked ", b"world" * 3000):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif self.path == "/until-close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"all of it")
            self.close_connection = True
        elif self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"short")
            self.close_connection = True
        elif self.path == "/no-content":
            self.send_response(204)
            self.end_headers()
        else:
            body = f"{self.command} {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Twice", "a")
            self.send_header("X-Twice", "b")
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201, "Made")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_socket(tmp_path: Path) -> Iterator[str]:
    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    path = str(tmp_path / "http.sock")
    _Handler.connections = []
    server = Server(path, _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_unixhttp_content_length_keep_alive_and_headers(http_socket):
    conn = unixhttp.UnixHTTPConnection(http_socket, timeout=10)
    try:
        first = conn.request("GET", "/one?x=1")
        assert (first.status, first.reason, first.body) == (200, "OK", b"GET /one?x=1")
        assert first.header("x-twice") == "a, b" and first.header("X-TWICE") == "a, b"
        second = conn.request("POST", "/echo", b'{"a": 1}', {"Content-Type": "application/json"})
        assert (second.status, second.reason, second.body) == (201, "Made", b'{"a": 1}')
        empty = conn.request("POST", "/echo")  # Content-Length: 0
        assert empty.body == b""
        assert conn.request("GET", "/no-content").body == b""
        assert len(set(_Handler.connections)) == 1  # one kept-alive connection for all four
    finally:
        conn.close()


def test_unixhttp_chunked_and_until_close_bodies(http_socket):
    conn = unixhttp.UnixHTTPConnection(http_socket, timeout=10)
    try:
        chunked = conn.request("GET", "/chunked")
        assert chunked.body == b"hello, chunked " + b"world" * 3000
        assert conn.connected
        closing = conn.request("GET", "/until-close")
        assert closing.body == b"all of it" and closing.will_close
        assert not conn.connected
        assert conn.request("GET", "/after").body == b"GET /after"  # reconnects by itself
    finally:
        conn.close()


def test_unixhttp_truncated_body_and_bad_input_are_errors(http_socket, tmp_path):
    conn = unixhttp.UnixHTTPConnection(http_socket, timeout=10)
    with pytest.raises(unixhttp.ProtocolError, match="after 5 of 100 bytes"):
        conn.request("GET", "/truncated")
    assert not conn.connected
    with pytest.raises(ValueError):
        conn.request("GET", "/a b")
    with pytest.raises(ValueError):
        conn.request("GET", "/", headers={"X": "a\r\nInjected: 1"})
    with pytest.raises(FileNotFoundError):
        unixhttp.UnixHTTPConnection(str(tmp_path / "none.sock")).request("GET", "/")


def test_unixhttp_not_http_is_a_protocol_error(tmp_path):
    path = str(tmp_path / "garbage.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def answer_garbage() -> None:
        peer, _ = listener.accept()
        peer.recv(65536)
        peer.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        peer.close()

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        with pytest.raises(unixhttp.ProtocolError, match="not an HTTP/1.x status line"):
            unixhttp.UnixHTTPConnection(path, timeout=10).request("GET", "/")
    finally:
        thread.join(timeout=10)
        listener.close()


def test_get_imports_no_http_client_or_argparse(apiclient, daemon):
    """The start-up budget (bench/bench_apiclient.py): nothing heavy on ``get``'s path."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "reconciler.apiclient", "get", "motd"],
        cwd=REPO, env={**os.environ, "APICLIENT_SOCKET": str(daemon.socket)},
        capture_output=True, text=True, check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    for heavy in ("http.client", "email", "argparse", "urllib.parse", "socket", "shutil"):
        assert heavy not in imported or heavy in _baseline_imports(), heavy


def _baseline_imports() -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"],
                            capture_output=True, text=True, check=True)
    return {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}


def test_the_client_runs_from_the_toolbox_zipapp_alone(daemon, tmp_path):
    """The zipapp host containers get (reconciler/toolbox.py), without the installed package."""
    from reconciler import toolbox

    tools = tmp_path / "tools.pyz"
    tools.write_bytes(toolbox.zipapp_bytes())
    result = subprocess.run(
        [sys.executable, "-S", str(tools), "get", "motd"], cwd=tmp_path,
        env={"APICLIENT_SOCKET": str(daemon.socket)}, capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"settings": {"motd": BOOT_MOTD}}
