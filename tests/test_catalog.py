"""The renderer catalog: loads for every variant, and every dangling reference fails at load."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from reconciler.osinfo import os_release_ids
from reconciler.schema import Schema
from renderers.catalog import Catalog, CatalogError
from tests.daemon import cli

VARIANTS = ["aws-dev", "aws-k8s", "aws-ecs"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_shipped_metadata_loads_for_every_variant(variant: str) -> None:
    catalog = Catalog.load(variant, known_variants=VARIANTS)
    paths = {f.path for f in catalog.files.values()}
    assert {"/etc/motd", "/etc/chrony.conf", "/etc/updog.toml"} <= paths
    assert set(catalog.compiled) == {f.template for f in catalog.files.values()}
    assert catalog.services["chronyd"].restart_commands == (
        ("systemctl", "try-reload-or-restart", "chronyd.service"),
    )
    assert ("kubernetes" in catalog.services) == (variant == "aws-k8s")
    assert ("ecs" in catalog.services) == (variant == "aws-ecs")


def test_k8s_files_and_service() -> None:
    catalog = Catalog.load("aws-k8s")
    assert catalog.files["kubernetes-ca-crt"].path == "/etc/kubernetes/pki/ca.crt"
    assert catalog.services["kubernetes"].restart_commands == (
        ("systemctl", "try-restart", "kubelet.service"),
    )
    assert catalog.files["motd"].mode == 0o644


def test_affected_services_covers_prefixes_and_subtrees() -> None:
    catalog = Catalog.load("aws-k8s")
    result = catalog.affected_services([
        "settings.ntp.time-servers",
        'settings.kubernetes.node-labels."a.b/c"',
        "settings",  # a whole-tree deletion concerns everything
        "settings.aws.region",
        "settings.gitops.host-id",
        "settings.motd",
    ])
    assert result["settings.ntp.time-servers"] == ["chronyd"]
    assert result['settings.kubernetes.node-labels."a.b/c"'] == ["kubernetes"]
    assert result["settings"] == sorted(catalog.services)
    assert result["settings.motd"] == ["motd"]
    assert result["settings.aws.region"] == ["kubernetes"]  # the kubeconfig's --region
    assert "settings.gitops.host-id" not in result
    assert catalog.affected_services(["settings.motdx"]) == {}


def test_services_for_files() -> None:
    catalog = Catalog.load("aws-k8s")
    assert catalog.services_for_files(["kubeconfig", "motd"]) == {"kubernetes", "motd"}
    assert catalog.services_for_files([]) == set()


GOOD = """
[configuration-files.motd]
path = "/etc/motd"
template = "motd.j2"
mode = "0644"

[services.motd]
configuration-files = ["motd"]
affected-by = ["settings.motd"]
"""


def load(tmp_path: Path, text: str, templates: dict[str, str] | None = None,
         variant: str = "aws-dev", defines=None) -> Catalog:  # noqa: ANN001 - Schema.defines
    metadata = tmp_path / "metadata.toml"
    metadata.write_text(textwrap.dedent(text))
    tdir = tmp_path / "templates"
    tdir.mkdir(exist_ok=True)
    for name, body in (templates or {"motd.j2": "{{ settings.motd }}\n"}).items():
        (tdir / name).write_text(body)
    return Catalog.load(variant, metadata, tdir, defines=defines)


def test_minimal_temp_metadata_loads(tmp_path: Path) -> None:
    catalog = load(tmp_path, GOOD)
    assert list(catalog.files) == ["motd"]
    assert catalog.services["motd"].timeout == 60.0
    assert catalog.services["motd"].sandbox_safe is False


def expect_error(tmp_path: Path, text: str, *fragments: str, **kwargs) -> CatalogError:
    with pytest.raises(CatalogError) as info:
        load(tmp_path, text, **kwargs)
    message = str(info.value)
    assert "metadata.toml" in message
    for fragment in fragments:
        assert fragment in message
    return info.value


def test_dangling_service_file(tmp_path: Path) -> None:
    expect_error(tmp_path, GOOD.replace('["motd"]', '["motd", "nope"]'),
                 "services.motd", "'nope'")


def test_file_fed_by_no_service(tmp_path: Path) -> None:
    expect_error(tmp_path, GOOD.replace('configuration-files = ["motd"]',
                                        "configuration-files = []"),
                 "configuration-files.motd", "no service")


def test_missing_template(tmp_path: Path) -> None:
    expect_error(tmp_path, GOOD.replace("motd.j2", "gone.j2"),
                 "configuration-files.motd", "gone.j2", "not found")


def test_template_that_does_not_compile(tmp_path: Path) -> None:
    expect_error(tmp_path, GOOD, "configuration-files.motd", "does not compile",
                 templates={"motd.j2": "{% for x in %}\n"})


@pytest.mark.parametrize("path", ["etc/motd", "/etc/../root/motd", "/etc//motd", "/etc/./motd",
                                  "/", "/etc/motd/"])
def test_bad_paths(tmp_path: Path, path: str) -> None:
    expect_error(tmp_path, GOOD.replace('"/etc/motd"', f'"{path}"'),
                 "configuration-files.motd", "absolute, normalized")


def test_template_escaping_the_template_dir(tmp_path: Path) -> None:
    expect_error(tmp_path, GOOD.replace("motd.j2", "../metadata.toml"),
                 "configuration-files.motd", "without '..'")


def test_duplicate_and_nested_paths(tmp_path: Path) -> None:
    extra = """
    [configuration-files.other]
    path = "{path}"
    template = "motd.j2"
    [services.other]
    configuration-files = ["other"]
    """
    expect_error(tmp_path, GOOD + extra.format(path="/etc/motd"), "also the path of")
    expect_error(tmp_path, GOOD + extra.format(path="/etc/motd/inner"), "lies inside")


@pytest.mark.parametrize("mode", ['"644x"', '"0999"', '"12345"', "true", "4096"])
def test_bad_modes(tmp_path: Path, mode: str) -> None:
    expect_error(tmp_path, GOOD.replace('mode = "0644"', f"mode = {mode}"), "mode")


@pytest.mark.parametrize("key,reason", [
    ('"motd"', "not under 'settings'"),
    ('"settings..motd"', "empty segment"),
    ('"settings.mo td"', "contains"),
])
def test_bad_affected_by(tmp_path: Path, key: str, reason: str) -> None:
    expect_error(tmp_path, GOOD.replace('["settings.motd"]', f"[{key}]"),
                 "services.motd", reason)


def test_unknown_field_is_a_typo(tmp_path: Path) -> None:
    expect_error(tmp_path, GOOD + 'restart-command = [["true"]]\n',
                 "services.motd", "restart-command")


def test_bad_commands(tmp_path: Path) -> None:
    expect_error(tmp_path, GOOD + 'restart-commands = ["systemctl restart x"]\n',
                 "services.motd", "argv lists")


def test_variant_filtering_and_cross_variant_reference(tmp_path: Path) -> None:
    k8s_only = GOOD + """
    [configuration-files.kube]
    path = "/etc/kube"
    template = "motd.j2"
    variants = ["aws-k8s"]
    [services.kube]
    configuration-files = ["kube"]
    variants = ["aws-k8s"]
    """
    assert "kube" not in load(tmp_path, k8s_only).files
    assert "kube" in load(tmp_path, k8s_only, variant="aws-k8s").files
    # a service of every variant that lists a k8s-only file dangles outside aws-k8s
    broken = k8s_only.replace('configuration-files = ["motd"]',
                              'configuration-files = ["motd", "kube"]')
    expect_error(tmp_path, broken, "services.motd", "does not exist in variant 'aws-dev'")


def test_unknown_variant_names(tmp_path: Path) -> None:
    metadata = tmp_path / "metadata.toml"
    metadata.write_text(GOOD.replace('mode = "0644"', 'variants = ["aws-k8z"]'))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "motd.j2").write_text("x")
    with pytest.raises(CatalogError, match="aws-k8z"):
        Catalog.load("aws-k8s", metadata, tmp_path / "templates", known_variants=VARIANTS)
    with pytest.raises(CatalogError, match="unknown variant 'nope'"):
        Catalog.load("nope", metadata, tmp_path / "templates", known_variants=VARIANTS)


def test_unreadable_metadata(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        Catalog.load("aws-dev", tmp_path / "absent.toml", tmp_path)
    (tmp_path / "bad.toml").write_text("[[[")
    with pytest.raises(CatalogError, match="bad.toml"):
        Catalog.load("aws-dev", tmp_path / "bad.toml", tmp_path)


# ---- distribution facts (renderers/distributions/) --------------------------------------------


def test_debian_facts_apply_when_the_host_says_debian() -> None:
    bottlerocket = Catalog.load("aws-k8s")
    assert bottlerocket.distribution is None
    assert bottlerocket.files["chrony-conf"].path == "/etc/chrony.conf"
    assert bottlerocket.services["chronyd"].unit == "chronyd.service"
    assert bottlerocket.services["kubernetes"].unit == "kubelet.service"
    for ids in (["debian"], ["ubuntu", "debian"], ["raspbian", "debian"]):
        debian = Catalog.load("aws-k8s", distributions=ids)
        assert debian.distribution == "debian"
        assert debian.files["chrony-conf"].path == "/etc/chrony/chrony.conf"
        assert debian.services["chronyd"].unit == "chrony.service"
        assert debian.services["chronyd"].commands == (
            ("systemctl", "try-reload-or-restart", "chrony.service"),)
        assert debian.files["motd"] == bottlerocket.files["motd"]
    assert Catalog.load("aws-k8s", distributions=["fedora", "../debian"]).distribution is None


@pytest.mark.parametrize(("overlay", "message"), [
    ('[services.nope]\nunit = "a.service"\n', "services.nope: no such entry"),
    ('[services.motd]\naffected-by = ["settings.x"]\n', "unknown field(s) ['affected-by']"),
    ('[configuration-files.motd]\ntemplate = "x.j2"\n', "unknown field(s) ['template']"),
    ('[settings]\nmotd = "x"\n', "settings: unknown table"),
    ('[services.motd]\nunit = "not a unit"\n', "is not a systemd unit name"),
])
def test_a_bad_distribution_file_is_refused_naming_it(
    tmp_path: Path, overlay: str, message: str
) -> None:
    (tmp_path / "distributions").mkdir()
    (tmp_path / "distributions" / "mine.toml").write_text(overlay)
    metadata = tmp_path / "metadata.toml"
    metadata.write_text(textwrap.dedent(GOOD))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "motd.j2").write_text("{{ settings.motd }}\n")
    with pytest.raises(CatalogError, match=re.escape(message)):
        Catalog.load("aws-dev", metadata, tmp_path / "templates", distributions=["mine"])


def test_os_release_names_the_distribution(tmp_path: Path) -> None:
    assert os_release_ids(tmp_path) == []
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "os-release").write_text('ID=ubuntu\nID_LIKE="debian"\n')
    assert os_release_ids(tmp_path) == ["ubuntu", "debian"]
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("NAME='Debian'\nID=debian\n")
    assert os_release_ids(tmp_path) == ["debian"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_shipped_affected_by_names_settings_of_the_schema(variant: str) -> None:
    schema = Schema.load(variant)
    catalog = Catalog.load(variant, known_variants=VARIANTS, defines=schema.defines)
    prefixes = [p for s in catalog.services.values() for p in s.affected_by]
    assert prefixes and all(schema.defines(p) for p in prefixes)


@pytest.mark.parametrize(("prefix", "variant"), [
    ("settings.mtod", "aws-dev"),  # a typo of a section
    ("settings.ntp.time-server", "aws-dev"),  # a typo below one
    ("settings.motd.text", "aws-dev"),  # below a leaf
    ("settings.kubernetes", "aws-dev"),  # a section of another variant
    ("settings.host-containers.admin.sorce", "aws-k8s"),  # below a map entry
])
def test_affected_by_that_names_no_setting_is_a_load_error(
    tmp_path: Path, prefix: str, variant: str
) -> None:
    error = expect_error(tmp_path, GOOD.replace('["settings.motd"]', f'["{prefix}"]'),
                         "services.motd", f"affected-by {prefix!r}", f"variant {variant!r}",
                         variant=variant, defines=Schema.load(variant).defines)
    assert error.entry == "services.motd"


@pytest.mark.parametrize("prefix", [
    "settings.motd", "settings.ntp.time-servers", 'settings.kubernetes.node-labels."a.b/c"',
    "settings.host-containers.admin.source", "settings",
])
def test_affected_by_that_names_a_setting_loads(tmp_path: Path, prefix: str) -> None:
    catalog = load(tmp_path, GOOD.replace('["settings.motd"]', f"['{prefix}']"),
                   variant="aws-k8s", defines=Schema.load("aws-k8s").defines)
    assert catalog.services["motd"].affected_by == (prefix,)


def test_a_typo_in_affected_by_stops_start_up(tmp_path: Path) -> None:
    """The daemon's own catalog is checked against the variant's schema when it opens."""
    renderers = tmp_path / "renderers"
    renderers.mkdir()
    load(renderers, GOOD.replace('["settings.motd"]', '["settings.mtod"]'))  # loads unchecked
    result = cli("serve", "--once", "--state-dir", tmp_path / "state", "--renderers", renderers)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    assert "services.motd: affected-by 'settings.mtod' is not a setting of variant 'aws-dev'" in (
        result.stderr)
    assert result.stderr.startswith("reconciler: renderer metadata: ")
