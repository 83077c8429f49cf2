"""Bottlerocket's own user data and defaults, fed to our schema as a Bottlerocket operator would.

The fixtures under ``tests/fixtures/bottlerocket/`` are Bottlerocket's documented user-data
examples (the README settings reference of 2023 and the README of 2020, one file per example, each
naming its source commit and any placeholder replaced) and the ``[settings]`` of Bottlerocket's
default files (2020: ``sources/models/defaults.toml`` + the aws-k8s-1.15 override; 2024: every
file of ``sources/settings-defaults/{aws-k8s-1.30,aws-ecs-2}/defaults.d``), merged in order.

The AWS-service-only sections we leave out (``LEFT_OUT``) must be refused with their reason;
everything else must validate, on top of our defaults as the host applies it.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from hostcore.keys import merge_patch
from reconciler.schema import LEFT_OUT, Schema, UnknownVariant, variant_family
from tests.daemon import cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bottlerocket"
HOST_SECTIONS = {
    "kernel", "network", "dns", "container-registry", "container-runtime", "oci-defaults", "pki",
    "boot",
}
EXAMPLES = sorted(FIXTURES.glob("readme-*.toml"))


def example_variant(path: Path) -> str:
    return "aws-ecs-2" if "ecs" in path.name else "aws-k8s-1.30"


def gap_problems(schema: Schema, settings: dict) -> list:
    """Problems of ``settings`` on top of the defaults (as the host applies user data)."""
    return schema.validate(merge_patch(schema.defaults(), settings))


def test_the_host_sections_of_bottlerocket_are_all_here():
    assert set(Schema.load("aws-k8s-1.30").sections) >= HOST_SECTIONS


def test_the_fixtures_are_all_there():
    assert len([p for p in EXAMPLES if p.name.startswith("readme-2023-")]) == 32
    assert len([p for p in EXAMPLES if p.name.startswith("readme-2020-")]) == 6
    for path in EXAMPLES:
        assert "Bottlerocket's README.md" in path.read_text().splitlines()[0], path


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_documented_user_data_example_validates(path):
    settings = tomllib.loads(path.read_text())["settings"]
    schema = Schema.load(example_variant(path))
    left_out = set(settings) & set(LEFT_OUT)
    if left_out:  # only 'autoscaling' among the examples: refused, with the reason
        problems = schema.validate(settings)
        assert {p.key for p in problems} == {f"settings.{s}" for s in left_out}
        assert all("not supported" in p.message and "left out" in p.message for p in problems)
        return
    assert gap_problems(schema, settings) == []


def test_the_cli_validates_the_readme_admin_snippet_and_the_examples():
    admin = FIXTURES / "readme-2023-00-admin.toml"
    for variant in ("aws-dev", "aws-k8s-1.30", "aws-ecs-2", "metal-k8s-1.30", "vmware-k8s-1.31"):
        result = cli("validate", "--variant", variant, admin)
        assert result.returncode == 0, result.stderr
        assert f"valid for variant {variant}" in result.stdout
    kubernetes = [p for p in EXAMPLES if p.name.startswith("readme-2023-")
                  and any(w in p.name for w in ("dns-ip", "taints", "eviction", "memory", "gc",
                                                "credential-providers", "cpu", "reserved",
                                                "sysctls"))]
    assert len(kubernetes) == 11
    result = cli("validate", "--variant", "aws-k8s-1.30", *kubernetes)
    assert result.returncode == 0, result.stderr


DEFAULTS = json.loads((FIXTURES / "defaults.json").read_text())


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_bottlerocket_defaults_validate(name):
    settings = json.loads((FIXTURES / name).read_text())["settings"]
    variant = DEFAULTS[name]["variant"]
    schema = Schema.load(variant)
    ours = {k: v for k, v in settings.items() if k not in LEFT_OUT}
    refused = schema.validate({k: v for k, v in settings.items() if k in LEFT_OUT})
    assert {p.key for p in refused} == {f"settings.{k}" for k in set(settings) & set(LEFT_OUT)}
    assert gap_problems(schema, ours) == []


def test_bottlerocket_variant_names_map_onto_families():
    for name, family in {
        "aws-k8s-1.30": "aws-k8s", "aws-k8s-1.24-nvidia": "aws-k8s", "aws-k8s-1.31-fips": "aws-k8s",
        "metal-k8s-1.30": "aws-k8s", "vmware-k8s-1.31": "aws-k8s", "aws-ecs-1": "aws-ecs",
        "aws-ecs-2": "aws-ecs", "aws-ecs-2-nvidia": "aws-ecs", "aws-dev": "aws-dev",
        "metal-dev": "aws-dev", "vmware-dev": "aws-dev", "aws-k8s": "aws-k8s",
    }.items():
        assert variant_family(name) == family, name
        schema = Schema.load(name)
        assert schema.variant == name and schema.family == family
    for bad in ("aws-foo", "aws-k8s-", "aws-k8s-1.30-bogus", "aws-ecs-3", "AWS-DEV", ""):
        with pytest.raises(UnknownVariant) as caught:
            variant_family(bad)
        assert "\n" not in str(caught.value) and "aws-k8s-1.30" in str(caught.value)


def test_an_unknown_variant_is_a_one_line_error_everywhere(tmp_path):
    admin = FIXTURES / "readme-2023-00-admin.toml"
    for args in (("validate", "--variant", "aws-foo", admin),
                 ("serve", "--state-dir", tmp_path / "s", "--variant", "aws-foo", "--once"),
                 ("plan", "--state-dir", tmp_path / "p", "--variant", "aws-foo")):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "unknown variant 'aws-foo'" in result.stderr
        assert "Traceback" not in result.stderr


def test_default_host_containers_are_bottlerocket_s():
    for variant in ("aws-dev", "aws-k8s-1.30", "aws-ecs-2", "metal-k8s-1.30"):
        containers = Schema.load(variant).defaults()["host-containers"]
        assert containers["admin"] == {
            "source": "localhost/host-reconciler/admin:v0.1.0", "enabled": False,
            "superpowered": True,
        }
        assert containers["control"] == {
            "source": "localhost/host-reconciler/control:v0.1.0", "enabled": False,
            "superpowered": False,
        }
    # a container of one's own still needs a source
    schema = Schema.load("aws-dev")
    problems = schema.validate(merge_patch(schema.defaults(),
                                           {"host-containers": {"mine": {"enabled": True}}}))
    assert [str(p) for p in problems] == [
        "settings.host-containers.mine.source: required setting is missing"]


def test_secrets_are_marked_as_the_project_marks_them():
    schema = Schema.load("aws-k8s-1.30")
    settings = {
        "aws": {"config": "W2RlZmF1bHRd", "credentials": "W2RlZmF1bHRd", "profile": "p"},
        "kubernetes": {"bootstrap-token": "abcdef.0123456789abcdef", "server-key": "S0VZ"},
        "bootstrap-containers": {"b": {"source": "x", "user-data": "dXNlcg=="}},
    }
    assert schema.secret_keys(settings) == {
        "settings.aws.config", "settings.aws.credentials", "settings.kubernetes.bootstrap-token",
        "settings.kubernetes.server-key", "settings.bootstrap-containers.b.user-data",
    }
    # a bad secret is refused without echoing it
    problems = schema.validate({"kubernetes": {"bootstrap-token": "hunter2"}})
    assert len(problems) == 1 and "hunter2" not in problems[0].message


def test_the_settings_reference_is_current_and_lists_every_setting():
    from schemas.reference import reference

    committed = (Path(__file__).resolve().parent.parent / "schemas" / "REFERENCE.md").read_text()
    assert committed == reference(), "run: python -m schemas.reference > schemas/REFERENCE.md"
    schema = Schema.load("aws-k8s-1.30")
    for key in schema.section_schema("kubernetes")["properties"]:
        assert f"`settings.kubernetes.{key}" in committed, key
    for key in Schema.load("aws-ecs-2").section_schema("ecs")["properties"]:
        assert f"`settings.ecs.{key}`" in committed, key
    for section in LEFT_OUT:
        assert f"`settings.{section}`" in committed
