"""The settings schema (schemas/*.json, reconciler.schema) against real files."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from hostcore.documents import load_settings
from reconciler.schema import (
    DEFAULT_VARIANT,
    VARIANTS,
    InvalidSettings,
    Problem,
    Schema,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "user-data"
SCHEMAS = resources.files("schemas")
COMMON = {"motd", "updates", "ntp", "host-containers", "aws", "gitops", "coordination",
          "kernel", "network", "dns", "boot", "pki", "container-registry",
          "bootstrap-containers"}


def problems_of(variant: str, settings: dict) -> list[Problem]:
    return Schema.load(variant).validate(settings)


def keys_of(problems: list[Problem]) -> list[str]:
    return [p.key for p in problems]


# --- the files ----------------------------------------------------------------------------------


def test_variants_and_sections():
    assert VARIANTS == ("aws-dev", "aws-ecs", "aws-k8s")
    assert DEFAULT_VARIANT == "aws-dev"
    assert set(Schema.load("aws-dev").sections) == COMMON
    assert set(Schema.load("aws-k8s").sections) == COMMON | {
        "kubernetes", "container-runtime", "oci-defaults"}
    assert set(Schema.load("aws-ecs").sections) == COMMON | {"ecs", "oci-defaults"}
    assert Schema.load().variant == DEFAULT_VARIANT
    assert Schema.load("aws-k8s") is Schema.load("aws-k8s")


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(ValueError) as caught:
        Schema.load("aws-k9s")
    for variant in VARIANTS:
        assert variant in str(caught.value)


def _all_schema_files() -> dict[str, dict]:
    return {
        entry.name: json.loads(entry.read_text())
        for entry in SCHEMAS.iterdir()
        if entry.name.endswith(".json")
    }


def _subschemas(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _subschemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _subschemas(value)


def test_one_file_per_section_with_unique_ids():
    files = _all_schema_files()
    sections = {s for v in VARIANTS for s in Schema.load(v).sections}
    assert {f"{s}.json" for s in sections} | {"types.json"} == set(files)
    ids = [doc["$id"] for doc in files.values()]
    assert len(set(ids)) == len(ids)
    for name, doc in files.items():
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        Draft202012Validator.check_schema(doc)


def test_every_object_closes_its_properties_and_every_pattern_is_anchored():
    for name, doc in _all_schema_files().items():
        for sub in _subschemas(doc):
            if sub.get("type") == "object":
                assert "additionalProperties" in sub, (name, sub.get("description"))
                if sub["additionalProperties"] is not False:
                    assert "propertyNames" in sub, (name, sub.get("description"))
            if "pattern" in sub:
                pattern = sub["pattern"]
                assert pattern.startswith("^") and pattern.endswith("$"), (name, pattern)
                re.compile(pattern)
                assert "x-rule" in sub, (name, pattern)


def test_refs_resolve_with_a_plain_referencing_registry():
    """Other tools can validate with the files alone: load every file by its $id."""
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    files = _all_schema_files()
    registry = Registry().with_resources(
        (doc["$id"], DRAFT202012.create_resource(doc)) for doc in files.values()
    )
    validator = Draft202012Validator(files["kubernetes.json"], registry=registry)
    assert validator.is_valid({"node-labels": {"team.example.com/owner": "infra"}})
    assert not validator.is_valid({"node-labels": {"bad label": "x"}})
    assert not validator.is_valid({"cluster-dns-ip": "10.0.0"})


def test_defaults_validate_and_hold_only_the_variant_sections():
    defaults_file = tomllib.loads(SCHEMAS.joinpath("defaults.toml").read_text())["settings"]
    for variant in VARIANTS:
        schema = Schema.load(variant)
        defaults = schema.defaults()
        assert schema.validate(defaults) == []
        assert set(defaults) <= set(schema.sections)
        assert set(defaults) == set(defaults_file) & set(schema.sections)
    assert "kubernetes" not in Schema.load("aws-dev").defaults()
    k8s = Schema.load("aws-k8s").defaults()
    assert k8s["kubernetes"]["cluster-domain"] == "cluster.local"
    assert k8s["ntp"]["time-servers"] == ["169.254.169.123", "2.amazon.pool.ntp.org"]
    assert k8s["updates"]["version-lock"] == "latest"
    assert k8s["updates"]["ignore-waves"] is False
    ecs = Schema.load("aws-ecs").defaults()["ecs"]
    assert ecs == {
        "allow-privileged-containers": False,
        "logging-drivers": ["json-file", "awslogs", "none"],
        "loglevel": "info",
        "image-pull-behavior": "default",
    }
    # Bottlerocket's two host containers, disabled, with the project's own images
    admin, control = (defaults_file["host-containers"][n] for n in ("admin", "control"))
    assert admin == {"source": "localhost/host-reconciler/admin:v0.1.0", "enabled": False,
                     "superpowered": True}
    assert control == {"source": "localhost/host-reconciler/control:v0.1.0", "enabled": False,
                       "superpowered": False}
    assert isinstance(Schema.load().defaults()["gitops"]["interval"], int)


def test_defaults_are_a_copy():
    schema = Schema.load("aws-dev")
    schema.defaults()["ntp"]["time-servers"].append("evil")
    assert "evil" not in schema.defaults()["ntp"]["time-servers"]


# --- examples -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_every_example_validates_for_its_variant(variant, suffix):
    [(origin, settings)] = load_settings([EXAMPLES / f"{variant}{suffix}"])
    Schema.load(variant).check(settings, origin=origin)
    assert settings["motd"] == "hello from the fleet"


@pytest.mark.parametrize("variant", VARIANTS)
def test_toml_and_yaml_examples_agree(variant):
    (_, toml), (_, yaml) = load_settings(
        [EXAMPLES / f"{variant}.toml", EXAMPLES / f"{variant}.yaml"]
    )
    assert toml == yaml


def test_dev_example_enables_no_host_container():
    [(_, settings)] = load_settings([EXAMPLES / "aws-dev.toml"])
    for container in settings.get("host-containers", {}).values():
        assert container.get("enabled", False) is False


def test_k8s_example_covers_the_interesting_types():
    [(_, settings)] = load_settings([EXAMPLES / "aws-k8s.toml"])
    k8s = settings["kubernetes"]
    assert any("." in label for label in k8s["node-labels"])
    for name in ("cluster-name", "api-server", "cluster-certificate", "node-taints", "node-ip"):
        assert name in k8s
    import base64

    assert base64.b64decode(k8s["cluster-certificate"]).startswith(b"-----BEGIN CERTIFICATE")


# --- problems: unknown keys, names, variants ----------------------------------------------------


def test_typo_gets_did_you_mean():
    [problem] = problems_of("aws-dev", {"ntp": {"time-server": ["0.pool.ntp.org"]}})
    assert problem.key == "settings.ntp.time-server"
    assert "did you mean" in problem.message
    assert "'settings.ntp.time-servers'" in problem.message
    assert str(problem) == f"settings.ntp.time-server: {problem.message}"


def test_unknown_keys_without_a_close_match_list_the_valid_names():
    [problem] = problems_of("aws-dev", {"updates": {"zzzzzz": 1}})
    assert problem.key == "settings.updates.zzzzzz"
    assert problem.message.startswith("unknown setting")
    assert "settings.updates.seed" in problem.message


def test_typos_inside_map_entries_and_top_level():
    problems = problems_of(
        "aws-dev",
        {"motdd": "x", "host-containers": {"admin": {"source": "a/b:1", "enable": True}}},
    )
    assert keys_of(problems) == ["settings.host-containers.admin.enable", "settings.motdd"]
    assert "'settings.host-containers.admin.enabled'" in problems[0].message
    assert "'settings.motd'" in problems[1].message


def test_bad_label_key_is_named_with_its_rule():
    problems = problems_of("aws-k8s", {"kubernetes": {"node-labels": {"bad label": "x"}}})
    assert keys_of(problems) == ['settings.kubernetes.node-labels."bad label"']
    assert "must be a Kubernetes label key" in problems[0].message
    assert "does not match" not in problems[0].message  # no raw regex dump


def test_bad_map_value_is_named_by_its_quoted_key():
    problems = problems_of(
        "aws-k8s", {"kubernetes": {"node-labels": {"team.example.com/owner": "no spaces"}}}
    )
    assert keys_of(problems) == ['settings.kubernetes.node-labels."team.example.com/owner"']
    assert "Kubernetes label value" in problems[0].message
    assert '"no spaces"' in problems[0].message


def test_map_key_that_is_no_key_segment_is_a_problem():
    # ECS attribute names allow what key segments allow; a name with a space breaks both
    problems = problems_of("aws-ecs", {"ecs": {"instance-attributes": {"a b": "x"}}})
    assert keys_of(problems) == ['settings.ecs.instance-attributes."a b"']
    # an unknown name that cannot be a segment either is one problem at that key
    problems = problems_of("aws-dev", {"aws": {"re gion": "us-west-2"}})
    assert keys_of(problems) == ['settings.aws."re gion"']


def test_non_string_names_are_problems():
    problems = problems_of("aws-k8s", {"kubernetes": {"node-labels": {1: "x"}}})
    assert keys_of(problems) == ['settings.kubernetes.node-labels."1"']
    assert "string" in problems[0].message


def test_overlong_keys_are_problems():
    name = "a" * 63
    label = ".".join(["b" * 60] * 4) + "/" + name  # a valid label key, too long for a key
    problems = problems_of("aws-k8s", {"kubernetes": {"node-labels": {label: "x"}}})
    assert len(problems) == 1
    assert "longer than 255 bytes" in problems[0].message


def test_section_of_another_variant_is_rejected_naming_the_key():
    problems = problems_of("aws-ecs", {"kubernetes": {"cluster-name": "prod"}})
    assert keys_of(problems) == ["settings.kubernetes"]
    assert "aws-ecs" in problems[0].message and "aws-k8s" in problems[0].message
    problems = problems_of("aws-dev", {"ecs": {"cluster": "x"}})
    assert keys_of(problems) == ["settings.ecs"]
    assert problems_of("aws-k8s", {"kubernetes": {"cluster-name": "prod"}}) == []


def test_host_container_without_source():
    problems = problems_of("aws-dev", {"host-containers": {"admin": {"enabled": True}}})
    assert keys_of(problems) == ["settings.host-containers.admin.source"]
    assert "missing" in problems[0].message


def test_host_container_names_are_identifiers():
    entry = {"source": "registry.example.com/admin:v1"}
    assert problems_of("aws-dev", {"host-containers": {"admin-2": entry}}) == []
    problems = problems_of("aws-dev", {"host-containers": {"my_box": entry}})
    assert keys_of(problems) == ["settings.host-containers.my_box"]
    assert "host-container name" in problems[0].message
    problems = problems_of("aws-dev", {"host-containers": {"-x": entry}})
    assert keys_of(problems) == ['settings.host-containers.-x']


def test_wrong_types_of_tables():
    problems = problems_of("aws-dev", {"ntp": "0.pool.ntp.org", "motd": 3})
    assert problems == [
        Problem("settings.motd", "must be text (at most 65536 characters) (got 3)"),
        Problem("settings.ntp", 'must be a table (got "0.pool.ntp.org")'),
    ]
    assert keys_of(problems_of("aws-dev", ["motd"])) == ["settings"]


def test_list_items_are_named_by_index():
    problems = problems_of("aws-dev", {"ntp": {"time-servers": ["ok.example.com", "bad server"]}})
    assert keys_of(problems) == ["settings.ntp.time-servers"]
    assert problems[0].message.startswith("item 1: must be a URL")
    problems = problems_of("aws-dev", {"ntp": {"time-servers": ["a.example", "a.example"]}})
    assert "repeat" in problems[0].message


def test_every_problem_is_reported_sorted():
    problems = problems_of(
        "aws-k8s",
        {
            "updates": {"seed": 5000, "version-lock": "1.2"},
            "kubernetes": {"max-pods": "110", "node-ip": "1.2.3"},
            "motd": "ok",
        },
    )
    assert keys_of(problems) == [
        "settings.kubernetes.max-pods",
        "settings.kubernetes.node-ip",
        "settings.updates.seed",
        "settings.updates.version-lock",
    ]
    assert problems == sorted(problems)


# --- value types --------------------------------------------------------------------------------

CERT = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJ+Zz09Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K"

# (variant, path to the value, good values, bad values, words of the rule)
VALUE_CASES = [
    ("aws-dev", ("motd",), ["", "hello\nfrom the fleet"], [3, None, ["x"]], "text"),
    (
        "aws-dev",
        ("ntp", "time-servers"),
        [[], ["169.254.169.123", "2.amazon.pool.ntp.org"], ["ntp://time.example.com:123"]],
        ["0.pool.ntp.org", [""], ["a b"], ["x\n"], [1]],
        "",
    ),
    (
        "aws-dev",
        ("updates", "metadata-base-url"),
        [
            "https://updates.example.com/2020-07-07/aws-dev/x86_64/",
            "localhost:8080/m",
            "http://[::1]:80/",
        ],
        ["", "https://", "http://a b/", "https://x/\n", "https://x/\x00"],
        "URL",
    ),
    ("aws-dev", ("updates", "seed"), [0, 1, 2047], [-1, 2048, "5", True, 5.0, 1.5], "0 to 2047"),
    (
        "aws-dev",
        ("updates", "version-lock"),
        ["latest", "v1.2.3", "1.20.0", "v1.2.3-rc.1"],
        ["Latest", "v1.2", "v01.2.3", "version1", "latest\n", ""],
        "vX.Y.Z",
    ),
    ("aws-dev", ("updates", "ignore-waves"), [True, False], ["true", 0, 1], "boolean"),
    (
        "aws-dev",
        ("aws", "region"),
        ["us-west-2", "eu-central-1", "us-gov-west-1", "eusc-de-east-1"],
        ["", "US-WEST-2", "us--west-2", "-us-west-2", "us west 2", "us-west-2\n"],
        "AWS region",
    ),
    (
        "aws-dev",
        ("host-containers", "admin", "source"),
        [
            "public.ecr.aws/bottlerocket/bottlerocket-admin:v0.11.9",
            "localhost:5000/admin@sha256:" + "a" * 64,
            "docker://docker.io/library/busybox:1.36",
            "docker-archive:/var/lib/images/admin.tar",
            "oci-archive:/srv/admin.oci.tar",
        ],
        ["", "has space:1", "-rf", "admin\n", 7],
        "container image",
    ),
    (
        "aws-dev",
        ("host-containers", "admin", "user-data"),
        ["", "aGVsbG8=", "aGVsbA==", "aGVs"],
        ["hello!", "aGVsbG8", "aGVs\nbG8=", "=aGVs"],
        "base64",
    ),
    ("aws-dev", ("host-containers", "admin", "superpowered"), [True], ["yes"], "boolean"),
    (
        "aws-dev",
        ("gitops", "url"),
        [
            "https://git.example.com/fleet.git",
            "ssh://git@git.example.com:2222/fleet.git",
            "git@github.com:example/fleet.git",
            "file:///srv/git/fleet.git",
            "/srv/git/fleet.git",
        ],
        ["", "fleet.git", "https://a b", "/srv/x\n"],
        "git repository",
    ),
    (
        "aws-dev",
        ("gitops", "ref"),
        ["main", "release/v1.2", "v1.2.3", "0123456789abcdef0123456789abcdef01234567"],
        ["", "-x", "a..b", "a b", "main/", "x.lock", "a:b", "/main"],
        "branch, tag or commit",
    ),
    (
        "aws-dev",
        ("gitops", "path"),
        [".", "clusters/prod", "a_b/c-d/e.f"],
        ["", "/abs", "../up", "a/../b", "a//b", ".hidden", "a/"],
        "relative path",
    ),
    ("aws-dev", ("gitops", "interval"), [1, 300, 86400], [0, -5, "5m", 86401, 2.5], "seconds"),
    (
        "aws-dev",
        ("gitops", "host-id"),
        ["node-1", "ip-10-0-0-1.ec2.internal", "A_b"],
        ["", "-node", "node-", "a b", "x" * 64, "a/b"],
        "host name",
    ),
    (
        "aws-dev",
        ("gitops", "groups"),
        [[], ["k8s", "gpu-a100"]],
        [["a b"], ["a.b"], ["x", "x"], "k8s"],
        "",
    ),
    ("aws-dev", ("gitops", "verify", "mode"), ["none", "ssh", "gpg"], ["x509", ""], "none, ssh"),
    (
        "aws-dev",
        ("gitops", "verify", "allowed-signers"),
        ["/etc/reconciler/allowed_signers"],
        ["allowed_signers", ""],
        "absolute",
    ),
    (
        "aws-k8s",
        ("kubernetes", "cluster-name"),
        ["prod", "prod-east_1.a"],
        ["", "-prod", "a" * 64, "prod east"],
        "cluster name",
    ),
    ("aws-k8s", ("kubernetes", "cluster-certificate"), [CERT], ["not base64!"], "base64"),
    (
        "aws-k8s",
        ("kubernetes", "api-server"),
        ["https://A1B2.gr7.us-east-1.eks.amazonaws.com", "https://10.0.0.1:6443"],
        ["https://api server"],
        "URL",
    ),
    (
        "aws-k8s",
        ("kubernetes", "node-labels", "role"),
        ["", "worker", "a.b_c-d", "x" * 63],
        ["-x", "x-", "x" * 64, "a b", "a/b", 3],
        "label value",
    ),
    (
        "aws-k8s",
        ("kubernetes", "node-taints", "dedicated"),
        ["gpu:NoSchedule", ":PreferNoSchedule", "x:NoExecute"],
        ["gpu", "gpu:Nope", "gpu:noschedule", "a b:NoSchedule", "gpu:NoSchedule\n"],
        "taint",
    ),
    (
        "aws-k8s",
        ("kubernetes", "cluster-domain"),
        ["cluster.local", "k8s.example.com", "local"],
        ["", ".cluster.local", "cluster..local", "10.0.0.1", "-a.local", "a_b.local"],
        "DNS domain",
    ),
    ("aws-k8s", ("kubernetes", "max-pods"), [1, 110], [0, -1, "110", 110.0, True], "positive"),
    (
        "aws-k8s",
        ("kubernetes", "cluster-dns-ip"),
        ["10.100.0.10", "172.20.0.10", "0.0.0.0", "::1", "fd00:10:100::a", ["10.0.0.1", "fd00::2"]],
        ["10.100.0", "256.1.1.1", "010.1.1.1", "a.b.c.d", "10.0.0.1\n", "", [], ["10.0.0"], "1:2"],
        "IP address",
    ),
    (
        "aws-k8s",
        ("kubernetes", "node-ip"),
        ["10.0.12.34", "fd00::12:34"],
        ["10.0.12.34/24", "fd00::/64", "::g"],
        "IPv6 address",
    ),
    (
        "aws-k8s",
        ("kubernetes", "pod-infra-container-image"),
        ["registry.k8s.io/pause:3.9"],
        ["pause 3.9"],
        "container image",
    ),
    (
        "aws-ecs",
        ("ecs", "cluster"),
        ["batch-west", "arn:aws:ecs:us-west-2:1:cluster/x"],
        ["", "a\nb"],
        "line",
    ),
    (
        "aws-ecs",
        ("ecs", "instance-attributes", "stage"),
        ["prod", "a b", "user@host:/x"],
        ["", " lead", "trail ", "a!b", "x" * 129],
        "ECS attribute value",
    ),
    ("aws-ecs", ("ecs", "allow-privileged-containers"), [False], ["no"], "boolean"),
    (
        "aws-ecs",
        ("ecs", "logging-drivers"),
        [["json-file", "awslogs", "none"]],
        [["json-file", "json-file"], [""], "json-file"],
        "",
    ),
    (
        "aws-ecs",
        ("ecs", "loglevel"),
        ["debug", "info", "warn", "error", "crit"],
        ["warning", "INFO", ""],
        "log level",
    ),
]


def nest(path: tuple[str, ...], value):
    for name in reversed(path):
        value = {name: value}
    return value


def with_source(variant, path, value):
    settings = nest(path, value)
    if path[0] == "host-containers" and path[2] != "source":
        settings["host-containers"]["admin"]["source"] = "registry.example.com/admin:v1"
    return settings


def _case_id(case):
    return ".".join(case[1])


@pytest.mark.parametrize("case", VALUE_CASES, ids=_case_id)
def test_value_types_accept_good_and_reject_bad(case):
    variant, path, good, bad, words = case
    schema = Schema.load(variant)
    for value in good:
        assert schema.validate(with_source(variant, path, value)) == [], (path, value)
    key = "settings." + ".".join(path)
    for value in bad:
        problems = schema.validate(with_source(variant, path, value))
        assert problems, (path, value)
        assert {p.key for p in problems} == {key}, (path, value, problems)
        for problem in problems:
            assert words in problem.message, (value, problem)
            assert "does not match" not in problem.message


@pytest.mark.parametrize(
    ("name", "good"),
    [
        ("team.example.com/owner", True),
        ("kubernetes.io/role", True),
        ("role", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("Example.com/role", False),  # prefixes are lower case
        ("example.com/", False),
        ("/role", False),
        ("-role", False),
        ("a/b/c", False),
        ("bad label", False),
    ],
)
def test_label_and_taint_keys(name, good):
    schema = Schema.load("aws-k8s")
    for field, value in (("node-labels", "x"), ("node-taints", "x:NoSchedule")):
        problems = schema.validate({"kubernetes": {field: {name: value}}})
        assert (problems == []) is good, problems
        if not good:
            assert all("Kubernetes label key" in p.message for p in problems), problems


@pytest.mark.parametrize(
    ("name", "good"),
    [("ecs.capability.team", True), ("a/b_c-d", True), ("x" * 128, True), ("x" * 129, False)],
)
def test_ecs_attribute_names(name, good):
    problems = Schema.load("aws-ecs").validate({"ecs": {"instance-attributes": {name: "v"}}})
    assert (problems == []) is good, problems


# --- sections, secrets, check, misc -------------------------------------------------------------


class RecordingDict(dict):
    """A real dict that remembers which top-level values were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def test_sections_restricts_what_is_validated():
    schema = Schema.load("aws-k8s")
    settings = RecordingDict(
        {"motd": "ok", "ntp": {"time-server": []}, "kubernetes": {"max-pods": "x"}}
    )
    assert schema.validate(settings, sections=["motd"]) == []
    assert settings.read == {"motd"}
    assert keys_of(schema.validate(settings, sections=["ntp"])) == ["settings.ntp.time-server"]
    assert len(schema.validate(settings)) == 2
    assert schema.validate(settings, sections=[]) == []


def test_unknown_top_level_names_are_reported_whatever_the_sections():
    schema = Schema.load("aws-dev")
    settings = {"motd": "ok", "kubernetes": {}, "nttp": {}}
    assert keys_of(schema.validate(settings, sections=["motd"])) == [
        "settings.kubernetes",
        "settings.nttp",
    ]


def test_check_raises_with_origin_and_problems():
    schema = Schema.load("aws-dev")
    schema.check({"motd": "fine"})
    with pytest.raises(InvalidSettings) as caught:
        schema.check({"ntp": {"time-server": []}, "motdd": "x"}, origin="user-data.toml")
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.origin == "user-data.toml"
    assert keys_of(error.problems) == ["settings.motdd", "settings.ntp.time-server"]
    lines = str(error).splitlines()
    assert len(lines) == 2
    assert all(line.startswith("user-data.toml: settings.") for line in lines)
    assert str(InvalidSettings([Problem("settings.a", "b")])) == "settings.a: b"


def test_invalid_settings_survives_pickling():
    import pickle

    error = InvalidSettings([Problem("settings.a", "b")], "x.toml")
    again = pickle.loads(pickle.dumps(error))
    assert again.problems == error.problems and again.origin == "x.toml"


def test_secret_keys():
    schema = Schema.load("aws-k8s")
    settings = {
        "host-containers": {
            "admin": {"source": "a/b:1", "user-data": "aGVsbG8="},
            "control": {"source": "a/c:1"},
        },
        "kubernetes": {"cluster-certificate": CERT},
    }
    assert schema.secret_keys(settings) == {"settings.host-containers.admin.user-data"}
    assert schema.secret_keys({}) == set()


def test_secret_values_are_not_echoed_in_problems():
    problems = problems_of(
        "aws-dev", {"host-containers": {"a": {"source": "x/y:1", "user-data": "s3cr3t!"}}}
    )
    assert keys_of(problems) == ["settings.host-containers.a.user-data"]
    assert "s3cr3t" not in problems[0].message
    problems = problems_of("aws-dev", {"motd": 12345})
    assert "12345" in problems[0].message


def test_section_schema():
    schema = Schema.load("aws-k8s")
    section = schema.section_schema("kubernetes")
    assert section["properties"]["node-labels"]["propertyNames"]
    section["properties"].clear()
    assert schema.section_schema("kubernetes")["properties"]
    with pytest.raises(KeyError):
        Schema.load("aws-dev").section_schema("kubernetes")
    hc = schema.section_schema("host-containers")
    assert hc["$defs"]["host-container"]["properties"]["user-data"]["x-secret"] is True
    assert hc["$defs"]["host-container"]["required"] == ["source"]


def test_trailing_newline_never_passes_an_anchored_pattern():
    schema = Schema.load("aws-dev")
    for settings in (
        {"host-containers": {"a": {"source": "x/y:1\n"}}},
        {"host-containers": {"a\n": {"source": "x/y:1"}}},
        {"gitops": {"groups": ["a\n"]}},
    ):
        assert schema.validate(settings), settings
