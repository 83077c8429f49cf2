"""Host settings (kernel, network, dns, registries, runtime, OCI defaults, PKI, boot): the files
we render, handed to the real programs that read them, and the services a change restarts."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hostcore.keys import flatten
from reconciler.bootparams import reboot_required
from reconciler.effects import read_observed, write_atomic
from reconciler.hostfacts import HostFacts
from reconciler.osinfo import os_info
from reconciler.plan import plan
from reconciler.schema import Schema
from renderers.catalog import Catalog
from renderers.hostfiles import ca_bundle, certificates
from renderers.render import Renderer
from tests.daemon import Daemon, cli, eventually, ok
from tests.images import require_podman, reset_storage

USER_DATA = """
[settings.kernel]
lockdown = "integrity"
[settings.kernel.sysctl]
"user.max_user_namespaces" = "16384"
"vm.max_map_count" = "262144"
[settings.kernel.modules.sctp]
allowed = false
[settings.kernel.modules.ip_vs_lc]
allowed = true
autoload = true
[settings.network]
hostname = "node-1.example.com"
https-proxy = "proxy.example.com:3128"
no-proxy = ["internal.example.com"]
hosts = [["10.0.0.1", ["a.example.com"]], ["10.0.0.1", ["b.example.com"]],
         ["fd00::5", ["v6.example.com"]]]
[settings.dns]
name-servers = ["10.0.0.2", "fd00::53"]
search-list = ["example.com", "corp.example.com"]
[[settings.container-registry.mirrors]]
registry = "docker.io"
endpoint = ["https://hub-mirror.example.com", "http://hub-mirror2.example.com:5000"]
[[settings.container-registry.credentials]]
registry = "docker.io"
username = "fleet-user"
password = "fleet-password-1"
[[settings.container-registry.credentials]]
registry = "registry.example.com:5000"
auth = "Zm9vOmJhcg=="
[settings.container-runtime]
max-container-log-line-size = -1
max-concurrent-downloads = 4
enable-unprivileged-icmp = true
[settings.oci-defaults.resource-limits.max-core-file-size]
soft-limit = 1024
hard-limit = "unlimited"
[settings.boot]
reboot-to-reconcile = true
[settings.boot.kernel-parameters]
"console" = ["tty0", "ttyS1,115200n8"]
[settings.kubernetes]
api-server = "https://api.example.com:6443"
cluster-name = "c"
cluster-certificate = "Q0VSVAo="
"""


def need(program: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    assert found, f"{program} is missing (scripts/install-system-deps.sh installs it)"
    return found


def merged(variant: str, *texts: str) -> dict[str, Any]:
    settings = Schema.load(variant).defaults()

    def merge(into: dict, patch: dict) -> None:
        for key, value in patch.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    for text in texts:
        merge(settings, tomllib.loads(text).get("settings", {}))
    assert Schema.load(variant).validate(settings) == []
    return settings


def render(variant: str, settings: dict[str, Any], facts: HostFacts | None = None) -> dict:
    catalog = Catalog.load(variant)
    model = {"settings": settings, "os": os_info(variant),
             "host": (facts or HostFacts()).as_model()}
    result = Renderer(catalog).render_all(model)
    assert result.errors == {}
    return {name: f.content.decode() for name, f in result.files.items()}


@pytest.fixture(scope="module")
def k8s_files() -> dict[str, str]:
    return render("aws-k8s", merged("aws-k8s", USER_DATA))


# --- real programs read our files ----------------------------------------------------------------


def test_containerd_accepts_the_config_with_mirrors_and_credentials(k8s_files, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(k8s_files["containerd-config"])
    dump = ok(subprocess.run([need("containerd"), "--config", str(config), "config", "dump"],
                             capture_output=True, text=True, check=False))
    parsed = tomllib.loads(dump)
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"]["mirrors"]["docker.io"]["endpoint"] == [
        "https://hub-mirror.example.com", "http://hub-mirror2.example.com:5000"]
    auth = cri["registry"]["configs"]["registry-1.docker.io"]["auth"]
    assert (auth["username"], auth["password"]) == ("fleet-user", "fleet-password-1")
    assert cri["registry"]["configs"]["registry.example.com:5000"]["auth"]["auth"] == "Zm9vOmJhcg=="
    assert cri["max_container_log_line_size"] == -1 and cri["max_concurrent_downloads"] == 4
    assert cri["enable_unprivileged_icmp"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["base_runtime_spec"] == "/etc/containerd/cri-base.json"


def test_containerd_accepts_the_basic_config_of_other_variants(tmp_path):
    files = render("aws-dev", merged("aws-dev", "[settings]\n"))
    config = tmp_path / "config.toml"
    config.write_text(files["containerd-config"])
    dump = tomllib.loads(ok(subprocess.run(
        [need("containerd"), "--config", str(config), "config", "dump"],
        capture_output=True, text=True, check=False)))
    assert "io.containerd.grpc.v1.cri" in dump["disabled_plugins"]


def test_base_oci_spec_carries_capabilities_and_rlimits(k8s_files):
    spec = json.loads(k8s_files["cri-base-json"])
    caps = spec["process"]["capabilities"]
    assert "CAP_CHOWN" in caps["bounding"] and "CAP_SYS_ADMIN" not in caps["bounding"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"]
    rlimits = {r["type"]: (r["soft"], r["hard"]) for r in spec["process"]["rlimits"]}
    assert rlimits == {"RLIMIT_CORE": (1024, 2**64 - 1), "RLIMIT_NOFILE": (65536, 1048576)}


def test_sysctl_parses_our_file_without_writing(k8s_files, tmp_path):
    conf = tmp_path / "90-host-reconciler.conf"
    conf.write_text(k8s_files["sysctl-conf"])
    out = ok(subprocess.run([need("sysctl"), "--dry-run", "-p", str(conf)],
                            capture_output=True, text=True, check=False))
    assert "user.max_user_namespaces = 16384" in out and "vm.max_map_count = 262144" in out


def test_modprobe_reads_the_blacklist(k8s_files, tmp_path):
    conf = tmp_path / "modprobe.d"
    conf.mkdir()
    (conf / "90-host-reconciler.conf").write_text(k8s_files["modprobe-conf"])
    shown = ok(subprocess.run([need("modprobe"), "--config", str(conf), "--showconfig"],
                              capture_output=True, text=True, check=False))
    assert "blacklist sctp" in shown and "install sctp /bin/false" in shown
    assert k8s_files["modules-load"].splitlines()[1:] == ["ip_vs_lc"]


def test_podman_reads_registries_conf_and_auth_file(k8s_files, tmp_path):
    registries = tmp_path / "registries.conf"
    registries.write_text(k8s_files["registries-conf"])
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries)}
    info = json.loads(ok(subprocess.run([need("podman"), "info", "--format", "json"], env=env,
                                        capture_output=True, text=True, check=False)))
    hub = info["registries"]["docker.io"]
    assert [m["Location"] for m in hub["Mirrors"]] == [
        "hub-mirror.example.com", "hub-mirror2.example.com:5000"]
    assert [m["Insecure"] for m in hub["Mirrors"]] == [False, True]
    auth = tmp_path / "auth.json"
    auth.write_text(k8s_files["containers-auth"])
    login = ok(subprocess.run([need("podman"), "login", "--get-login", "--authfile", str(auth),
                               "docker.io"], env=env, capture_output=True, text=True, check=False))
    assert login.strip() == "fleet-user"


def test_resolv_conf_hosts_hostname_and_proxy_formats(k8s_files):
    assert k8s_files["resolv-conf"].splitlines()[1:] == [
        "nameserver 10.0.0.2", "nameserver fd00::53", "search example.com corp.example.com"]
    hosts = k8s_files["hosts"].splitlines()
    assert hosts[0].split()[:2] == ["127.0.0.1", "localhost"] and "node-1.example.com" in hosts[0]
    assert "10.0.0.1 a.example.com b.example.com" in hosts  # one address, one line
    assert "fd00::5 v6.example.com" in hosts
    assert k8s_files["hostname"] == "node-1.example.com\n"
    env = dict(line.split("=", 1) for line in k8s_files["proxy-env"].splitlines()
               if line and not line.startswith("#"))
    assert env["HTTPS_PROXY"] == "proxy.example.com:3128"
    assert env["NO_PROXY"].split(",") == [
        "internal.example.com", "localhost", "127.0.0.1", "api.example.com", ".cluster.local"]
    assert "EnvironmentFile=-/etc/network/proxy.env" in k8s_files["kubelet-proxy-dropin"]


def test_no_dns_or_hostname_settings_leave_those_files_alone():
    files = render("aws-dev", merged("aws-dev", "[settings]\n"))
    assert "resolv-conf" not in files and "hostname" not in files
    assert "hosts" in files


# --- the CA bundle -------------------------------------------------------------------------------


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    ok(subprocess.run([need("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                       "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                       str(cert), "-days", "2", "-subj", f"/CN={name}", "-addext",
                       "basicConstraints=critical,CA:TRUE", "-addext",
                       "keyUsage=critical,keyCertSign,cRLSign"],
                      capture_output=True, text=True, check=False))
    return key, cert


def make_leaf(directory: Path, name: str, ca: tuple[Path, Path]) -> Path:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ok(subprocess.run([need("openssl"), "req", "-newkey", "ec", "-pkeyopt",
                       "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                       str(csr), "-subj", f"/CN={name}"], capture_output=True, text=True,
                      check=False))
    ok(subprocess.run([need("openssl"), "x509", "-req", "-in", str(csr), "-CA", str(ca[1]),
                       "-CAkey", str(ca[0]), "-CAcreateserial", "-out", str(cert), "-days", "1"],
                      capture_output=True, text=True, check=False))
    return cert


def b64(*paths: Path) -> str:
    return base64.b64encode(b"".join(p.read_bytes() for p in paths)).decode()


def test_bundle_holds_the_system_and_trusted_cas_and_not_the_distrusted(tmp_path):
    good, bad = make_ca(tmp_path, "good-ca"), make_ca(tmp_path, "bad-ca")
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    assert system.exists(), "ca-certificates is missing (scripts/install-system-deps.sh)"
    one_system_cert = certificates(system.read_text())[0]
    settings = {"pki": {
        "mine": {"data": b64(good[1], bad[1]), "trusted": True},
        # distrusts bad-ca (also in "mine") and a CA of the system bundle
        "not-these": {"data": base64.b64encode(
            bad[1].read_bytes() + b"-----BEGIN CERTIFICATE-----\n"
            + base64.encodebytes(one_system_cert) + b"-----END CERTIFICATE-----\n").decode()},
    }}
    bundle = tmp_path / "ca-bundle.crt"
    bundle.write_text(render("aws-dev", {**merged("aws-dev", "[settings]\n"), **settings})[
        "ca-bundle"])
    held = certificates(bundle.read_text())
    assert one_system_cert not in held
    assert len(held) == len(certificates(system.read_text())) - 1 + 1  # minus one, plus good

    def verify(cert: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([need("openssl"), "verify", "-CAfile", str(bundle), str(cert)],
                              capture_output=True, text=True, check=False)

    assert verify(make_leaf(tmp_path, "good-leaf", good)).returncode == 0
    refused = verify(make_leaf(tmp_path, "bad-leaf", bad))
    assert refused.returncode != 0
    assert "unable to get local issuer" in refused.stdout + refused.stderr


def test_a_bundle_without_certificates_is_an_error_naming_it():
    with pytest.raises(Exception, match=r"settings\.pki\.junk\.data: holds no PEM certificate"):
        ca_bundle("", {"junk": {"data": base64.b64encode(b"hello").decode(), "trusted": True}})


# --- boot parameters -----------------------------------------------------------------------------


def test_reboot_required_only_when_asked_and_different(k8s_files):
    settings = merged("aws-k8s", USER_DATA)
    condition = reboot_required(settings, "")
    assert condition["status"] is True
    assert condition["differ"] == ["kernel.console", "kernel.lockdown"]
    booted = "\n".join(k8s_files["bootconfig"].splitlines()[2:])  # what /proc/bootconfig shows
    assert reboot_required(settings, booted)["status"] is False
    settings["boot"]["reboot-to-reconcile"] = False
    quiet = reboot_required(settings, "")
    assert quiet["status"] is False and "reboot-to-reconcile is not true" in quiet["reason"]


# --- serve --once, and which services a change restarts -----------------------------------------


EXPECTED_PATHS = [
    "etc/sysctl.d/90-host-reconciler.conf", "etc/modprobe.d/90-host-reconciler.conf",
    "etc/modules-load.d/90-host-reconciler.conf", "etc/hostname", "etc/hosts", "etc/resolv.conf",
    "etc/network/proxy.env", "etc/containerd/config.toml", "etc/containerd/cri-base.json",
    "etc/containers/registries.conf.d/50-host-reconciler.conf", "etc/containers/auth.json",
    "etc/pki/tls/certs/ca-bundle.crt", "etc/bootconfig.conf",
    "etc/systemd/system/kubelet.service.d/10-host-reconciler-proxy.conf",
]


def test_serve_once_renders_every_host_file(tmp_path):
    user_data = tmp_path / "user-data.toml"
    ca = make_ca(tmp_path, "fleet-ca")
    user_data.write_text(USER_DATA + f'[settings.pki.fleet]\ndata = "{b64(ca[1])}"\n'
                         "trusted = true\n")
    state = tmp_path / "state"
    once = cli("serve", "--state-dir", state, "--variant", "aws-k8s", "--user-data", user_data,
               "--once")
    assert once.returncode == 0, once.stderr[-3000:]
    root = state / "root"
    for path in EXPECTED_PATHS:
        assert (root / path).is_file(), f"{path} not rendered: {once.stderr[-2000:]}"
    assert "vm.max_map_count = 262144" in (root / EXPECTED_PATHS[0]).read_text()
    assert (root / "etc/containerd/config.toml").stat().st_mode & 0o777 == 0o600
    assert certificates(ca[1].read_text())[0] in certificates(
        (root / "etc/pki/tls/certs/ca-bundle.crt").read_text())


def restarted(variant: str, old: str, change: str, tmp_path: Path) -> list[str]:
    """Services the plan restarts when the settings go from ``old`` to ``new`` (written first)."""
    catalog = Catalog.load(variant)
    before, after = merged(variant, old), merged(variant, old, change)
    renderer = Renderer(catalog)
    facts = HostFacts().as_model()
    paths = [f.path for f in catalog.files.values()]
    first = renderer.render_all({"settings": before, "os": os_info(variant), "host": facts})
    for item in first.files.values():
        write_atomic(tmp_path, item.path, item.content, item.mode)
    old_flat, new_flat = _flat(before), _flat(after)
    changed = {k for k in old_flat | new_flat if old_flat.get(k) != new_flat.get(k)}
    second = renderer.render_all({"settings": after, "os": os_info(variant), "host": facts})
    the_plan = plan(2, second, read_observed(tmp_path, paths), catalog, changed, sandbox=False)
    assert not the_plan.errors or set(the_plan.errors) <= {"kubeconfig", "kubernetes-ca-crt"}
    return sorted(a.service for a in the_plan.services)


def _flat(settings: dict, prefix: str = "settings") -> dict[str, Any]:
    return flatten(settings, (prefix,))


BASE = '[settings.kubernetes]\napi-server = "https://k"\ncluster-name = "c"\n' \
       'cluster-certificate = "Q0VSVAo="\n'


@pytest.mark.parametrize(("change", "services"), [
    ('[settings.kernel.sysctl]\n"vm.max_map_count" = "1"\n', ["sysctl"]),
    ("[settings.kernel.modules.sctp]\nallowed = false\n", ["kernel-modules"]),
    ('[settings.dns]\nname-servers = ["10.0.0.9"]\n', ["dns"]),
    ('[settings.network]\nhosts = [["10.0.0.1", ["x.example.com"]]]\n', ["hosts"]),
    ('[settings.network]\nhostname = "renamed"\n', ["hostname", "hosts"]),
    ('[settings.network]\nhttps-proxy = "p.example.com:3128"\n', ["containerd", "kubelet-proxy"]),
    ('[[settings.container-registry.mirrors]]\nregistry = "docker.io"\n'
     'endpoint = ["https://m.example.com"]\n', ["containerd", "podman-registries"]),
    ("[settings.container-runtime]\nmax-concurrent-downloads = 2\n", ["containerd"]),
    ("[settings.oci-defaults.capabilities]\nsys-admin = true\n", ["containerd"]),
    ('[settings.boot.kernel-parameters]\n"quiet" = []\n', ["bootconfig"]),
])
def test_a_change_restarts_only_the_services_that_read_it(change, services, tmp_path):
    old = BASE + '[settings.network]\nhostname = "node"\n'
    assert restarted("aws-k8s", old, change, tmp_path) == services


def test_reboot_required_in_status(tmp_path):
    user_data = tmp_path / "user-data.toml"
    user_data.write_text('[settings.boot]\nreboot-to-reconcile = true\n'
                         '[settings.boot.kernel-parameters]\n"quiet" = []\n')
    d = Daemon(tmp_path / "state", ["--user-data", str(user_data)])
    try:
        def condition() -> dict | None:
            found = [c for c in d.ok("GET", "/status")["conditions"]
                     if c["type"] == "RebootRequired"]
            return found[0] if found and found[0]["status"] else None

        found = eventually(condition)
        assert "kernel.quiet" in found["reason"]
        assert (d.root / "etc/bootconfig.conf").read_text().endswith('kernel.quiet = ""\n')
    finally:
        d.stop()


def test_host_container_pulls_go_through_the_rendered_mirrors(tmp_path):
    from reconciler.containers.engine import EngineError
    from reconciler.containers.podman import PodmanEngine

    require_podman()
    settings = merged("aws-dev", "[settings]\n")
    settings["container-registry"] = {
        "mirrors": [{"registry": "registry.invalid", "endpoint": ["http://127.0.0.1:9"]}],
        "credentials": [{"registry": "registry.invalid", "username": "u", "password": "p-123"}],
    }
    files = render("aws-dev", settings)
    registries, auth = tmp_path / "registries.conf", tmp_path / "auth.json"
    registries.write_text(files["registries-conf"])
    auth.write_text(files["containers-auth"])
    settings["network"] = {"https-proxy": "http://proxy.example.com:3128", "no-proxy": ["a b"]}
    with pytest.raises(AssertionError, match="comma or a space"):
        render("aws-dev", settings)
    settings["network"]["no-proxy"] = ["internal.example.com"]
    proxy = tmp_path / "proxy.env"
    proxy.write_text(render("aws-dev", settings)["proxy-env"])
    storage = tmp_path / "settings-host-engine"
    bundle = tmp_path / "ca-bundle.crt"
    bundle.write_text(files["ca-bundle"])
    engine = PodmanEngine(storage, registries_conf=registries, auth_file=auth, proxy_env=proxy,
                          ca_bundle=bundle)
    flags, env = engine.pull_options()
    assert flags == ["--authfile", str(auth)]
    assert env["SSL_CERT_FILE"] == str(bundle)
    assert env["CONTAINERS_REGISTRIES_CONF"] == str(registries)
    assert "CONTAINERS_REGISTRIES_CONF" not in (PodmanEngine(
        storage, registries_conf=tmp_path / "none.conf").pull_options()[1] or {})
    assert env["HTTPS_PROXY"] == "http://proxy.example.com:3128"
    assert env["NO_PROXY"] == "internal.example.com,localhost,127.0.0.1"
    engine.proxy_env = None  # the pull below must fail at the mirror, not at the proxy
    try:
        with pytest.raises(EngineError) as failed:
            engine.pull("registry.invalid/settings-host/none:1")
    finally:
        reset_storage(storage)
    assert "Mirrors also failed" in str(failed.value) and "127.0.0.1:9" in str(failed.value)


def test_registry_credentials_are_secret_but_registry_names_are_not(tmp_path):
    user_data = tmp_path / "user-data.toml"
    user_data.write_text(BASE + '[[settings.container-registry.credentials]]\n'
                         'registry = "registry.example.com"\nusername = "fleet-user"\n'
                         'password = "old-password-77"\n')
    d = Daemon(tmp_path / "state", ["--variant", "aws-k8s", "--user-data", str(user_data)])
    key = "settings.container-registry.credentials"
    try:
        eventually(lambda: d.ok("GET", "/status")["last_receipt"])
        d.ok("PATCH", "/settings?tx=rotate", {"container-registry": {"credentials": [
            {"registry": "registry.example.com", "username": "fleet-user",
             "password": "new-password-88"}]}})
        the_plan = d.ok("POST", "/tx/plan?tx=rotate")
        assert {"key": key, "old": "(redacted)", "new": "(redacted)"} in the_plan["settings"]
        (config,) = [f for f in the_plan["files"] if f["name"] == "containerd-config"]
        assert "(redacted)" in config["diff"] and "registry.example.com" in config["diff"]
        d.ok("POST", "/tx/commit_and_apply?tx=rotate&wait=true")
        shown = json.dumps([the_plan, d.ok("GET", "/generations"), d.ok("GET", "/events"),
                            d.ok("GET", f"/provenance?keys={key}&history=true")])
        for secret in ("old-password-77", "new-password-88", "fleet-user"):
            assert secret not in shown
        current = d.ok("GET", "/settings?keys=" + key)  # an authorized caller reads it
        assert current["container-registry"]["credentials"][0]["password"] == "new-password-88"
        assert 'password = "new-password-88"' in (d.root / "etc/containerd/config.toml").read_text()
    finally:
        d.stop()


def test_a_bundle_with_a_broken_certificate_is_an_error_naming_it():
    junk = b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(Exception, match=r"settings\.pki\.junk\.data: certificate 1 is not an"):
        ca_bundle("", {"junk": {"data": base64.b64encode(junk).decode(), "trusted": True}})


def test_receipts_restart_only_the_services_of_the_changed_setting(tmp_path):
    user_data = tmp_path / "user-data.toml"
    user_data.write_text(BASE)
    d = Daemon(tmp_path / "state", ["--variant", "aws-k8s", "--user-data", str(user_data)])
    try:
        eventually(lambda: d.ok("GET", "/status")["last_receipt"])
        for patch, files, services in [
            ({"dns": {"name-servers": ["10.0.0.9"]}}, {"resolv-conf"}, {"dns"}),
            ({"kernel": {"sysctl": {"vm.max_map_count": "262144"}}}, {"sysctl-conf"},
             {"sysctl"}),
            ({"network": {"https-proxy": "p.example.com:3128"}}, {"proxy-env"},
             {"containerd", "kubelet-proxy"}),
        ]:
            d.ok("PATCH", "/settings?tx=t", patch)
            receipt = d.ok("POST", "/tx/commit_and_apply?tx=t&wait=true")["receipt"]
            steps = receipt["steps"]
            assert {s["name"] for s in steps if s["kind"] == "file"} == files, steps
            assert {s["name"] for s in steps if s["kind"] == "service"} == services, steps
        # Bottlerocket's apiclient form, the value typed as a number by the keypair guess
        ok(d.apiclient("set", 'kernel.sysctl."vm.max_map_count"=65530'))
        sysctl = d.root / "etc/sysctl.d/90-host-reconciler.conf"
        eventually(lambda: "vm.max_map_count = 65530" in sysctl.read_text())
    finally:
        d.stop()
