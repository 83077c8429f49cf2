"""User data and platform settings from the platform: IMDSv2 on 127.0.0.1, providers, pluto."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import time

import pytest

from hostcore.documents import DocumentError
from reconciler.platform import facts
from reconciler.platform.imds import ImdsClient, ImdsUnavailable, on_ec2
from reconciler.platform.providers import decode
from reconciler.store import Store
from tests.daemon import REPO, Daemon
from tests.imds import FakeInstance, ImdsServer

USER_DATA = b'[settings]\nmotd = "from IMDS"\n'
K8S = b"""[settings]
motd = "from IMDS"
[settings.kubernetes]
cluster-name = "prod"
api-server = "https://example.eks.amazonaws.com"
cluster-certificate = "Y2VydA=="
"""
ENCODINGS = {
    "toml": lambda b: b,
    "gzip": gzip.compress,
    "base64": base64.b64encode,
    "base64-gzip": lambda b: base64.b64encode(gzip.compress(b)),
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


# --- pure rules -----------------------------------------------------------------------------


def test_max_pods_follows_the_eni_formula():
    assert facts.max_pods("m5.large") == 3 * (10 - 1) + 2 == 29
    assert facts.max_pods("t3.micro") == 4
    assert facts.max_pods("m5.24xlarge") == 737
    assert facts.max_pods("x99.huge") is None  # pluto exits 2; the kubelet falls back to 110


def test_cluster_dns_ip_avoids_the_vpc_range():
    assert facts.cluster_dns_ip(("10.0.0.0/16",)) == "172.20.0.10"
    assert facts.cluster_dns_ip(("192.168.0.0/16", "10.1.0.0/16")) == "10.100.0.10"
    assert facts.cluster_dns_ip(()) is None


def test_region_picks_the_eks_registry():
    assert facts.pause_image("us-west-2") == (
        "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.1-eksbuild.1")
    assert facts.ecr_registry("cn-north-1") == "918309763551.dkr.ecr.cn-north-1.amazonaws.com.cn"
    assert facts.ecr_registry("af-south-1").startswith("877085696533.")
    assert facts.pause_image(None) is None


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_user_data_encodings(encoding):
    assert decode(ENCODINGS[encoding](USER_DATA), "imds") == {"motd": "from IMDS"}


def test_bad_user_data_names_its_origin():
    with pytest.raises(DocumentError, match="^http://x/latest/user-data: "):
        decode(b"[settings\nmotd = 1", "http://x/latest/user-data")


def test_on_ec2_reads_the_firmware(tmp_path):
    assert not on_ec2(tmp_path)
    (tmp_path / "class/dmi/id").mkdir(parents=True)
    (tmp_path / "class/dmi/id/sys_vendor").write_text("QEMU\n")
    assert not on_ec2(tmp_path)
    (tmp_path / "class/dmi/id/sys_vendor").write_text("Amazon EC2\n")
    assert on_ec2(tmp_path)


# --- the client against an IMDSv2 server ------------------------------------------------------


def test_client_uses_a_session_token():
    with ImdsServer(FakeInstance(USER_DATA)) as server:
        client = ImdsClient(server.endpoint, deadline=10)
        assert client.get("/latest/user-data") == USER_DATA
        assert client.get("/latest/meta-data/nope") is None  # 404: absent, not an error
        assert server.requests[:2] == ["PUT /latest/api/token", "GET /latest/user-data"]
        assert server.requests.count("PUT /latest/api/token") == 1  # one session


def test_client_renews_a_refused_token_once():
    with ImdsServer(FakeInstance(USER_DATA)) as server:
        client = ImdsClient(server.endpoint, deadline=10)
        assert client.get("/latest/user-data") == USER_DATA
        server.revoke_tokens()  # the next GET is 401
        assert client.get("/latest/user-data") == USER_DATA
        assert server.requests.count("PUT /latest/api/token") == 2


def test_client_retries_server_errors_within_the_deadline():
    with ImdsServer(FakeInstance(USER_DATA)) as server:
        server.fail = 3
        client = ImdsClient(server.endpoint, deadline=10)
        assert client.get("/latest/user-data") == USER_DATA
        assert client.attempts == 5  # 3 failures, the token, the item


def test_a_service_that_never_answers_costs_at_most_the_deadline():
    with ImdsServer() as server:
        server.hang = True
        client = ImdsClient(server.endpoint, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(ImdsUnavailable, match="did not answer within 1 s"):
            client.get("/latest/user-data")
        with pytest.raises(ImdsUnavailable):  # the deadline is spent: no second wait
            client.get("/latest/dynamic/instance-identity/document")
        assert time.monotonic() - started < 4.0  # the deadline (1 s) and one attempt's slack


def test_nothing_listens():
    client = ImdsClient("http://127.0.0.1:9", deadline=0.5)
    with pytest.raises(ImdsUnavailable, match="127.0.0.1:9 did not answer within 0.5 s"):
        client.get("/latest/user-data")
    assert client.attempts > 1  # retried with back-off


def test_read_facts():
    with ImdsServer(FakeInstance(instance_type="t3.large", region="eu-west-1")) as server:
        found = facts.read_facts(ImdsClient(server.endpoint, deadline=10))
    assert found.region == "eu-west-1"
    assert found.instance_type == "t3.large"
    assert found.local_ipv4 == "10.0.1.23"
    assert found.vpc_ipv4_cidrs == ("10.0.0.0/16",)
    assert facts.provider_id(found) == "aws:///eu-west-1a/i-0123456789abcdef0"


# --- the daemon ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_first_boot_applies_imds_user_data_and_platform_settings(tmp_path, encoding):
    state = tmp_path / "state"
    with ImdsServer(FakeInstance(ENCODINGS[encoding](K8S))) as server:
        done = cli("serve", "--once", "--state-dir", str(state), "--variant", "aws-k8s",
                   "--imds-endpoint", server.endpoint, "--imds-deadline", "10")
        assert done.returncode == 0, done.stderr
        with Store(state / "store.db") as store:
            live, sources = store.live(), store.sources()
    url = f"{server.endpoint}/latest/user-data"
    assert live["settings.motd"] == "from IMDS"
    assert sources["settings.motd"] == f"user-data:40-ec2-imds:{url}"
    assert live["settings.aws.region"] == "us-west-2"
    assert sources["settings.aws.region"] == "generator:aws-region"
    assert live["settings.kubernetes.node-ip"] == "10.0.1.23"
    assert live["settings.kubernetes.max-pods"] == 29
    assert live["settings.kubernetes.cluster-dns-ip"] == "172.20.0.10"
    assert live["settings.kubernetes.pod-infra-container-image"].startswith(
        "602401143452.dkr.ecr.us-west-2.amazonaws.com/")
    for key in ("node-ip", "max-pods", "cluster-dns-ip"):
        assert sources[f"settings.kubernetes.{key}"] == f"generator:{key}"
    kubeconfig = (state / "root/etc/kubernetes/kubelet/kubeconfig").read_text()
    assert '- "--region"\n      - "us-west-2"\n' in kubeconfig  # aws.region is used


def test_user_data_is_read_at_first_boot_only(tmp_path):
    state = tmp_path / "state"
    with ImdsServer(FakeInstance(USER_DATA)) as server:
        args = ("serve", "--once", "--state-dir", str(state), "--imds-endpoint", server.endpoint)
        assert cli(*args).returncode == 0
        assert server.gets("/latest/user-data") == 1
        server.instance.user_data = b'[settings]\nmotd = "changed later"\n'
        assert cli(*args).returncode == 0
        assert server.gets("/latest/user-data") == 1  # not asked again
    with Store(state / "store.db") as store:
        assert store.live()["settings.motd"] == "from IMDS"


def test_user_data_wins_over_platform_settings(tmp_path):
    state = tmp_path / "state"
    body = K8S + b'[settings.aws]\nregion = "eu-central-1"\n'
    with ImdsServer(FakeInstance(body)) as server:
        assert cli("serve", "--once", "--state-dir", str(state), "--variant", "aws-k8s",
                   "--imds-endpoint", server.endpoint).returncode == 0
    with Store(state / "store.db") as store:
        assert store.live()["settings.aws.region"] == "eu-central-1"
        assert store.sources()["settings.aws.region"].startswith("user-data:40-ec2-imds:")


def test_instance_without_user_data_boots_on_defaults(tmp_path):
    state = tmp_path / "state"
    with ImdsServer(FakeInstance(None)) as server:  # 404
        done = cli("serve", "--once", "--state-dir", str(state), "--imds-endpoint",
                   server.endpoint)
    assert done.returncode == 0, done.stderr
    with Store(state / "store.db") as store:
        assert store.get_meta("user-data-applied") == {"applied": [], "pending": []}
        assert store.sources()["settings.aws.region"] == "generator:aws-region"


def test_invalid_imds_user_data_applies_nothing(tmp_path):
    state = tmp_path / "state"
    with ImdsServer(FakeInstance(b'[settings]\nmotd = 7\n')) as server:
        done = cli("serve", "--once", "--state-dir", str(state), "--imds-endpoint",
                   server.endpoint)
    assert done.returncode == 1
    assert f"{server.endpoint}/latest/user-data" in done.stderr
    assert "settings.motd" in done.stderr


def test_a_silent_metadata_service_delays_boot_by_its_deadline_only(tmp_path):
    local = tmp_path / "user-data.toml"
    local.write_text('[settings]\nmotd = "local"\n')
    state = tmp_path / "state"
    with ImdsServer(FakeInstance(USER_DATA)) as server:
        server.hang = True
        daemon = Daemon(state, ["--user-data", str(local), "--imds-endpoint", server.endpoint,
                                "--imds-deadline", "1"])
        try:
            status = daemon.ok("GET", "/status")
            assert daemon.ok("GET", "/settings?keys=settings.motd") == {"motd": "local"}
        finally:
            daemon.stop()
        condition = next(c for c in status["conditions"] if c["type"] == "PlatformData")
        assert condition["status"] is False
        assert "40-ec2-imds" in condition["reason"]
        assert "did not answer within 1 s" in condition["reason"]
        imds = next(p for p in status["user_data"]["providers"] if p["provider"] == "40-ec2-imds")
        assert imds["result"] == "unavailable"

        server.hang = False  # the service is back: its user data is read at the next boot
        daemon = Daemon(state, ["--imds-endpoint", server.endpoint, "--imds-deadline", "5"])
        try:
            status = daemon.ok("GET", "/status")
            assert daemon.ok("GET", "/settings?keys=settings.motd") == {"motd": "from IMDS"}
        finally:
            daemon.stop()
    condition = next(c for c in status["conditions"] if c["type"] == "PlatformData")
    assert condition["status"] is True


def test_off_ec2_the_metadata_service_is_not_tried(tmp_path):
    assert not on_ec2(), "this test needs a machine that is not an EC2 instance"
    daemon = Daemon(tmp_path / "state")
    try:
        status = daemon.ok("GET", "/status")
        generators = daemon.ok("GET", "/metadata/setting-generators")
    finally:
        daemon.stop()
    providers = [p["provider"] for p in status["user_data"]["providers"]]
    assert providers == ["10-local-defaults", "20-local-file", "99-local-overrides"]
    assert generators["settings.aws.region"] == "reconciler generate aws-region"


def test_local_provider_files_under_the_root(tmp_path):
    state = tmp_path / "state"
    root = state / "root"
    for name, motd in (("local/user-data-defaults.toml", "defaults"),
                       ("var/lib/bottlerocket/user-data.toml", "file"),
                       ("local/user-data-overrides.toml", "overrides")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f'[settings]\nmotd = "{motd}"\nntp.time-servers = ["{motd}"]\n')
    (root / "local/user-data-overrides.toml").write_text('[settings]\nmotd = "overrides"\n')
    assert cli("serve", "--once", "--state-dir", str(state)).returncode == 0
    with Store(state / "store.db") as store:
        live, sources = store.live(), store.sources()
    assert live["settings.motd"] == "overrides"
    assert live["settings.ntp.time-servers"] == ["file"]
    assert sources["settings.ntp.time-servers"].startswith("user-data:20-local-file:")


def test_generate_command():
    with ImdsServer() as server:
        done = cli("generate", "max-pods", "--imds-endpoint", server.endpoint)
        assert (done.returncode, json.loads(done.stdout)) == (0, 29)
        done = cli("generate", "aws-region", "--imds-endpoint", server.endpoint)
        assert json.loads(done.stdout) == "us-west-2"
    assert cli("generate", "provider-id").returncode == 2  # no metadata here: no value
    done = cli("generate", "nope")
    assert done.returncode == 1 and "unknown generator 'nope'" in done.stderr
    done = cli("serve", "--state-dir", "x", "--imds-endpoint", "ftp://x")
    assert done.returncode == 2 and "an IMDS endpoint is an http:// URL" in done.stderr


def test_validate_documents_the_providers():
    out = cli("validate", "--help").stdout
    for provider in ("10-local-defaults", "20-local-file", "40-ec2-imds", "45-vmware-guestinfo",
                     "99-local-overrides"):
        assert provider in out
