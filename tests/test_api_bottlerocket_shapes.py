"""API shapes Bottlerocket's scripts rely on (its apiserver's behaviour, read from its sources):
``?prefix=`` on /os, /services and /configuration-files, ``keys=`` outside ``settings`` answering
``{}``, /metadata/templates, setting generators as commands, keypair type guessing."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from reconciler.api.keypair import guess_value
from tests.daemon import REPO, Daemon, cli, eventually
from tests.images import require_podman, reset_storage

FIXTURES = REPO / "tests" / "fixtures" / "bottlerocket"
CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
CLUSTER = f"""[settings.kubernetes]
cluster-name = "prod"
api-server = "https://k8s.example.com"
cluster-certificate = "{CA.decode()}"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    base = tmp_path_factory.mktemp("shapes")
    (base / "user-data.toml").write_text(CLUSTER)
    started = Daemon(base / "state", ["--variant", "aws-k8s-1.30",
                                      "--user-data", str(base / "user-data.toml")])
    eventually(lambda: started.ok("GET", "/status")["state"] == "Ready", 60)
    yield started
    started.stop()


def test_the_readme_admin_snippet_serves_and_the_daemon_stays_up(tmp_path):
    """``enabled = true`` alone boots a daemon that serves its API, with or without the image."""
    require_podman()
    started = Daemon(tmp_path / "state", ["--variant", "aws-dev", "--user-data",
                                          str(FIXTURES / "readme-2023-00-admin.toml")])
    try:
        admin = started.ok("GET", "/settings?prefix=host-containers.admin")
        assert admin == {"host-containers": {"admin": {
            "enabled": True, "superpowered": True,
            "source": "localhost/host-reconciler/admin:v0.1.0"}}}
        # With the project's images built (`reconciler images build`, as make test does) the
        # admin container runs; without them it is a failed container in the status, nothing
        # more. Either way the daemon serves.
        status = eventually(lambda: (s := started.ok("GET", "/status"))["state"]
                            in ("Ready", "Degraded") and s, 90)
        assert started.process.poll() is None
        (degraded,) = [c for c in status["conditions"] if c["type"] == "Degraded"]
        assert all(r.startswith("container admin: ") for r in degraded["reasons"]), degraded
        assert started.ok("GET", "/os")["variant_id"] == "aws-dev"
    finally:
        started.stop()
        reset_storage(tmp_path / "state" / "containers")


def test_os_prefix(daemon):
    assert set(daemon.ok("GET", "/os?prefix=arch")) == {"arch"}
    assert set(daemon.ok("GET", "/os?prefix=os.v")) == {"variant_id", "version_id"}
    assert daemon.ok("GET", "/os?prefix=nothing") == {}
    assert daemon.request("GET", "/os?prefix=")[0] == 400


def test_services_and_configuration_files_prefix(daemon):
    assert set(daemon.ok("GET", "/services?prefix=mo")) == {"motd"}
    assert set(daemon.ok("GET", "/services?prefix=services.kubern")) == {"kubernetes"}
    kubelet = daemon.ok("GET", "/configuration-files?prefix=kubelet")
    assert set(kubelet) >= {"kubelet-config", "kubelet-env", "kubelet-server-crt",
                            "kubelet-server-key"}
    assert all(name.startswith("kubelet") for name in kubelet)
    assert kubelet["kubelet-config"]["path"] == "/etc/kubernetes/kubelet/config"
    assert daemon.ok("GET", "/configuration-files?prefix=configuration-files.motd.path") == {
        "motd": {"path": "/etc/motd"}}
    assert daemon.ok("GET", "/services?prefix=zzz") == {}
    for path in ("/services?prefix=", "/configuration-files?prefix="):
        assert daemon.request("GET", path)[0] == 400
    # names= still wins and still 404s on an unknown name
    assert set(daemon.ok("GET", "/services?names=motd&prefix=k")) == {"motd"}
    assert daemon.request("GET", "/services?names=nope")[0] == 404


def test_keys_outside_settings_answer_empty(daemon):
    assert daemon.ok("GET", "/settings?keys=motd") == {}
    assert daemon.ok("GET", "/settings?keys=motd,settings.motd") == {
        "motd": daemon.ok("GET", "/settings")["motd"]}
    assert daemon.ok("GET", "/metadata/affected-services?keys=motd") == {}
    assert daemon.request("GET", "/settings?keys=a..b")[0] == 400


def test_metadata_templates_and_generators(daemon):
    assert daemon.ok("GET", "/metadata/templates?keys=settings.motd,motd") == {}
    assert daemon.request("GET", "/metadata/templates")[0] == 400
    generators = daemon.ok("GET", "/metadata/setting-generators")
    assert generators["settings.updates.seed"] == "reconciler generate seed"
    assert "settings.kubernetes.node-ip" in generators  # pluto's, on this k8s variant
    assert all(c.startswith("reconciler generate ") for c in generators.values())
    # every listed command runs and prints a value the key accepts (or exits 2: nothing to set)
    for key, command in generators.items():
        result = cli(*command.split()[1:], "--imds-endpoint", "http://127.0.0.1:9",
                     "--imds-deadline", "1")
        assert result.returncode in (0, 2), (command, result.stderr)
        if result.returncode == 0:
            value = json.loads(result.stdout)
            text = value if isinstance(value, str) else json.dumps(value)
            patch = {"request_payload": [f"{key}={text}"]}
            assert daemon.request("PATCH", "/settings/keypair?tx=gen", patch)[0] == 204, key
    daemon.ok("DELETE", "/tx?tx=gen")
    assert cli("generate", "nope").returncode == 1


def test_keypair_guesses_types_as_bottlerocket_does(daemon):
    for text, value in {"true": True, "false": False, "42": 42, "-7": -7, "1.5": 1.5,
                        "2e3": 2000.0, "nan": "nan", "infinity": "infinity", "1_000": "1_000",
                        "+1": "+1", "01": "01", " 1": " 1", "1e999": "1e999", "NaN": "NaN",
                        "hi there": "hi there"}.items():
        assert guess_value(text) == value and type(guess_value(text)) is type(value), text
    for text in ("nan", "infinity", "1_000"):
        result = subprocess.run(
            [sys.executable, "-m", "reconciler.apiclient", "set", f"motd={text}"],
            env={"APICLIENT_SOCKET": str(daemon.socket), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert daemon.ok("GET", "/settings?keys=settings.motd") == {"motd": text}


def test_get_settings_answers_what_the_store_holds_after_any_write(tmp_path):
    """The whole-settings body is kept between writes; a commit through the API and a write
    by another process on the store are both seen by the next GET."""
    import sqlite3

    d = Daemon(tmp_path / "host")
    try:
        before = d.ok("GET", "/settings")
        assert d.ok("GET", "/settings") == before
        d.ok("PATCH", "/settings", {"motd": "through the api"})
        d.ok("POST", "/tx/commit")
        assert d.ok("GET", "/settings")["motd"] == "through the api"
        other = sqlite3.connect(d.state_dir / "store.db", isolation_level=None, timeout=30)
        try:
            other.execute("UPDATE settings SET value = ? WHERE key = ?",
                          ('"by another process"', "settings.motd"))
        finally:
            other.close()
        assert d.ok("GET", "/settings")["motd"] == "by another process"
        assert d.request("GET", "/settings")[1] == {**before, "motd": "by another process"}
    finally:
        d.stop()
