"""Faults of the adversarial trial (issue 19), each against the real daemon and real parts:
a full tmpfs, a store another process holds locked, a remote that never answers, idle clients,
malicious values, two daemons, a FIFO. After each fault is removed the daemon converges by
itself, and status said what was wrong while it was wrong."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hostcore.documents import DocumentError, load_document
from reconciler import store as store_module
from reconciler.schema import Schema
from reconciler.store import PendingLimit, Store
from reconciler.supervise import LoopHealth, supervised_thread
from tests.daemon import Daemon, UnixHTTPConnection, cli, eventually
from tests.faultutil import Blackhole, fill, free_bytes, small_fs, store_locked
from tests.test_gitops import Fleet, motd, start, sync


@pytest.fixture
def fleet(tmp_path) -> Fleet:
    return Fleet(tmp_path)


def status(d: Daemon) -> dict:
    return d.ok("GET", "/status")


def stopped_cleanly(d: Daemon) -> None:
    """SIGTERM ends the daemon (within Daemon.stop's 20 s, else it is SIGKILLed: -9), the
    shutdown ran to its end and the socket is gone."""
    assert d.stop() == 0, d.logs()
    assert not d.socket.exists()
    assert '"stopped"' in d.logs()


# ---- 1. every background loop survives any error, reports it, retries --------------------------


def test_git_source_survives_a_store_error_and_converges_by_itself(tmp_path, fleet):
    d = start(tmp_path, fleet)
    try:
        eventually(lambda: motd(d).startswith("web-1: serving the fleet"))
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "after the lock"\n')
        fleet.commit("new motd")
        with store_locked(d.state_dir / "store.db"):
            answer = sync(d, 502)["sync"]  # answered (it hung for good before)
            assert answer["condition"] == "Failed"
            assert "database is locked" in answer["reason"]
            assert status(d)["gitops"]["condition"] == "Failed"
        # nobody asks again: the loop's own retry applies the commit
        eventually(lambda: motd(d).startswith("after the lock"), timeout=30)
        assert status(d)["gitops"]["condition"] == "Synced"
        assert status(d)["loops"]["git"]["state"] == "running"
    finally:
        d.stop()
    assert not d.socket.exists() and '"stopped"' in d.logs()


def test_desired_files_loop_survives_a_store_error_and_converges_by_itself(tmp_path):
    desired = tmp_path / "desired.toml"
    desired.write_text('[settings]\nmotd = "first"\n')
    d = Daemon(tmp_path / "host", ["--desired", str(desired)])
    try:
        eventually(lambda: motd(d).startswith("first"))
        with store_locked(d.state_dir / "store.db"):
            desired.write_text('[settings]\nmotd = "second"\n')
            eventually(lambda: status(d)["desired_files"]["condition"] == "Failed", timeout=30)
            view = status(d)
            assert "database is locked" in view["desired_files"]["reason"]
            assert view["loops"]["desired-files"]["errors"] >= 1
        # the file is not touched again: the retry alone applies it
        eventually(lambda: motd(d).startswith("second"), timeout=30)
        assert status(d)["desired_files"]["condition"] == "Applied"
    finally:
        d.stop()
    assert not d.socket.exists()


def test_a_failing_background_thread_reports_instead_of_dying_silently():
    health = LoopHealth("boot-gate")
    seen: list[BaseException] = []
    thread = supervised_thread(health, lambda: int(float("nan")), seen.append)
    thread.join(10)
    assert health.as_dict()["state"] == "failed"
    assert "cannot convert float NaN to integer" in health.as_dict()["last_error"]
    assert isinstance(seen[0], ValueError)


# ---- 3./4. git: deadlines, cancellation, stale locks, temporary objects -------------------------


def test_sigterm_during_a_hanging_fetch_is_prompt_and_status_says_fetching(tmp_path):
    remote = Blackhole()
    user_data = tmp_path / "ud.toml"
    user_data.write_text(
        f'[settings.gitops]\nurl = "git://127.0.0.1:{remote.port}/fleet.git"\ninterval = 3600\n')
    d = Daemon(tmp_path / "host", ["--user-data", str(user_data)])
    try:
        eventually(lambda: remote.held, timeout=30)  # the fetch is connected and waiting
        gitops = status(d)["gitops"]
        assert gitops["condition"] == "Fetching" and gitops["fetching_since"]
        assert gitops["reason"].startswith("fetching since ")
    finally:
        code = d.stop()  # before: the fetch's 120 s timeout, so SIGKILL after Daemon.stop's 20 s
        remote.close()
    assert code == 0, d.logs()
    assert not d.socket.exists()


def test_failed_fetch_on_a_full_disk_leaves_no_temporary_objects(tmp_path, fleet):
    with small_fs(tmp_path / "small", "16m") as small:
        d = start(small, fleet)
        try:
            (fleet.work / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024))
            fleet.commit("a big blob")
            filler = fill(small, leave=3 * 1024 * 1024)
            before = free_bytes(small)
            answer = sync(d, 502)["sync"]
            assert answer["condition"] == "Failed"
            garbage = [p for p in (d.state_dir / "git").rglob("*")
                       if p.name.startswith(("tmp_obj_", "tmp_pack_", "tmp_idx_"))]
            assert garbage == []
            assert free_bytes(small) >= before - 256 * 1024  # the space the fetch used came back
            filler.unlink()
            eventually(lambda: status(d)["gitops"]["condition"] == "Synced", timeout=60)
        finally:
            stopped_cleanly(d)


def test_symlink_and_oversized_layers_are_named_as_such(tmp_path, fleet):
    layer = fleet.work / "clusters/prod/hosts/web-1.toml"
    layer.unlink()
    layer.symlink_to("../common.toml")
    fleet.commit("a symlinked layer")
    d = start(tmp_path, fleet)
    try:
        gitops = status(d)["gitops"]
        assert gitops["condition"] == "Invalid"
        assert "web-1.toml: is a symbolic link" in gitops["reason"]
    finally:
        stopped_cleanly(d)


# ---- 8. signed commits: no rollback, no freeze -------------------------------------------------


def _signing(tmp_path: Path, fleet: Fleet) -> str:
    key = tmp_path / "signer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"fleet@example.com {(tmp_path / 'signer.pub').read_text()}")
    fleet.git("config", "gpg.format", "ssh")
    fleet.git("config", "user.signingkey", str(key))
    return f'verify = {{ mode = "ssh", allowed-signers = "{signers}" }}\n'


def test_verified_source_refuses_a_rollback_to_an_older_signed_commit(tmp_path, fleet):
    verify = _signing(tmp_path, fleet)
    fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "v1: old config"\n')
    v1 = fleet.commit("v1", "-S")
    d = start(tmp_path, fleet, extra=verify)
    try:
        eventually(lambda: motd(d).startswith("v1"))
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "v2: new config"\n')
        fleet.commit("v2", "-S")
        assert sync(d)["sync"]["condition"] == "Synced" and motd(d).startswith("v2")
        fleet.git("push", "-q", "-f", "origin", f"{v1}:main")  # whoever holds the server
        answer = sync(d, 422)["sync"]
        assert answer["condition"] == "Refused", answer
        assert "not a descendant" in answer["reason"] and v1[:12] in answer["reason"]
        assert motd(d).startswith("v2")
        # the fleet says so, signed: a tag naming the commit to go back to
        fleet.git("tag", "-s", "-m", "back to v1", f"reconciler-rewind/{v1}", v1)
        fleet.git("push", "-q", "origin", f"reconciler-rewind/{v1}")
        assert sync(d)["sync"]["condition"] == "Synced"
        assert motd(d).startswith("v1")
        # a descendant (a revert commit) needs nothing special
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "v3: forward"\n')
        fleet.commit("v3", "-S")
        assert sync(d)["sync"]["condition"] == "Synced" and motd(d).startswith("v3")
    finally:
        stopped_cleanly(d)


def test_frozen_remote_is_a_condition(tmp_path, fleet):
    verify = _signing(tmp_path, fleet)
    old = "2020-01-01T00:00:00Z"
    fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "frozen"\n')
    fleet.git("add", "-A")
    subprocess.run(["git", "commit", "-q", "-S", "-m", "old"], cwd=fleet.work, check=True,
                   env={**os.environ, "GIT_COMMITTER_DATE": old, "GIT_AUTHOR_DATE": old,
                        "HOME": str(fleet.work.parent), "GIT_COMMITTER_NAME": "fleet",
                        "GIT_COMMITTER_EMAIL": "fleet@example.com", "GIT_AUTHOR_NAME": "fleet",
                        "GIT_AUTHOR_EMAIL": "fleet@example.com"})
    fleet.git("push", "-q", "-f", "origin", "main")
    d = start(tmp_path, fleet, extra=verify + "max-age = 86400\n")
    try:
        gitops = status(d)["gitops"]
        assert gitops["condition"] == "Stale", gitops
        assert "max-age" in gitops["reason"] and "frozen" in gitops["reason"]
        eventually(lambda: motd(d).startswith("frozen"))  # applied; the condition warns
    finally:
        stopped_cleanly(d)


# ---- 9. one daemon per state dir ---------------------------------------------------------------


def test_a_second_daemon_on_the_same_state_dir_exits_and_the_first_keeps_its_socket(tmp_path):
    first = Daemon(tmp_path / "host")
    try:
        second = cli("serve", "--state-dir", first.state_dir)
        assert second.returncode != 0
        assert f"pid {first.process.pid}" in second.stderr and "in use" in second.stderr
        assert first.ok("GET", "/status")["state"] in ("Ready", "Reconciling")
    finally:
        stopped_cleanly(first)


def test_read_only_commands_do_not_create_a_state_dir(tmp_path):
    missing = tmp_path / "nothing-here"
    result = cli("plan", "--state-dir", missing)
    assert result.returncode != 0 and "holds no host" in result.stderr
    assert not missing.exists()


# ---- 5. idle connections ----------------------------------------------------------------------


def test_a_flood_of_idle_connections_starves_nobody(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    d = Daemon(tmp_path / "host", nofile=1024)  # systemd's default limit
    held = []
    try:
        for _ in range(1100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d.socket))
            held.append(s)
        # another client is served, and a pass can still open the files it writes
        connection = UnixHTTPConnection(d.socket, timeout=10)
        connection.request("PATCH", "/settings", body=json.dumps({"motd": "still here"}))
        assert connection.getresponse().status == 204
        connection.close()
        assert d.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]["ok"]
        assert motd(d).startswith("still here")
        assert len(d.logs().splitlines()) < 200  # one line per period, not one per accept
    finally:
        for s in held:
            s.close()
        stopped_cleanly(d)


def test_an_idle_connection_is_closed(tmp_path):
    d = Daemon(tmp_path / "host")
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(d.socket))
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        s.settimeout(120)
        assert s.recv(1024) == b""  # closed by the daemon (IDLE_TIMEOUT)
        s.close()
    finally:
        stopped_cleanly(d)


# ---- 7./10./16. values no schema keyword catches; JSON bodies ----------------------------------

BAD_BODIES = [
    (b'{"updates": {"health-checks": {"x": {"command": ["true"], "timeout": NaN}}}}', "NaN"),
    (b'{"updates": {"health-checks": {"x": {"command": ["true"], "timeout": Infinity}}}}',
     "Infinity"),
    (b'{"motd": "a", "motd": "b"}', "duplicate key"),
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"motd": "\\ud800"}', "settings.motd: must be valid Unicode text"),
    (b'{"motd": "a\\u0000b"}', "settings.motd: must not contain a NUL"),
    (b'{"updates": {"health-checks": {"x": {"command": ["true\\u0000"]}}}}',
     "settings.updates.health-checks.x.command: item 0: must not contain a NUL"),
]


def test_bad_json_values_are_400_naming_the_problem_and_change_nothing(tmp_path):
    d = Daemon(tmp_path / "host")
    try:
        before = d.ok("GET", "/settings")
        for raw, expected in BAD_BODIES:
            code, text = d.request("PATCH", "/settings", raw=raw)
            assert code == 400 and expected in text, (raw[:80], code, text)
        assert d.request("POST", "/tx/commit")[0] == 422  # nothing pending
        assert d.ok("GET", "/settings") == before
    finally:
        stopped_cleanly(d)


@pytest.mark.parametrize("name,text", [
    ("surrogate.json", '{"settings": {"motd": "\\ud800"}}'),
    ("surrogate.yaml", 'settings:\n  motd: "\\ud800"\n'),
    ("nul.json", '{"settings": {"motd": "a\\u0000"}}'),
])
def test_user_data_with_unencodable_or_nul_strings_is_refused(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    result = cli("validate", path)
    assert result.returncode == 1 and "settings.motd: must" in result.stderr
    served = cli("serve", "--state-dir", tmp_path / "host", "--user-data", path, "--once")
    assert served.returncode == 1 and "settings.motd" in served.stderr
    assert "Traceback" not in served.stderr


def test_git_layer_with_a_lone_surrogate_keeps_the_last_good_revision(tmp_path, fleet):
    d = start(tmp_path, fleet)
    try:
        eventually(lambda: motd(d).startswith("web-1: serving the fleet"))
        (fleet.work / "clusters/prod/hosts/web-1.toml").unlink()
        fleet.write("clusters/prod/hosts/web-1.json", '{"settings": {"motd": "\\ud800"}}')
        fleet.commit("a lone surrogate")
        answer = sync(d, 422)["sync"]
        assert answer["condition"] == "Invalid" and "valid Unicode" in answer["reason"]
        assert motd(d).startswith("web-1: serving the fleet")
        # the daemon serves on, and says the revision is refused (it was "Ready" before)
        assert (status(d)["state"], status(d)["reason"]) == ("Degraded", "RevisionInvalid")
    finally:
        stopped_cleanly(d)


# ---- 13. rollback floor; 14. names; 15. FIFO ----------------------------------------------------


def test_rollback_never_goes_below_the_first_boot(tmp_path):
    d = Daemon(tmp_path / "host")
    try:
        seed = d.ok("GET", "/settings")["updates"]["seed"]
        d.ok("PATCH", "/settings", {"motd": "changed"})
        d.ok("POST", "/tx/commit_and_apply?wait=true")
        code, text = d.request("POST", "/actions/rollback-settings?generation=0")
        assert code == 400 and "first boot" in text
        answer = d.ok("POST", "/actions/rollback-settings?generation=1&wait=true")
        assert answer["receipt"]["ok"]
        settings = d.ok("GET", "/settings")
        assert settings["updates"]["seed"] == seed and settings["motd"] != "changed"
    finally:
        stopped_cleanly(d)


def test_container_names_longer_than_a_host_name_are_refused():
    schema = Schema.load("aws-dev")
    entry = {"source": "localhost/x:1", "enabled": False}
    assert schema.validate({"host-containers": {"a" * 63: entry}}) == []
    problems = schema.validate({"host-containers": {"a" * 64: entry}})
    assert problems and "1-63" in problems[0].message


def test_a_fifo_as_desired_file_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "desired.toml"
    os.mkfifo(fifo)
    d = Daemon(tmp_path / "host", ["--desired", str(fifo)])
    try:
        eventually(lambda: status(d)["desired_files"]["condition"] == "Invalid", timeout=30)
        assert "not a regular file (a FIFO)" in status(d)["desired_files"]["reason"]
    finally:
        stopped_cleanly(d)


def test_documents_are_bounded_while_read():
    with pytest.raises(DocumentError, match="not a regular file"):
        load_document("/dev/zero")


# ---- 16. a full disk ----------------------------------------------------------------------------


def test_full_disk_gives_clear_errors_and_start_up_on_it_no_traceback(tmp_path):
    with small_fs(tmp_path / "small", "16m") as small:
        d = Daemon(small / "host")
        try:
            filler = fill(small)
            for _ in range(400):  # pending patches grow the store until the disk says no
                code, text = d.request("PATCH", "/settings", {"motd": os.urandom(30_000).hex()})
                if code != 204:
                    break
            assert code == 507 and "file system is full" in text, (code, text)
        finally:
            filler.unlink()
            stopped_cleanly(d)
        filler = fill(small)
        result = cli("serve", "--state-dir", small / "host")
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert "full" in result.stderr or "disk" in result.stderr
        filler.unlink()
        again = Daemon(small / "host")
        try:
            assert again.ok("GET", "/settings")["motd"]
        finally:
            stopped_cleanly(again)



# ---- 11./2. the store lock is not held while validating; pending patches are bounded ----------


class _PausingSchema:
    """The real schema, whose ``check`` waits until released: a validation that takes long."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.entered = threading.Event()
        self.release = threading.Event()

    def defaults(self):
        return self.schema.defaults()

    def check(self, settings, sections=None, origin=None):
        self.entered.set()
        assert self.release.wait(30)
        self.schema.check(settings, sections, origin)


def test_validating_a_patch_does_not_hold_the_store_lock(tmp_path):
    schema = Schema.load("aws-dev")
    with Store(tmp_path / "store.db") as store:
        slow = _PausingSchema(schema)
        worker = threading.Thread(
            target=store.add_patch, args=("big", {"motd": "big"}, "api:big", slow))
        worker.start()
        assert slow.entered.wait(30)
        # while that validation runs, others read and write
        reader = threading.Thread(target=lambda: store.get(["settings.motd"]))
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "a read waited for another caller's validation"
        store.add_patch("other", {"motd": "other"}, "api:other", schema)
        slow.release.set()
        worker.join(30)
        assert [p.body for p in store.pending("big")] == [{"motd": "big"}]
        assert store.commit("other", schema).changed == ("settings.motd",)


def test_pending_patches_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_PENDING_PATCHES", 5)
    schema = Schema.load("aws-dev")
    with Store(tmp_path / "store.db") as store:
        for n in range(5):
            store.add_patch("t", {"motd": f"m{n}"}, "api:t", schema)
        with pytest.raises(PendingLimit, match="too much pending"):
            store.add_patch("u", {"motd": "one more"}, "api:u", schema)
        assert store.transactions() == ["t"]
        store.commit("t", schema)
        store.add_patch("u", {"motd": "room again"}, "api:u", schema)


def test_a_nul_or_nan_health_check_from_an_older_store_fails_the_check_not_the_gate():
    """The schema refuses both now; a store from before that must still not kill the gate."""
    from updates.health import parse_checks, run_checks

    checks = parse_checks({"health-checks": {
        "nul": {"command": ["true\x00"]}, "nan": {"command": ["true"], "timeout": float("nan")}}})
    results = {r.name: r for r in run_checks(checks, {})}
    assert not results["nul"].ok and "embedded null byte" in results["nul"].detail
    assert not results["nan"].ok


def test_an_endless_chunked_body_is_cut_off_after_its_413(tmp_path):
    """F16: past MAX_BODY the daemon answers 413 and closes the connection at once; it does not
    keep reading (and parsing) the rest of an endless chunked body. Measured in bytes the client
    gets to push after its 413, not in time: aiohttp's lingering close read every byte it was
    sent for 10 s (hundreds of MiB on a Unix socket)."""
    d = Daemon(tmp_path / "host")
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(d.socket))
        s.settimeout(30)
        s.sendall(b"PATCH /settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
        answer, after, closed, pending = b"", 0, False, memoryview(chunk)
        s.setblocking(False)
        while not closed and after < 256 << 20:
            try:
                sent = s.send(pending)
                pending = pending[sent:] or memoryview(chunk)  # chunks stay whole
                if answer:
                    after += sent
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            try:
                got = s.recv(65536)
                if got == b"" and answer:
                    closed = True
                answer += got
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
        s.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert closed, f"still reading after its 413: {after >> 20} MiB more accepted"
        assert after < 64 << 20, f"{after >> 20} MiB accepted after the 413"
        assert d.ok("GET", "/os")  # and everyone else is served
    finally:
        stopped_cleanly(d)


def test_a_patch_held_up_by_another_processs_lock_waits_off_the_event_loop(tmp_path):
    """A one-key PATCH runs its store call on the event loop; when another process holds the
    store, it fails there at once and waits in a thread instead: the API keeps answering,
    reads of the store included (the waiting write does not hold the store), and the PATCH
    lands when the lock goes."""
    d = Daemon(tmp_path / "host")
    try:
        answers: list[int] = []
        with store_locked(d.state_dir / "store.db"):
            patch = threading.Thread(
                target=lambda: answers.append(d.request("PATCH", "/settings", {"motd": "x"})[0]))
            patch.start()
            time.sleep(1)  # let the PATCH reach the store (no timing is asserted)
            assert d.request("GET", "/os")[0] == 200  # answered while the PATCH waits
            assert d.request("GET", "/settings")[0] == 200  # a read of the store, too
            assert patch.is_alive() and not answers, answers
        patch.join(30)
        assert answers == [204]
        assert d.ok("GET", "/tx") == {"motd": "x"}
    finally:
        d.stop()
