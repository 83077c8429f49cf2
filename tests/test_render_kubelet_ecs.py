"""Effects of the kubernetes, ecs, aws and ntp settings: the files the real programs read.

The kubelet config is read as the kubelet reads it (YAML into KubeletConfiguration field names and
types); the env files are sourced by a real POSIX shell (``/bin/sh``), as systemd's
``EnvironmentFile=`` reads the same syntax; a changed setting restarts only the services that
read it (a real host: store, boot pipeline, pass, then the plan of the next change).
"""

from __future__ import annotations

import base64
import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from hostcore.keys import merge_patch
from reconciler.host import open_host
from reconciler.schema import Schema
from renderers.catalog import Catalog
from renderers.render import Renderer
from tests.daemon import REPO, cli
from tests.images import require_podman, reset_storage

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bottlerocket"
OS = {"pretty_name": "Host OS 1.0", "variant_id": "aws-k8s-1.30", "version_id": "1.0.0",
      "build_id": "abc123", "arch": "x86_64"}
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CLUSTER = {
    "cluster-name": "prod",
    "api-server": "https://k8s.example.com",
    "cluster-certificate": base64.b64encode(CA.encode()).decode(),
}
# KubeletConfiguration (kubelet.config.k8s.io/v1beta1) fields we write, with their JSON types,
# from the kubelet's config API reference.
KUBELET_FIELDS: dict[str, type | tuple[type, ...]] = {
    "kind": str, "apiVersion": str, "address": str, "authentication": dict,
    "authorization": dict, "clusterDomain": str, "clusterDNS": list, "evictionHard": dict,
    "evictionSoft": dict, "evictionSoftGracePeriod": dict, "evictionMaxPodGracePeriod": int,
    "allowedUnsafeSysctls": list, "registryPullQPS": int, "registryBurst": int,
    "eventRecordQPS": int, "eventBurst": int, "kubeAPIQPS": int, "kubeAPIBurst": int,
    "kubeReserved": dict, "systemReserved": dict, "reservedSystemCPUs": str, "cpuCFSQuota": bool,
    "cpuManagerPolicy": str, "cpuManagerReconcilePeriod": str, "cpuManagerPolicyOptions": dict,
    "topologyManagerScope": str, "topologyManagerPolicy": str, "podPidsLimit": int,
    "imageGCHighThresholdPercent": int, "imageGCLowThresholdPercent": int, "providerID": str,
    "resolvConf": str, "hairpinMode": str, "readOnlyPort": int, "cgroupDriver": str,
    "cgroupRoot": str, "runtimeRequestTimeout": str, "protectKernelDefaults": bool,
    "serializeImagePulls": bool, "seccompDefault": bool, "serverTLSBootstrap": bool,
    "tlsCertFile": str, "tlsPrivateKeyFile": str, "tlsCipherSuites": list, "maxPods": int,
    "staticPodPath": str, "containerLogMaxSize": str, "containerLogMaxFiles": int,
    "shutdownGracePeriod": str, "shutdownGracePeriodCriticalPods": str,
    "memoryManagerPolicy": str, "reservedMemory": list,
}


def examples_settings(*names: str) -> dict[str, Any]:
    """The merged settings of Bottlerocket README examples (by file-name fragment)."""
    merged: dict[str, Any] = {}
    for path in sorted(FIXTURES.glob("readme-2023-*.toml")):
        if any(n in path.name for n in names):
            merged = merge_patch(merged, tomllib.loads(path.read_text())["settings"])
    return merged


def render(variant: str, settings: dict[str, Any]) -> dict[str, str]:
    schema = Schema.load(variant)
    full = merge_patch(schema.defaults(), settings)
    assert schema.validate(full) == []
    result = Renderer(Catalog.load(schema.family)).render_all({"settings": full, "os": OS})
    assert result.errors == {}
    return {name: r.content.decode() for name, r in result.files.items()}


def sourced(text: str, tmp_path: Path) -> dict[str, str]:
    """The variables a POSIX shell gets from an env file (``set -a; . FILE``)."""
    path = tmp_path / "env"
    path.write_text(text)
    script = 'set -a; . "$1"; set +a; env -0'
    out = subprocess.run(["/bin/sh", "-c", script, "sh", str(path)], capture_output=True,
                         check=True, env={}).stdout.decode()
    pairs = (item.partition("=") for item in out.split("\0") if item)
    return {k: v for k, _, v in pairs if k not in {"PWD", "SHLVL", "_", "OLDPWD"}}


def kubelet_config(text: str) -> dict[str, Any]:
    config = YAML(typ="safe").load(text)
    for field, value in config.items():
        assert field in KUBELET_FIELDS, f"not a KubeletConfiguration field: {field}"
        assert isinstance(value, KUBELET_FIELDS[field]), (field, value)
        assert not isinstance(value, bool) or KUBELET_FIELDS[field] is bool, (field, value)
    return config


def test_kubelet_config_carries_every_documented_kubelet_example(tmp_path):
    settings = examples_settings(
        "cluster-dns-ip-2", "labels-taints-list", "allowed-unsafe-sysctls", "cpu-manager",
        "credential-providers", "eviction", "image-gc-string", "memory-manager",
        "system-reserved")
    settings["kubernetes"].update(CLUSTER)
    settings["kubernetes"].update({
        "kube-reserved": {"cpu": "100m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        "registry-qps": 5, "registry-burst": 10, "event-qps": 0, "event-burst": 20,
        "kube-api-qps": 15, "kube-api-burst": 30, "container-log-max-size": "10Mi",
        "container-log-max-files": 5, "cpu-cfs-quota-enforced": False,
        "cpu-manager-reconcile-period": "10s", "topology-manager-scope": "pod",
        "topology-manager-policy": "single-numa-node", "pod-pids-limit": 4096,
        "provider-id": "aws:///us-west-2a/i-0123456789abcdef0", "seccomp-default": True,
        "shutdown-grace-period": "30s", "shutdown-grace-period-for-critical-pods": "10s",
        "reserved-cpus": "0-1", "node-ip": "fd00:10::7", "hostname-override": "node-7.internal",
        "log-level": 4,
    })
    files = render("aws-k8s-1.30", settings)
    config = kubelet_config(files["kubelet-config"])
    assert config["clusterDNS"] == ["10.0.0.1", "10.0.0.2"]
    assert config["evictionHard"] == {"memory.available": "15%"}
    assert config["evictionSoft"] == {"memory.available": "12%"}
    assert config["evictionSoftGracePeriod"] == {"memory.available": "30s"}
    assert config["evictionMaxPodGracePeriod"] == 40
    assert config["allowedUnsafeSysctls"] == ["net.core.somaxconn", "net.ipv4.ip_local_port_range"]
    assert config["cpuManagerPolicy"] == "static"
    assert config["cpuManagerPolicyOptions"] == {"full-pcpus-only": "true"}
    assert (config["imageGCHighThresholdPercent"], config["imageGCLowThresholdPercent"]) == (85, 80)
    assert config["memoryManagerPolicy"] == "Static"
    assert config["reservedMemory"] == [
        {"numaNode": 0, "limits": {"hugepages-1Gi": "1Gi", "memory": "674Mi"}},
        {"numaNode": 1, "limits": {"hugepages-2Mi": "2148Mi"}},
    ]
    assert config["systemReserved"] == {"cpu": "10m", "memory": "100Mi", "ephemeral-storage": "1Gi"}
    assert config["kubeReserved"] == {"cpu": "100m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    assert (config["registryPullQPS"], config["registryBurst"]) == (5, 10)
    assert (config["eventRecordQPS"], config["eventBurst"]) == (0, 20)
    assert (config["kubeAPIQPS"], config["kubeAPIBurst"]) == (15, 30)
    assert (config["containerLogMaxSize"], config["containerLogMaxFiles"]) == ("10Mi", 5)
    assert config["cpuCFSQuota"] is False and config["seccompDefault"] is True
    assert config["topologyManagerScope"] == "pod"
    assert config["topologyManagerPolicy"] == "single-numa-node"
    assert config["podPidsLimit"] == 4096 and config["reservedSystemCPUs"] == "0-1"
    assert config["providerID"] == "aws:///us-west-2a/i-0123456789abcdef0"
    assert config["shutdownGracePeriod"] == "30s"
    assert config["shutdownGracePeriodCriticalPods"] == "10s"
    assert config["serverTLSBootstrap"] is True and "tlsCertFile" not in config

    env = sourced(files["kubelet-env"], tmp_path)
    assert env["NODE_IP"] == "fd00:10::7"
    assert env["NODE_LABELS"] == "label1=foo,label2=bar"
    assert env["NODE_TAINTS"] == (
        "dedicated=experimental:PreferNoSchedule,dedicated=experimental:NoExecute,"
        "special=true:NoSchedule")
    assert "AWS_PROFILE" not in env  # unset: the SDKs' own default profile
    assert env["KUBELET_ARGS"].split() == [
        "--cloud-provider=external", "--kubeconfig=/etc/kubernetes/kubelet/kubeconfig",
        "--image-credential-provider-bin-dir=/usr/libexec/kubernetes/kubelet/plugins",
        "--image-credential-provider-config=/etc/kubernetes/kubelet/credential-provider-config.yaml",
        "--hostname-override=node-7.internal", "-v=4",
    ]

    providers = YAML(typ="safe").load(files["credential-provider-config"])
    assert providers["kind"] == "CredentialProviderConfig"
    assert providers["apiVersion"] == "kubelet.config.k8s.io/v1"
    assert providers["providers"] == [{
        "name": "ecr-credential-provider",
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "matchImages": ["*.dkr.ecr.us-east-2.amazonaws.com", "*.dkr.ecr.us-west-2.amazonaws.com"],
        "defaultCacheDuration": "30m",
        "env": [{"name": "GOMAXPROCS", "value": "2"}, {"name": "KEY", "value": "abc123xyz"}],
    }]
    assert files["bootstrap-kubeconfig"].startswith("#")  # aws mode: not used
    assert YAML(typ="safe").load(files["bootstrap-kubeconfig"]) is None


def test_standalone_tls_and_serving_certificate_modes(tmp_path):
    files = render("aws-k8s-1.30", {"kubernetes": {
        **CLUSTER, "authentication-mode": "tls", "bootstrap-token": "abcdef.0123456789abcdef",
        "server-certificate": base64.b64encode(b"CERT\n").decode(),
        "server-key": base64.b64encode(b"KEY\n").decode(),
        "credential-providers": {"ecr-credential-provider": {"enabled": False}},
        "cluster-dns-ip": "fd00:10:100::a",
    }})
    config = kubelet_config(files["kubelet-config"])
    assert config["tlsCertFile"] == "/etc/kubernetes/pki/kubelet-server.crt"
    assert "serverTLSBootstrap" not in config
    assert config["clusterDNS"] == ["fd00:10:100::a"]
    assert (files["kubelet-server-crt"], files["kubelet-server-key"]) == ("CERT\n", "KEY\n")
    bootstrap = YAML(typ="safe").load(files["bootstrap-kubeconfig"])
    assert bootstrap["users"][0]["user"]["token"] == "abcdef.0123456789abcdef"
    args = sourced(files["kubelet-env"], tmp_path)["KUBELET_ARGS"].split()
    assert "--bootstrap-kubeconfig=/etc/kubernetes/kubelet/bootstrap-kubeconfig" in args
    assert not any(a.startswith("--image-credential-provider") for a in args)
    assert YAML(typ="safe").load(files["credential-provider-config"])["providers"] == []

    files = render("aws-k8s-1.30", {"kubernetes": {**CLUSTER, "standalone-mode": True}})
    config = kubelet_config(files["kubelet-config"])
    assert config["authorization"] == {"mode": "AlwaysAllow"}
    args = sourced(files["kubelet-env"], tmp_path)["KUBELET_ARGS"].split()
    assert "--cloud-provider=" in args and not any("--kubeconfig" in a for a in args)


def test_ecs_config_carries_every_ecs_key(tmp_path):
    ecs = {
        "cluster": "prod-ecs", "instance-attributes": {"attribute1": "foo"},
        "allow-privileged-containers": True, "logging-drivers": ["json-file"], "loglevel": "warn",
        "enable-spot-instance-draining": True, "image-pull-behavior": "prefer-cached",
        "container-stop-timeout": "45s", "task-cleanup-wait": "3h", "metadata-service-rps": 100,
        "metadata-service-burst": 150, "reserved-memory": 512, "image-cleanup-wait": "30m",
        "image-cleanup-delete-per-cycle": 10, "image-cleanup-enabled": False,
        "image-cleanup-age": "1h", "backend-host": "https://ecs.example.com",
        "awsvpc-block-imds": True, "enable-container-metadata": True,
    }
    properties = Schema.load("aws-ecs-2").section_schema("ecs")["properties"]
    assert set(ecs) == set(properties)  # every key of the section is exercised
    files = render("aws-ecs-2", {"ecs": ecs, "aws": {"profile": "ecs-profile"}})
    env = sourced(files["ecs-config"], tmp_path)
    assert env["ECS_CLUSTER"] == "prod-ecs"
    assert json.loads(env["ECS_INSTANCE_ATTRIBUTES"]) == {"attribute1": "foo"}
    assert json.loads(env["ECS_AVAILABLE_LOGGING_DRIVERS"]) == ["json-file"]
    assert env.items() >= {
        "ECS_PRIVILEGED_DISABLED": "false", "ECS_LOGLEVEL": "warn",
        "ECS_ENABLE_SPOT_INSTANCE_DRAINING": "true", "ECS_IMAGE_PULL_BEHAVIOR": "prefer-cached",
        "ECS_CONTAINER_STOP_TIMEOUT": "45s", "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION": "3h",
        "ECS_TASK_METADATA_RPS_LIMIT": "100,150", "ECS_RESERVED_MEMORY": "512",
        "ECS_IMAGE_CLEANUP_INTERVAL": "30m", "ECS_NUM_IMAGES_DELETE_PER_CYCLE": "10",
        "ECS_DISABLE_IMAGE_CLEANUP": "true", "ECS_IMAGE_MINIMUM_CLEANUP_AGE": "1h",
        "ECS_BACKEND_HOST": "https://ecs.example.com", "ECS_AWSVPC_BLOCK_IMDS": "true",
        "ECS_ENABLE_CONTAINER_METADATA": "true", "AWS_PROFILE": "ecs-profile",
    }.items()
    # Bottlerocket's own ECS defaults render too; unset keys keep the agent's defaults
    env = sourced(render("aws-ecs-2", {})["ecs-config"], tmp_path)
    assert env["ECS_IMAGE_PULL_BEHAVIOR"] == "default"
    assert env["ECS_ENABLE_SPOT_INSTANCE_DRAINING"] == "false"
    assert "ECS_RESERVED_MEMORY" not in env and "ECS_TASK_METADATA_RPS_LIMIT" not in env


def test_aws_files_and_ntp_options():
    config = base64.b64encode(b"[default]\nregion = us-west-2\n").decode()
    files = render("aws-dev", {"aws": {"config": config, "credentials": config},
                               "ntp": {"options": ["minpoll 4", "maxpoll", "6"]}})
    assert files["aws-config"] == files["aws-credentials"] == "[default]\nregion = us-west-2\n"
    unset = render("aws-dev", {})
    assert unset["aws-config"] == "# Not set (settings.aws.config); rendered by the reconciler.\n"
    catalog = Catalog.load("aws-dev")
    assert catalog.files["aws-credentials"].mode == catalog.files["aws-config"].mode == 0o600
    assert ("pool 169.254.169.123 minpoll 4 maxpoll 6\n"
            "pool 2.amazon.pool.ntp.org minpoll 4 maxpoll 6\n") in files["chrony-conf"]
    assert "pool 169.254.169.123 iburst\n" in render("aws-dev", {})["chrony-conf"]
    ipv6 = render("aws-dev", {"ntp": {"time-servers": ["fd00:ec2::123"]}})["chrony-conf"]
    assert "pool fd00:ec2::123 iburst\n" in ipv6


@pytest.mark.parametrize(
    ("variant", "change", "services"),
    [
        ("aws-k8s-1.30", {"kubernetes": {"eviction-hard": {"memory.available": "5%"}}},
         {"kubernetes"}),
        ("aws-k8s-1.30", {"kubernetes": {"node-taints": {"a": ["b:NoSchedule"]}}}, {"kubernetes"}),
        ("aws-k8s-1.30", {"aws": {"profile": "other"}}, {"kubernetes"}),
        ("aws-k8s-1.30", {"aws": {"config": "W2RlZmF1bHRd"}}, {"aws-config"}),
        ("aws-k8s-1.30", {"ntp": {"options": ["minpoll 4"]}}, {"chronyd"}),
        ("aws-ecs-2", {"ecs": {"reserved-memory": 256}}, {"ecs"}),
        ("aws-ecs-2", {"aws": {"profile": "other"}}, {"ecs"}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_changed_setting_restarts_only_the_services_that_read_it(
    tmp_path, variant, change, services
):
    user_data = tmp_path / "user-data.toml"
    user_data.write_text(
        '[settings.kubernetes]\ncluster-name = "prod"\napi-server = "https://k8s.example.com"\n'
        f'cluster-certificate = "{CLUSTER["cluster-certificate"]}"\n'
        if variant.startswith("aws-k8s") else '[settings.ecs]\ncluster = "prod"\n')
    with open_host(tmp_path / "state", variant=variant) as host:
        assert host.serve_once([str(user_data)]) == 0
        host.store.add_patch("change", change, "api:change", host.schema)
        plan = host.dry_run("change")  # the pass's own decision, over the transaction
    assert {s["name"] for s in plan["services"]} == services, plan


def test_readme_admin_snippet_boots_and_serves(tmp_path):
    """``enabled = true`` alone: the host boots, renders, and only the container may fail."""
    require_podman()
    admin = FIXTURES / "readme-2023-00-admin.toml"
    try:
        result = cli("serve", "--state-dir", tmp_path / "state", "--user-data", admin, "--once",
                     "--json", env={"CONTAINERS_CONF": str(REPO / "examples" / "containers.conf"),
                          "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    finally:
        reset_storage(tmp_path / "state" / "containers")
    assert "invalid user data" not in result.stderr
    receipt = json.loads(result.stdout)
    assert "settings.host-containers.admin.enabled" in receipt["changed_settings"]
    failed = [s for s in receipt["steps"] if s.get("result") == "failed"]
    # engine permitting the pass is ok; without the image, only the admin container fails
    assert result.returncode == (1 if failed else 0), result.stderr
    assert all((s["kind"], s["name"]) == ("container", "admin") for s in failed), failed
    # the defaults came along: admin's source, and control (disabled)
    assert {"settings.host-containers.admin.source",
            "settings.host-containers.control.enabled"} <= set(receipt["changed_settings"])
