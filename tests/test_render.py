"""Rendering: every shipped template from example-like settings, errors naming keys, escaping,
the sandbox, and the helpers."""

from __future__ import annotations

import base64
import json
import shlex
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from renderers import helpers
from renderers.catalog import Catalog
from renderers.render import Renderer

OS = {"pretty_name": "Host OS 1.0", "variant_id": "aws-k8s", "version_id": "1.0.0",
      "build_id": "abc123", "arch": "x86_64"}
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def full_settings() -> dict[str, Any]:
    return {
        "motd": "hello from the fleet",
        "ntp": {"time-servers": ["0.pool.ntp.org", "169.254.169.123"]},
        "updates": {
            "metadata-base-url": "https://updates.example.com/aws-k8s/x86_64/",
            "targets-base-url": "https://updates.example.com/targets/",
            "seed": 1234,
            "version-lock": "v1.2.3",
            "ignore-waves": True,
        },
        "host-containers": {
            "admin": {"source": "registry.example.com/admin:v1", "enabled": True,
                      "superpowered": True, "user-data": "eyJzc2giOnt9fQ=="},
            "control": {"source": "registry.example.com/control:v1", "enabled": True},
        },
        "kubernetes": {
            "cluster-name": "prod",
            "api-server": "https://k8s.example.com",
            "cluster-certificate": base64.b64encode(CA.encode()).decode(),
            "cluster-dns-ip": "10.100.0.10",
            "node-ip": "10.0.0.7",
            "node-labels": {"team": "infra", "example.com/tier": "gold"},
            "node-taints": {"dedicated": "infra:NoSchedule"},
            "max-pods": 58,
        },
        "ecs": {
            "cluster": "prod-ecs",
            "instance-attributes": {"rack": "r1"},
            "allow-privileged-containers": True,
            "logging-drivers": ["json-file", "awslogs"],
            "loglevel": "debug",
        },
        "aws": {"region": "us-west-2"},
    }


def model(settings: dict[str, Any]) -> dict[str, Any]:
    return {"settings": settings, "os": OS}


def render(variant: str, settings: dict[str, Any], names: list[str] | None = None):
    return Renderer(Catalog.load(variant)).render_all(model(settings), names)


def env_file(text: str) -> dict[str, str]:
    """Parse KEY=value lines as a POSIX shell would (what EnvironmentFile= accepts)."""
    result = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            (parsed,) = shlex.split(value) or [""]
            result[key] = parsed
    return result


def test_every_k8s_template_renders_full_settings() -> None:
    result = render("aws-k8s", full_settings())
    assert result.errors == {}
    files = {name: r.content.decode() for name, r in result.files.items()}
    assert files["motd"] == "hello from the fleet\n"
    assert "pool 0.pool.ntp.org iburst\npool 169.254.169.123 iburst\n" in files["chrony-conf"]
    assert files["kubernetes-ca-crt"] == CA
    yaml = YAML(typ="safe")
    config = yaml.load(files["kubelet-config"])
    assert config["kind"] == "KubeletConfiguration"
    assert config["clusterDomain"] == "cluster.local"
    assert config["clusterDNS"] == ["10.100.0.10"]
    assert config["maxPods"] == 58
    kubeconfig = yaml.load(files["kubeconfig"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://k8s.example.com"
    args = kubeconfig["users"][0]["user"]["exec"]["args"]
    assert args[:3] == ["token", "-i", "prod"]
    assert args[3:] == ["--region", full_settings()["aws"]["region"]]  # aws.region is used
    env = env_file(files["kubelet-env"])
    assert env["NODE_IP"] == "10.0.0.7"
    assert env["NODE_LABELS"] == "example.com/tier=gold,team=infra"
    assert env["NODE_TAINTS"] == "dedicated=infra:NoSchedule"
    updog = tomllib.loads(files["updog-toml"])
    assert updog == {
        "metadata_base_url": "https://updates.example.com/aws-k8s/x86_64/",
        "targets_base_url": "https://updates.example.com/targets/",
        "seed": 1234, "version_lock": "v1.2.3", "ignore_waves": True,
    }


def test_ecs_config() -> None:
    result = render("aws-ecs", full_settings(), ["ecs-config"])
    env = env_file(result.files["ecs-config"].content.decode())
    assert env["ECS_CLUSTER"] == "prod-ecs"
    assert json.loads(env["ECS_INSTANCE_ATTRIBUTES"]) == {"rack": "r1"}
    assert json.loads(env["ECS_AVAILABLE_LOGGING_DRIVERS"]) == ["json-file", "awslogs"]
    assert env["ECS_PRIVILEGED_DISABLED"] == "false"
    assert env["ECS_LOGLEVEL"] == "debug"


def test_optional_settings_absent_use_defaults() -> None:
    settings = {"updates": full_settings()["updates"],
                "kubernetes": {k: v for k, v in full_settings()["kubernetes"].items()
                               if k in ("cluster-name", "api-server", "cluster-certificate")}}
    del settings["updates"]["seed"], settings["updates"]["version-lock"]
    del settings["updates"]["ignore-waves"]
    result = render("aws-k8s", settings)
    assert result.errors == {}
    files = {name: r.content.decode() for name, r in result.files.items()}
    assert files["motd"] == "\n"
    assert "pool" not in files["chrony-conf"]
    config = YAML(typ="safe").load(files["kubelet-config"])
    assert config["maxPods"] == 110
    assert config["clusterDNS"] == []
    env = env_file(files["kubelet-env"])
    assert env == {"NODE_LABELS": "", "NODE_TAINTS": "",
                   "KUBELET_ARGS": "--kubeconfig=/etc/kubernetes/kubelet/kubeconfig"}
    updog = tomllib.loads(files["updog-toml"])
    assert updog["version_lock"] == "latest" and updog["ignore_waves"] is False
    assert "seed" not in updog

    ecs = render("aws-ecs", {}, ["ecs-config"]).files["ecs-config"].content.decode()
    env = env_file(ecs)
    assert "ECS_CLUSTER" not in env
    assert env["ECS_PRIVILEGED_DISABLED"] == "true"
    assert env["ECS_LOGLEVEL"] == "info"
    assert json.loads(env["ECS_INSTANCE_ATTRIBUTES"]) == {}


def test_missing_required_setting_names_the_key_and_others_still_render() -> None:
    settings = full_settings()
    del settings["kubernetes"]["api-server"]
    result = render("aws-k8s", settings)
    assert result.errors == {"kubeconfig": "'settings.kubernetes.api-server' is not set"}
    assert "kubelet-config" in result.files and "motd" in result.files

    result = render("aws-k8s", {})
    assert result.errors["kubernetes-ca-crt"] == (
        "'settings.kubernetes.cluster-certificate' is not set")
    assert result.errors["updog-toml"] == "'settings.updates.metadata-base-url' is not set"


def test_invalid_value_is_that_files_error() -> None:
    settings = full_settings()
    settings["kubernetes"]["cluster-certificate"] = "not base64!"
    result = render("aws-k8s", settings)
    assert "base64_decode" in result.errors["kubernetes-ca-crt"]
    settings["ntp"]["time-servers"] = ["pool.ntp.org\nmakestep 1000 -1"]
    assert "word" in render("aws-k8s", settings).errors["chrony-conf"]


def test_values_are_escaped_for_each_syntax() -> None:
    nasty = 'a"b\\c\'d $x `e` \t'
    settings = full_settings()
    settings["updates"]["version-lock"] = nasty
    settings["host-containers"]["admin"]["source"] = nasty + "\n[evil]\nx=1"
    settings["kubernetes"]["cluster-name"] = nasty + "\n- injected"
    settings["kubernetes"]["node-labels"] = {"k": "v'; rm -rf / #"}
    settings["ecs"]["cluster"] = nasty
    result = render("aws-k8s", settings)
    assert result.errors == {}
    files = {name: r.content.decode() for name, r in result.files.items()}
    assert tomllib.loads(files["updog-toml"])["version_lock"] == nasty
    kubeconfig = YAML(typ="safe").load(files["kubeconfig"])
    assert kubeconfig["users"][0]["user"]["exec"]["args"][:3] == ["token", "-i",
                                                                  nasty + "\n- injected"]
    assert env_file(files["kubelet-env"])["NODE_LABELS"] == "k=v'; rm -rf / #"
    ecs = render("aws-ecs", settings, ["ecs-config"]).files["ecs-config"].content.decode()
    assert env_file(ecs)["ECS_CLUSTER"] == nasty


def test_shell_quote_refuses_line_breaks() -> None:
    settings = full_settings()
    settings["ecs"]["cluster"] = "a\nECS_PRIVILEGED_DISABLED=false"
    result = render("aws-ecs", settings, ["ecs-config"])
    assert "line break" in result.errors["ecs-config"]


@pytest.mark.parametrize("body", [
    "{{ ''.__class__.__mro__ }}",
    "{{ settings.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ default.__globals__ }}",
    "{% set x = settings.update({'motd': 'pwned'}) %}",
    "{{ ().__class__.__base__.__subclasses__() }}",
])
def test_sandbox_refuses_python_internals(tmp_path: Path, body: str) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "evil.j2").write_text(body)
    (tmp_path / "templates" / "motd.j2").write_text("{{ settings.motd }}\n")
    (tmp_path / "metadata.toml").write_text(textwrap.dedent("""
        [configuration-files.evil]
        path = "/etc/evil"
        template = "evil.j2"
        [configuration-files.motd]
        path = "/etc/motd"
        template = "motd.j2"
        [services.s]
        configuration-files = ["evil", "motd"]
    """))
    catalog = Catalog.load("aws-dev", tmp_path / "metadata.toml", tmp_path / "templates")
    settings = {"motd": "hi"}
    result = Renderer(catalog).render_all(model(settings))
    assert "evil" not in result.files
    assert "unsafe" in result.errors["evil"] or "not set" in result.errors["evil"]
    assert result.files["motd"].content == b"hi\n"
    assert settings == {"motd": "hi"}


def test_dunder_access_is_a_security_error(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "evil.j2").write_text("{{ ''.__class__.__mro__ }}")
    (tmp_path / "m.toml").write_text(
        '[configuration-files.evil]\npath = "/e"\ntemplate = "evil.j2"\n'
        '[services.s]\nconfiguration-files = ["evil"]\n')
    result = Renderer(Catalog.load("aws-dev", tmp_path / "m.toml", tmp_path / "t")).render_all(
        model({}))
    assert result.errors["evil"].startswith("template tried an unsafe operation")


def test_settings_named_like_dict_methods_are_settings(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "g.j2").write_text("{{ settings.gitops.items }} {{ settings.gitops.path }}")
    (tmp_path / "m.toml").write_text(
        '[configuration-files.g]\npath = "/g"\ntemplate = "g.j2"\n'
        '[services.s]\nconfiguration-files = ["g"]\n')
    renderer = Renderer(Catalog.load("aws-dev", tmp_path / "m.toml", tmp_path / "t"))
    result = renderer.render_all(model({"gitops": {"items": "i", "path": "p"}}))
    assert result.files["g"].content == b"i p"
    assert renderer.render_all(model({"gitops": {}})).errors["g"] == (
        "'settings.gitops.items' is not set")


def test_unknown_file_name_is_an_error() -> None:
    assert render("aws-dev", {}, ["nope"]).errors == {"nope": "unknown configuration file 'nope'"}


# --- helpers ------------------------------------------------------------------------------------


def test_join_map() -> None:
    assert helpers.join_map({"b": 2, "a": True}, "=", ",") == "a=true,b=2"
    assert helpers.join_map(None, "=", ",", fail_if_missing=False) == ""
    with pytest.raises(helpers.HelperError):
        helpers.join_map(None, "=", ",")
    with pytest.raises(helpers.HelperError, match="not a scalar"):
        helpers.join_map({"a": [1]}, "=", ",")


def test_base64_decode() -> None:
    assert helpers.base64_decode(base64.b64encode("héllo".encode()).decode()) == "héllo"
    with pytest.raises(helpers.HelperError):
        helpers.base64_decode("%%%")
    with pytest.raises(helpers.HelperError):
        helpers.base64_decode(base64.b64encode(b"\xff\xfe").decode())


def test_default_as_function_and_filter(tmp_path: Path) -> None:
    assert helpers.default(None, 3) == 3 and helpers.default(0, 3) == 0
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "d.j2").write_text(
        '{{ default(settings.a.b.c, 1) }} {{ settings.x | default("y") }} '
        '{{ settings.a.b is defined }} {{ default(settings.z, 2) }}')
    (tmp_path / "m.toml").write_text(
        '[configuration-files.d]\npath = "/d"\ntemplate = "d.j2"\n'
        '[services.s]\nconfiguration-files = ["d"]\n')
    renderer = Renderer(Catalog.load("aws-dev", tmp_path / "m.toml", tmp_path / "t"))
    assert renderer.render_all(model({"z": 0})).files["d"].content == b"1 y False 0"


def test_undefined_passed_to_a_helper_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "j.j2").write_text('{{ join_map(settings.k8s["node-labels"], "=", ",") }}')
    (tmp_path / "m.toml").write_text(
        '[configuration-files.j]\npath = "/j"\ntemplate = "j.j2"\n'
        '[services.s]\nconfiguration-files = ["j"]\n')
    renderer = Renderer(Catalog.load("aws-dev", tmp_path / "m.toml", tmp_path / "t"))
    assert renderer.render_all(model({})).errors["j"] == (
        "'settings.k8s.node-labels' is not set")


@pytest.mark.parametrize("value", ["plain", 'q"uote', "back\\slash", "tab\tnl\nnul\x00",
                                   "del\x7f", "uni\u2028\u0085é"])
def test_string_escapers_round_trip(value: str) -> None:
    assert tomllib.loads(f"k = {helpers.toml_string(value)}")["k"] == value
    assert YAML(typ="safe").load(f"k: {helpers.yaml_string(value)}")["k"] == value
    assert json.loads(helpers.json(value)) == value


def test_toml_encodes_structures() -> None:
    value = {"a": [1, 2.5, True], "b c": {"d": "e"}}
    assert tomllib.loads(f"k = {helpers.toml(value)}")["k"] == value
