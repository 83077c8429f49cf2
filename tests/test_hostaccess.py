"""Host access as Bottlerocket gives it, end to end on real podman with the project's images:
the admin container over SSH (sudo, sheltie, apiclient inside), ``apiclient exec``,
``enable-admin-container`` and ``logdog``.

Needs podman, runc, mmdebstrap (the images are built, or found up to date, first) and ssh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from reconciler.hostimages.build import reference
from tests.daemon import REPO, Daemon, cli, eventually
from tests.hostaccess import admin_entry, admin_user_data, free_port, require_images, ssh, ssh_key
from tests.images import podman, reset_storage

ENV = {"CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / "examples/containers.conf"))}
SECRET_PASSWORD_HASH = "$6$logdogsalt$S3cr3tHashThatMustNeverLeakIntoLogs"


def admin_state(d: Daemon) -> dict:
    return d.ok("GET", "/status")["containers"]["host-containers"].get("admin", {})


def wait_for_ssh(key: Path, port: int, known_hosts: Path | None = None) -> None:
    def logged_in():
        return ssh(key, port, "true", known_hosts=known_hosts).returncode == 0
    eventually(logged_in, timeout=120, interval=0.5)


@pytest.fixture(scope="module")
def admin(tmp_path_factory):
    """A fresh state dir whose user data enables admin with an SSH key (nothing else done
    before but `reconciler images build`)."""
    require_images()
    folder = tmp_path_factory.mktemp("admin")
    key, public = ssh_key(folder)
    port = free_port()
    user_data = folder / "user-data.toml"
    entry = admin_entry(admin_user_data(public, port, **{"password-hash": SECRET_PASSWORD_HASH}))
    user_data.write_text(
        '[settings]\nmotd = "hello from the admin test"\n'
        "[settings.host-containers.admin]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
    )
    d = Daemon(folder / "state", ["--variant", "aws-dev", "--user-data", str(user_data)], env=ENV)
    try:
        eventually(lambda: admin_state(d).get("state") == "running", timeout=300, interval=0.5)
        wait_for_ssh(key, port, folder / "known_hosts")
        yield d, key, port, folder
    finally:
        d.stop()
        reset_storage(d.state_dir / "containers")


def test_ssh_into_admin_then_sudo_sheltie_sees_the_host(admin):
    d, key, port, folder = admin
    whoami = ssh(key, port, "id -un", known_hosts=folder / "known_hosts")
    assert whoami.returncode == 0 and whoami.stdout.strip() == "ec2-user", whoami.stderr
    hostname = ssh(key, port, "sudo sheltie cat /etc/hostname")
    assert hostname.returncode == 0, hostname.stderr
    assert hostname.stdout == Path("/etc/hostname").read_text()  # the tests share the host's
    # The host's PID namespace too: PID 1 inside sheltie is the host's init.
    init = ssh(key, port, "sudo sheltie cat /proc/1/comm")
    assert init.stdout == Path("/proc/1/comm").read_text()


def test_apiclient_inside_the_admin_container(admin):
    d, key, port, _ = admin
    answer = ssh(key, port, "apiclient get settings.motd")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"settings": {"motd": "hello from the admin test"}}
    tools = ssh(key, port, "command -v sheltie logdog apiclient sudo")
    assert tools.returncode == 0 and len(tools.stdout.split()) == 4, tools.stdout


def test_host_keys_survive_a_recreated_container(admin):
    d, key, port, folder = admin
    keys = d.state_dir / "host-containers/admin/ssh/etc/ssh/ssh_host_ed25519_key"
    before = keys.read_bytes()
    podman(d.state_dir / "containers", "rm", "--force", "admin")
    # The engine's "remove" event wakes the daemon, which brings it back (drift).
    eventually(lambda: admin_state(d).get("state") != "running" or admin_state(d)["restarts"],
               timeout=60)
    eventually(lambda: admin_state(d).get("state") == "running", timeout=120, interval=0.5)
    # The same host key: known_hosts from the first login is still accepted (strict checking).
    wait_for_ssh(key, port, folder / "known_hosts")
    assert keys.read_bytes() == before


def test_apiclient_exec_streams_stdin_keeps_the_exit_status_and_gives_a_tty(admin):
    d = admin[0]
    assert d.apiclient("exec", "admin", "sh", "-c", "exit 7").returncode == 7
    echoed = d.apiclient("exec", "admin", "cat", stdin="hi\n")
    assert (echoed.returncode, echoed.stdout) == (0, "hi\n"), echoed.stderr
    errors = d.apiclient("exec", "admin", "sh", "-c", "echo out; echo err >&2")
    assert (errors.stdout, errors.stderr) == ("out\n", "err\n")
    tty = d.apiclient("exec", "-t", "admin", "tty")
    assert tty.returncode == 0 and tty.stdout.startswith("/dev/pts/"), (tty.stdout, tty.stderr)
    no_tty = d.apiclient("exec", "-T", "admin", "tty")
    assert no_tty.returncode == 1 and "not a tty" in no_tty.stdout
    size = d.apiclient("exec", "-t", "admin", "stty", "size")
    assert size.stdout.split() == ["24", "80"]  # not a terminal here: the default size


def test_apiclient_exec_unknown_container_and_unknown_subcommand(admin):
    d = admin[0]
    missing = d.apiclient("exec", "nosuch", "true")
    assert missing.returncode == 1
    assert "no host container named 'nosuch' (host containers: admin)" in missing.stderr
    unknown = d.apiclient("frobnicate")
    assert unknown.returncode == 2
    assert "unknown subcommand 'frobnicate'" in unknown.stderr and "exec" in unknown.stderr


def test_logdog_holds_settings_status_and_logs_and_no_secret(admin, tmp_path):
    d = admin[0]
    output = tmp_path / "logs.tar.gz"
    result = subprocess.run(
        [sys.executable, "-m", "reconciler.logdog", "-o", str(output)], cwd=REPO,
        env={**os.environ, "APICLIENT_SOCKET": str(d.socket)}, capture_output=True, text=True,
        timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"logs are at: {output}\n"
    with tarfile.open(output) as tar:
        files = {m.name.removeprefix("bottlerocket-logs/"): tar.extractfile(m).read()
                 for m in tar.getmembers() if m.isfile()}
    for name in ("settings.json", "status.json", "reconciler.log", "events.json",
                 "generations.json", "receipts.json", "configuration-files.json",
                 "versions.json", "host-containers.json", "host-containers/admin.log"):
        assert name in files, sorted(files)
    settings = json.loads(files["settings.json"])
    assert settings["motd"] == "hello from the admin test"
    assert settings["host-containers"]["admin"]["user-data"] == "(redacted)"
    assert json.loads(files["status.json"])["variant"] == "aws-dev"
    assert b"sshd on port" in files["host-containers/admin.log"]
    motd = json.loads(files["configuration-files.json"])["motd"]
    assert motd["path"] == "/etc/motd" and len(motd["sha256"]) == 64
    user_data = d.ok("GET", "/settings")["host-containers"]["admin"]["user-data"]
    for name, data in files.items():
        for secret in (SECRET_PASSWORD_HASH, user_data, "S3cr3tHash"):
            assert secret.encode() not in data, f"{secret[:12]}... in {name}"
    # The admin image carries logdog too; its default path is Bottlerocket's.
    inside = d.apiclient("exec", "admin", "logdog")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout == "logs are at: /tmp/bottlerocket-logs.tar.gz\n"


@pytest.fixture
def fresh(tmp_path):
    """A daemon on a fresh state dir, an SSH key pair and a free port for admin's sshd."""
    require_images()
    key, public = ssh_key(tmp_path)
    d = Daemon(tmp_path / "state", ["--variant", "aws-dev"], env=ENV)
    try:
        yield d, key, public, free_port()
    finally:
        d.stop()
        reset_storage(d.state_dir / "containers")


def test_enable_admin_container_turns_a_disabled_admin_on(fresh):
    d, key, public, port = fresh
    d.ok("PATCH", "/settings", {"host-containers": {
        "admin": admin_entry(admin_user_data(public, port), enabled=False)}})
    receipt = d.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]
    assert receipt["ok"] and admin_state(d) == {}
    result = subprocess.run(
        [sys.executable, "-m", "reconciler.enable_admin"], cwd=REPO,
        env={**os.environ, "APICLIENT_SOCKET": str(d.socket)}, capture_output=True,
        text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stderr
    assert "apiclient exec admin bash" in result.stdout
    assert admin_state(d)["state"] == "running"
    wait_for_ssh(key, port)
    assert d.ok("GET", "/settings")["host-containers"]["admin"]["enabled"]


def test_control_is_not_superpowered_and_enables_admin_from_inside(fresh):
    d, key, public, port = fresh
    d.ok("PATCH", "/settings", {"host-containers": {
        "control": {"source": reference("control"), "enabled": True, "superpowered": False,
                    "user-data": admin_user_data(public, 22)},
        "admin": admin_entry(admin_user_data(public, port), enabled=False)}})
    d.ok("POST", "/tx/commit_and_apply?wait=true")
    eventually(lambda: d.ok("GET", "/status")["containers"]["host-containers"]
               .get("control", {}).get("state") == "running", timeout=300, interval=0.5)
    # No host root, no sheltie, its own PID namespace (PID 1 is its sshd, once started).
    def confined():
        return d.apiclient("exec", "control", "sh", "-c",
                           "ls /.bottlerocket; command -v sheltie; cat /proc/1/comm").stdout
    eventually(lambda: confined() == "host-containers\nsshd\n", timeout=60, interval=0.5)
    motd = d.apiclient("exec", "control", "apiclient", "get", "settings.motd")
    assert json.loads(motd.stdout) == {"settings": {"motd": "Welcome to the reconciler!"}}
    enabled = d.apiclient("exec", "control", "enable-admin-container")
    assert enabled.returncode == 0, enabled.stderr
    assert admin_state(d)["state"] == "running"
    wait_for_ssh(key, port)


def test_images_build_is_cached_by_its_inputs():
    require_images()
    from reconciler.hostimages.build import archive_for, image_dir

    archives = [archive_for(reference(role)) for role in ("admin", "control")]
    before = [a.stat().st_mtime_ns for a in archives]
    again = cli("images", "build")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"{reference(role)}: up to date ({image_dir() / f'{role}.docker-archive.tar'})"
        for role in ("admin", "control")]
    assert [a.stat().st_mtime_ns for a in archives] == before
    unknown = cli("images", "build", "nosuch")
    assert unknown.returncode == 1
    assert "unknown image 'nosuch'; known: admin, control" in unknown.stderr


# Prints the size, waits for a line, then the size once it changed (the resize travels through
# podman and conmon on their own time; up to 10 s).
RESIZED = ('stty size; read line; i=0; while [ "$(stty size)" = "24 80" ] && [ $i -lt 100 ];'
           ' do sleep 0.1; i=$((i+1)); done; stty size')


def test_exec_with_a_tty_passes_the_window_size_on(admin):
    from reconciler import wsclient

    d = admin[0]
    ws = wsclient.connect(str(d.socket), "/exec")
    try:
        ws.send_text(json.dumps({"target": "admin", "tty": True, "rows": 24, "cols": 80,
                                 "command": ["sh", "-c", RESIZED]}))
        output = b""
        while b"24 80" not in output:
            kind, payload = ws.receive()
            output += payload[1:] if kind == wsclient.BINARY else b""
        ws.send_text(json.dumps({"type": "resize", "rows": 40, "cols": 100}))
        ws.send_binary(b"\n")
        while True:
            kind, payload = ws.receive()
            if kind == wsclient.TEXT:
                assert json.loads(payload) == {"type": "exit", "code": 0}
                break
            output += payload[1:]
        assert b"40 100" in output, output
    finally:
        ws.close()
