"""Security: socket permissions and the access policy, template sandbox, path traversal, body size,
and secrets (``x-secret`` settings) redacted everywhere but GET /settings. Real daemons, real
sockets, real other uids (a forked child that drops to them); nothing is mocked."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.api.server import AccessPolicy
from reconciler.containers.planner import (
    INVALID,
    desired_containers,
    entry_problems,
    plan_containers,
)
from reconciler.redact import REDACTED, Scrubber, redact_change, redact_plan, secret_values
from reconciler.schema import Schema
from reconciler.store import Store
from renderers.catalog import Catalog, CatalogError
from tests.daemon import REPO, Daemon, cli, eventually
from updates.tuf_client import target_filename

AWS_DEV = str(REPO / "examples/user-data/aws-dev.toml")
NOBODY = 65534
USER_DATA_KEY = "settings.host-containers.admin.user-data"


def _example_secret() -> str:
    import tomllib

    with open(AWS_DEV, "rb") as f:
        return tomllib.load(f)["settings"]["host-containers"]["admin"]["user-data"]


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory other uids may traverse (pytest's tmp dirs are 0700 root): the socket's home."""
    path = Path(tempfile.mkdtemp(prefix="reconciler-security-"))
    path.chmod(0o711)
    (path / "state").mkdir(mode=0o711)
    (path / "state").chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def request_as(uid: int, gid: int, sock: Path, method: str = "GET", path: str = "/os",
               groups: tuple[int, ...] = ()) -> tuple[int | None, str]:
    """One HTTP request from a forked child running as ``uid``/``gid`` (supplementary ``groups``).

    Returns (status, body), or (None, "errno N") when the child could not even connect.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges for good, talk raw HTTP/1.1, report, exit
        code = 0
        try:
            os.close(read_end)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            try:
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.settimeout(20)
                client.connect(str(sock))
                client.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
                               "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := client.recv(65536):
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                out = head.split(b"\r\n", 1)[0].split()[1] + b"\n" + body
            except OSError as error:
                out = f"errno {error.errno}".encode()
            os.write(write_end, out)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    text = b"".join(chunks).decode(errors="replace")
    if text.startswith("errno"):
        return None, text
    code, _, body = text.partition("\n")
    return int(code), body


# --- socket permissions and the access policy ----------------------------------------------------


def test_socket_is_0660_and_other_uids_outside_its_group_cannot_connect(reachable_dir):
    daemon = Daemon(reachable_dir / "state", ["--variant", "aws-dev"])
    try:
        mode = daemon.socket.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
        # no policy: root is served, a uid outside the socket's group cannot even connect
        assert daemon.request("GET", "/os")[0] == 200
        status, detail = request_as(NOBODY, NOBODY, daemon.socket)
        assert status is None and detail == "errno 13", detail  # EACCES from the 0660 socket
        # no policy and in the socket's group: served (the socket is the only gate by default)
        os.chown(daemon.socket, -1, NOBODY)
        assert request_as(NOBODY, NOBODY, daemon.socket)[0] == 200
    finally:
        daemon.stop()


def test_access_policy_refuses_other_uids_with_403(reachable_dir):
    daemon = Daemon(reachable_dir / "state",
                    ["--variant", "aws-dev", "--allowed-uids", "4242", "--allowed-gids", "4343"])
    try:
        os.chown(daemon.socket, -1, NOBODY)  # the socket's group: every caller below may connect
        before = daemon.ok("GET", "/settings")
        # in the socket's group, but neither the uid nor the gid is allowed: 403, for reads...
        status, body = request_as(NOBODY, NOBODY, daemon.socket, groups=(NOBODY,))
        assert status == 403 and f"uid {NOBODY}" in body
        assert request_as(NOBODY, NOBODY, daemon.socket, "GET", "/settings")[0] == 403
        # ... and writes, which change nothing
        assert request_as(NOBODY, NOBODY, daemon.socket, "POST", "/tx/commit")[0] == 403
        assert request_as(NOBODY, NOBODY, daemon.socket, "DELETE", "/tx")[0] == 403
        assert daemon.ok("GET", "/settings") == before
        # an allowed uid, an allowed gid, and root are served
        assert request_as(4242, NOBODY, daemon.socket)[0] == 200
        assert request_as(5000, 4343, daemon.socket, groups=(NOBODY,))[0] == 200
        assert daemon.request("GET", "/os")[0] == 200
        logs = daemon.logs()
        assert "api access refused" in logs
        audit = [json.loads(line) for line in logs.splitlines()
                 if line.startswith("{") and '"api write"' in line]
        assert any(a["uid"] == NOBODY and a["status"] == 403 for a in audit)
    finally:
        daemon.stop()


def test_the_audit_line_of_a_commit_names_the_generation_it_made(tmp_path):
    daemon = Daemon(tmp_path / "state")
    try:
        daemon.ok("PATCH", "/settings?tx=audited", {"motd": "audited"})
        daemon.ok("POST", "/tx/commit_and_apply?tx=audited")
        made = daemon.ok("GET", "/status")["live_generation"]
        logs = daemon.logs()
    finally:
        daemon.stop()
    audit = [json.loads(line) for line in logs.splitlines()
             if line.startswith("{") and '"api write"' in line]
    commits = [a for a in audit if a["path"].startswith("/tx/commit_and_apply")]
    assert [a["generation"] for a in commits] == [made], audit
    assert commits[0]["uid"] == os.getuid()


def test_access_policy_rules():
    policy = AccessPolicy.of([1000], None)
    assert AccessPolicy.of(None, None) is None
    assert policy.allows({"pid": 1, "uid": 0, "gid": 5})  # root, always
    assert policy.allows({"pid": 1, "uid": 1000, "gid": 5})
    assert not policy.allows({"pid": 1, "uid": 1001, "gid": 5})
    assert not policy.allows({})  # no SO_PEERCRED (not a Unix socket): refused
    assert AccessPolicy.of(None, [7]).allows({"pid": 1, "uid": 1001, "gid": 7})


@pytest.mark.parametrize("value", ["abc", "-1", ",", "1,,x"])
def test_allowed_uids_must_be_ids(tmp_path, value):
    result = cli("serve", "--state-dir", tmp_path, "--allowed-uids", value)
    assert result.returncode == 2 and "--allowed-uids" in result.stderr


# --- template sandbox -----------------------------------------------------------------------------

ESCAPES = {
    "class": "{{ ''.__class__ }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler": "{{ cycler.__init__.__globals__ }}",
    "joiner": "{{ joiner.__init__.__globals__.os }}",
    "lipsum": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "namespace": "{{ namespace.__init__.__globals__ }}",
    "self": "{{ self._TemplateReference__context }}",
    "helper-globals": "{{ base64_decode.__globals__ }}",
    "setting-class": "{{ settings.motd.__class__ }}",
    "setting-method-globals": "{{ settings.motd.upper.__globals__ }}",
    "attr-filter": "{{ settings.motd | attr('__class__') }}",
    "settings-items": "{{ settings.items() }}",
    "format": "{{ '{0.__class__.__init__.__globals__}'.format(settings.motd) }}",
    "format-map": "{{ '{x.__class__}'.format_map({'x': settings.motd}) }}",
    "mutate": "{% set seen = [] %}{{ seen.append(1) }}{{ seen }}",
    "huge-range": "{{ range(10 ** 9) | list | length }}",
    "config": "{{ config.items() }}",
}
LEAKS = ("<class", "__globals__", "built-in", "function ", "module", "uid=", "_TemplateReference")


def _renderers(tmp_path: Path, files: dict[str, str]) -> Path:
    """A catalog with one file (and a command-less service) per template."""
    renderers = tmp_path / "renderers"
    (renderers / "templates").mkdir(parents=True)
    lines = []
    for name, template in files.items():
        (renderers / "templates" / f"{name}.j2").write_text(template)
        lines += [f"[configuration-files.{name}]", f'path = "/etc/sandbox/{name}"',
                  f'template = "{name}.j2"', "", f"[services.{name}]",
                  f'configuration-files = ["{name}"]', 'affected-by = ["settings.motd"]',
                  "restart-commands = []", ""]
    (renderers / "metadata.toml").write_text("\n".join(lines))
    return renderers


def test_template_escapes_refused_in_a_real_daemon(tmp_path):
    renderers = _renderers(tmp_path, {**ESCAPES, "good": "{{ settings.motd }}\n"})
    daemon = Daemon(tmp_path / "state", ["--variant", "aws-dev", "--user-data", AWS_DEV,
                                         "--renderers", str(renderers)])
    try:
        status = eventually(lambda: (s := daemon.ok("GET", "/status"))["last_receipt"] and s)
        assert status["state"] == "Degraded"
        reasons = "\n".join(status["conditions"][2]["reasons"])
        out = daemon.root / "etc/sandbox"
        assert (out / "good").read_text() == "hello from the fleet\n"  # isolated from the rest
        for name in ESCAPES:
            assert not (out / name).exists(), f"{name} was rendered: {(out / name).read_text()}"
            assert name in reasons
        assert "unsafe" in reasons
        written = "".join(p.read_text() for p in daemon.root.rglob("*") if p.is_file())
        assert not any(leak in written for leak in LEAKS)
        plan = daemon.ok("POST", "/tx/plan")
        assert set(plan["errors"]) == set(ESCAPES)
        assert daemon.request("GET", "/os")[0] == 200  # and the daemon is still up
    finally:
        daemon.stop()


def test_setting_values_with_template_syntax_are_rendered_literally(tmp_path):
    daemon = Daemon(tmp_path / "state", ["--variant", "aws-dev", "--user-data", AWS_DEV])
    try:
        for value in ["{{ 7 * 7 }} {{ ''.__class__ }}", "{% for x in range(3) %}{{x}}{% endfor %}",
                      "{{ cycler.__init__.__globals__ }}", "{# comment #}{% raw %}x"]:
            daemon.ok("PATCH", "/settings", {"motd": value})
            receipt = daemon.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]
            assert receipt["ok"], receipt
            assert (daemon.root / "etc/motd").read_text() == value + "\n"
    finally:
        daemon.stop()


# --- path traversal -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "-x", "a\x00b", "x/../../etc", ""])
def test_host_container_names_with_paths_refused_by_the_pure_planner(name):
    entries = {name: {"enabled": True, "source": "registry.example.com/admin:v1"}}
    assert entry_problems(name, entries[name])  # the schema's rule, asked by the planner
    wanted, invalid = desired_containers(entries)
    assert name not in wanted and name in invalid
    actions = plan_containers(entries, [])
    assert [(a.name, a.action) for a in actions] == [(name, INVALID)]


def test_host_container_names_with_paths_refused_by_the_api(tmp_path):
    daemon = Daemon(tmp_path / "state", ["--variant", "aws-dev"])
    try:
        for name in ["../x", "a/b", "..", ".", "x y", "a\\b"]:
            status, body = daemon.request("PATCH", "/settings", {"host-containers": {
                name: {"enabled": True, "source": "registry.example.com/admin:v1"}}})
            assert status == 400, (name, status, body)
            assert "host-containers" in body or repr(name) in body
        assert daemon.request("GET", "/tx")[1] == {}  # nothing pending
        assert not (daemon.state_dir / "containers").exists() or not any(
            ".." in str(p) for p in (daemon.state_dir / "containers").rglob("*"))
    finally:
        daemon.stop()


@pytest.mark.parametrize(("path", "template"), [
    ("/etc/../../x", "motd.j2"), ("etc/motd", "motd.j2"), ("//etc/motd", "motd.j2"),
    ("/etc/./motd", "motd.j2"), ("/", "motd.j2"), ("/etc/motd\x00x", "motd.j2"),
    ("/etc/motd", "../../../etc/passwd"), ("/etc/motd", "/etc/passwd"),
])
def test_renderer_paths_escaping_refused(tmp_path, path, template):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates/motd.j2").write_text("{{ settings.motd }}\n")
    (tmp_path / "metadata.toml").write_text(
        f"[configuration-files.f]\npath = {json.dumps(path)}\ntemplate = {json.dumps(template)}\n")
    with pytest.raises(CatalogError):
        Catalog.load("aws-dev", tmp_path / "metadata.toml", tmp_path / "templates")
    # and a daemon given that catalog refuses to start, naming it (plan on this missing state
    # dir refuses earlier: read-only commands never create one)
    result = cli("serve", "--once", "--state-dir", tmp_path / "state", "--renderers", tmp_path)
    assert result.returncode == 2 and "renderer metadata" in result.stderr


def test_symlinks_out_of_the_root_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "motd").write_text("keep\n")
    state = tmp_path / "state"
    (state / "root").mkdir(parents=True)
    (state / "root/etc").symlink_to(outside)  # /etc of the root points outside it
    daemon = Daemon(state, ["--variant", "aws-dev", "--user-data", AWS_DEV])
    try:
        status = eventually(lambda: (s := daemon.ok("GET", "/status"))["last_receipt"] and s)
        assert status["state"] == "Degraded"
        assert "outside the root" in "\n".join(status["conditions"][2]["reasons"])
        assert sorted(p.name for p in outside.iterdir()) == ["motd"]
        assert (outside / "motd").read_text() == "keep\n"
    finally:
        daemon.stop()


@given(name=st.one_of(st.text(max_size=40), st.sampled_from(
    ["../../etc/passwd", "..", ".", "/etc/passwd", "a/../../b", "%2e%2e", "..\\x"])))
@settings(max_examples=200, deadline=None)
def test_tuf_target_file_names_stay_in_their_directory(name):
    if not name:
        with pytest.raises(ValueError):
            target_filename(name)
        return
    local = target_filename(name)
    assert "/" not in local and "\x00" not in local and local not in ("", ".", "..")
    base = Path("/cache/targets")
    assert (base / local).resolve().parent == base


def test_tuf_target_names_with_paths_refused(tmp_path):
    from updates import updata
    from updates.errors import TargetNotFoundError
    from updates.fetcher import UpdogFetcher
    from updates.repo import RepoError, Repository
    from updates.tuf_client import TufClient

    repo = tmp_path / "repo"
    assert updata.main(["create", str(repo)]) == 0
    opened = Repository.open(repo)
    for bad in ["../../etc/passwd", "/etc/passwd", "a/../../b", ""]:
        with pytest.raises(RepoError):
            opened.add_target(bad, b"x")
    client = TufClient(tmp_path / "cache", f"{repo.as_uri()}/metadata/",
                       trusted_root=(repo / "metadata/1.root.json").read_bytes(),
                       targets_base_url=f"{repo.as_uri()}/targets/", fetcher=UpdogFetcher({}))
    with client, pytest.raises(TargetNotFoundError):
        client.get_target("../../etc/passwd")
    assert not (tmp_path / "etc").exists()


# --- body size ------------------------------------------------------------------------------------


def test_oversized_bodies_refused_with_413(tmp_path):
    daemon = Daemon(tmp_path / "state", ["--variant", "aws-dev"])
    try:
        big = json.dumps({"motd": "x" * (2 << 20)}).encode()
        for path in ["/settings", "/settings/keypair"]:
            status, body = daemon.request("PATCH", path, raw=big)
            assert status == 413, (path, status, body)
        assert daemon.request("GET", "/tx")[1] == {}
        assert daemon.request("GET", "/os")[0] == 200
    finally:
        daemon.stop()


# --- secrets --------------------------------------------------------------------------------------

LEAKY_METADATA = """
[configuration-files.motd]
path = "/etc/motd"
template = "motd.j2"

[configuration-files.agent]
path = "/etc/agent.conf"
template = "agent.j2"
mode = "0600"

[services.motd]
configuration-files = ["motd"]
affected-by = ["settings.motd"]
restart-commands = []

[services.agent]
# a service that quotes its whole configuration when it fails, as many do
configuration-files = ["agent"]
affected-by = ["settings.host-containers"]
restart-commands = [["{python}", "-c", "{script}", "{root}/etc/agent.conf"]]
sandbox-safe = true
"""
QUOTING_SERVICE = "import sys; print('bad config:', open(sys.argv[1]).read()); sys.exit(3)"
# (containers without user-data, such as the default control container, carry no token)
AGENT_TEMPLATE = """{% for name, c in settings["host-containers"] | dictsort
    if not is_missing(c["user-data"]) %}
{{ name }}.token = {{ c["user-data"] }}
{{ name }}.decoded = {{ base64_decode(c["user-data"]) }}
{% endfor %}"""


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        decoded = base64.b64decode(secret).decode()
        assert decoded not in text and json.dumps(decoded)[1:-1] not in text


def test_secrets_redacted_in_logs_events_plan_history_but_not_settings(tmp_path,
                                                                       scratch_renderers):
    old = _example_secret()
    new_text = "token: s3cr3t-n3w-value-0f-the-admin"
    new = base64.b64encode(new_text.encode()).decode()
    state = tmp_path / "state"
    renderers = scratch_renderers(
        LEAKY_METADATA, {"motd.j2": "{{ settings.motd }}\n", "agent.j2": AGENT_TEMPLATE},
        root=state / "root", script=QUOTING_SERVICE)
    args = ["--variant", "aws-dev", "--user-data", AWS_DEV, "--renderers", str(renderers)]
    daemon = Daemon(state, args)
    try:
        eventually(lambda: daemon.ok("GET", "/status")["last_receipt"])
        # the plan: settings change and the diff of the file carrying the secret
        daemon.ok("PATCH", "/settings?tx=rotate",
                  {"host-containers": {"admin": {"user-data": new}}})
        plan = daemon.ok("POST", "/tx/plan?tx=rotate")
        assert {"key": USER_DATA_KEY, "old": REDACTED, "new": REDACTED} in plan["settings"]
        (agent,) = [f for f in plan["files"] if f["name"] == "agent"]
        assert agent["diff"].count(REDACTED) >= 2 and "admin.token" in agent["diff"]
        _assert_no_secret(json.dumps(plan), old, new)
        # apply: the service fails quoting its file; its output is scrubbed wherever it goes
        answer = daemon.ok("POST", "/tx/commit_and_apply?tx=rotate&wait=true")
        assert not answer["receipt"]["ok"]
        assert REDACTED in json.dumps(answer["receipt"])
        events = daemon.ok("GET", "/events")
        assert any(e["type"] == "failure" and "bad config" in e["data"]["message"] for e in events)
        status = daemon.ok("GET", "/status")
        generations = daemon.ok("GET", "/generations")
        provenance = daemon.ok("GET", f"/provenance?keys={USER_DATA_KEY}&history=true")
        assert provenance[USER_DATA_KEY]["value"] == REDACTED
        assert {(h["old"], h["new"]) for h in provenance[USER_DATA_KEY]["history"]} == {
            (REDACTED, REDACTED), (None, REDACTED)}
        assert any(c["key"] == USER_DATA_KEY and c["new"] == REDACTED
                   for g in generations for c in g["changes"])
        for view in (answer, events, status, generations, provenance):
            _assert_no_secret(json.dumps(view), old, new)
        # an authorized caller still reads the value, as in Bottlerocket
        current = daemon.ok("GET", "/settings?keys=" + USER_DATA_KEY)
        assert current["host-containers"]["admin"]["user-data"] == new
        assert new_text in (state / "root/etc/agent.conf").read_text()  # the file has it
    finally:
        daemon.stop()
    logs = (tmp_path / "state.log").read_text()
    assert "bad config" in logs and REDACTED in logs
    _assert_no_secret(logs, old, new)
    # `reconciler plan` offline: the file drifted (emptied by hand); its diff shows no secret
    (state / "root/etc/agent.conf").write_text("")
    result = cli("plan", "--json", "--state-dir", state, "--renderers", renderers)
    assert result.returncode == 0, result.stderr
    offline = json.loads(result.stdout)
    (agent,) = [f for f in offline["files"] if f["name"] == "agent"]
    assert "+admin.token = (redacted)" in agent["diff"]
    _assert_no_secret(result.stdout + result.stderr, old, new)


def test_redaction_helpers():
    schema = Schema.load("aws-dev")
    settings_ = {"motd": "hi", "host-containers": {
        "a": {"source": "s", "user-data": "c2VjcmV0LXZhbHVl"},
        "b": {"source": "t", "user-data": "QQ=="}}}
    assert secret_values(schema, settings_) == {"c2VjcmV0LXZhbHVl", "QQ=="}
    change = {"key": "settings.host-containers.a.user-data", "old": None, "new": "x"}
    assert redact_change(schema, change) == {**change, "new": REDACTED}
    assert redact_change(schema, {"key": "settings.motd", "old": "a", "new": "b"})["new"] == "b"
    subtree = {"key": "settings.host-containers.a", "old": None,
               "new": {"source": "s", "user-data": "x"}}
    assert redact_change(schema, subtree)["new"] == {"source": "s", "user-data": REDACTED}
    # a short secret cannot be searched for in free text: the whole diff that holds it goes
    plan = {"files": [{"name": "f", "diff": "--- a\n+++ b\n+password = ab\n"},
                      {"name": "g", "diff": "--- a\n+++ b\n+motd = hi\n"}]}
    redacted = redact_plan(schema, plan, {"ab"})
    assert redacted["files"][0]["diff"] == REDACTED
    assert redacted["files"][1] == plan["files"][1]
    scrubber = Scrubber()
    scrubber.learn(["c2VjcmV0LXZhbHVl"])
    assert scrubber.scrub({"m": ["x c2VjcmV0LXZhbHVl secret-value y"]}) == {
        "m": [f"x {REDACTED} {REDACTED} y"]}


def test_the_scrubber_learns_each_commits_secrets_reading_only_what_changed(tmp_path):
    """After its first read of the secret sections, a tracked scrubber reads only the keys the
    new generations changed; a secret committed by any source (not through the API's PATCH,
    which teaches it too) is still scrubbed from the next log line, and earlier ones stay."""
    schema = Schema.load("aws-k8s")
    with Store(tmp_path / "store.db") as store:
        store.add_patch("a", {"kubernetes": {"bootstrap-token": "abcdef.0123456789abcdef"}}, "a",
                        schema)
        store.commit("a", schema)
        scrubber = Scrubber()
        scrubber.track(schema, store)
        assert scrubber.scrub("abcdef.0123456789abcdef") == REDACTED
        statements: list[str] = []
        store.add_patch("b", {"kubernetes": {"bootstrap-token": "zyxwvu.9876543210zyxwvu"}}, "b",
                        schema)
        store.commit("b", schema)
        store.trace(statements.append)
        assert scrubber.scrub("a zyxwvu.9876543210zyxwvu b") == f"a {REDACTED} b"
        store.trace(None)
        assert len(statements) == 1 and "FROM changes" in statements[0], statements
        assert scrubber.scrub("abcdef.0123456789abcdef") == REDACTED
