"""Bottlerocket's documented user data for the host sections validates, as is.

The examples are those of Bottlerocket's README settings reference (kernel, network, dns,
container-registry, container-runtime, oci-defaults, pki, boot), with its ``<placeholders>`` and
``W3N...`` elisions filled with real values (Bottlerocket itself refuses them), and its shared
defaults for these sections. Each must validate in every variant that has its sections, and a
near miss must fail naming the key.
"""

from __future__ import annotations

import base64
import tomllib

import pytest

from reconciler.schema import VARIANTS, Schema

CERT = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()

EXAMPLES = {
    "kernel-modules-blocked": """
[settings.kernel.modules.sctp]
allowed = false

[settings.kernel.modules.udf]
allowed = false
""",
    "kernel-modules-autoload": """
[settings.kernel.modules.ip_vs_lc]
allowed = true
autoload = true
""",
    "kernel-sysctl": """
[settings.kernel.sysctl]
"user.max_user_namespaces" = "16384"
"vm.max_map_count" = "262144"
""",
    "kernel-lockdown": '[settings.kernel]\nlockdown = "integrity"\n',
    "network-hosts": """
[settings.network]
hosts = [
 ["10.0.0.0", ["test.example.com", "test1.example.com"]],
 ["10.1.1.1", ["test2.example.com"]],
 ["10.0.0.0", ["test3.example.com"]],
]
""",
    "network-proxy": """
[settings.network]
https-proxy = "1.2.3.4:8080"
no-proxy = ["localhost", "127.0.0.1"]
""",
    "network-hostname": '[settings.network]\nhostname = "ip-10-0-0-1.us-west-2.compute.internal"\n',
    "dns": """
[settings.dns]
name-servers = ["1.2.3.4", "5.6.7.8"]
search-list = ["foo.bar", "baz.foo"]
""",
    "registry-mirrors": """
[[settings.container-registry.mirrors]]
registry = "*"
endpoint = ["https://example-mirror.example.com","https://example-mirror-2.example.com"]

[[settings.container-registry.mirrors]]
registry = "docker.io"
endpoint = [ "https://hub-mirror.example.com", "https://hub-mirror-2.example.com"]
""",
    "registry-mirrors-table-form": """
[settings.container-registry.mirrors]
"docker.io" = ["https://hub-mirror.example.com"]
""",
    "registry-credentials": """
[[settings.container-registry.credentials]]
registry = "docker.io"
username = "foo"
password = "bar"

[[settings.container-registry.credentials]]
registry = "gcr.io"
auth = "ZXhhbXBsZV91c2VybmFtZTpleGFtcGxlX3Bhc3N3b3Jk"
""",
    "container-runtime": """
[settings.container-runtime]
max-container-log-line-size = -1
max-concurrent-downloads = 4
enable-unprivileged-icmp = true
enable-unprivileged-ports = true
""",
    "oci-defaults-limits": """
[settings.oci-defaults.resource-limits.max-open-files]
soft-limit = 65536
hard-limit = 9223372036854775807

[settings.oci-defaults.resource-limits.max-processes]
soft-limit = 65536
hard-limit = "unlimited"
""",
    "boot": """
[settings.boot]
reboot-to-reconcile = true

[settings.boot.kernel-parameters]
"console" = [
  "tty0",
  "ttyS1,115200n8",
]
"crashkernel" = [
  "2G-:256M",
]
"slub_debug" = [
  "options,slabs",
]
"usbcore.quirks" = [
  "0781:5580:bk",
  "0a5c:5834:gij",
]

[settings.boot.init-parameters]
"log_level" = ["debug"]
"splash" = []
""",
    "pki": f"""
[settings.pki.my-trusted-bundle]
data="{CERT}"
trusted=true

[settings.pki.dont-trust-these]
data="{CERT}"
trusted=false
""",
    # Bottlerocket's shared defaults of these sections (lockdown-integrity, lockdown-none,
    # oci-defaults-capabilities, oci-defaults-containerd-cri-resource-limits)
    "defaults-lockdown-none": '[settings.kernel]\nlockdown = "none"\n',
    "defaults-oci": """
[settings.oci-defaults.capabilities]
audit-write = true
chown = true
dac-override = true
fowner = true
fsetid = true
kill = true
mknod = true
net-bind-service = true
net-raw = true
setgid = true
setfcap = true
setpcap = true
setuid = true
sys-chroot = true

[settings.oci-defaults.resource-limits.max-open-files]
hard-limit = 1048576
soft-limit = 65536
""",
}

# the apiclient form of the credentials example (apiclient set --json)
APICLIENT_CREDENTIALS = {"container-registry": {"credentials": [
    {"registry": "gcr.io", "username": "example_username", "password": "example_password"},
    {"registry": "docker.io", "auth": "ZXhhbXBsZQ=="},
]}}


def variants_with(settings: dict) -> list[str]:
    return [v for v in VARIANTS if set(settings) <= set(Schema.load(v).sections)]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_documented_example_validates(name):
    settings = tomllib.loads(EXAMPLES[name])["settings"]
    variants = variants_with(settings)
    assert variants, f"no variant has the sections of {name}"
    for variant in variants:
        assert Schema.load(variant).validate(settings) == [], (name, variant)


def test_apiclient_credentials_example_validates():
    assert Schema.load("aws-k8s").validate(APICLIENT_CREDENTIALS) == []


def test_container_runtime_and_oci_defaults_are_where_bottlerocket_has_them():
    assert "container-runtime" in Schema.load("aws-k8s").sections
    assert "oci-defaults" in Schema.load("aws-ecs").sections
    dev = Schema.load("aws-dev").validate(tomllib.loads(EXAMPLES["container-runtime"])["settings"])
    assert [p.key for p in dev] == ["settings.container-runtime"]


@pytest.mark.parametrize(("text", "key", "words"), [
    ('[settings.kernel]\nlockdown = "strict"\n', "settings.kernel.lockdown", "lockdown mode"),
    ('[settings.kernel.sysctl]\n"vm.max_map_count" = "1\\n2"\n',
     'settings.kernel.sysctl."vm.max_map_count"', "one line"),
    ('[settings.kernel.sysctl]\n"vm.max_map_count" = 1.5\n',
     'settings.kernel.sysctl."vm.max_map_count"', "one line"),
    ('[settings.kernel.modules."bad.name"]\nallowed = false\n',
     'settings.kernel.modules."bad.name"', "kernel module name"),
    ('[settings.network]\nhostname = "Bad_Host"\n', "settings.network.hostname", "host name"),
    ('[settings.network]\nhosts = [["10.0.0.256", ["a"]]]\n', "settings.network.hosts",
     "IPv4 address"),
    ('[settings.dns]\nname-servers = ["dns.example.com"]\n', "settings.dns.name-servers",
     "IPv6 address"),
    ('[[settings.container-registry.mirrors]]\nregistry = "docker.io"\nendpoints = []\n',
     "settings.container-registry.mirrors.endpoints", "did you mean"),
    ('[settings.container-runtime]\nmax-concurrent-downloads = "4"\n',
     "settings.container-runtime.max-concurrent-downloads", "integer"),
    ('[settings.oci-defaults.resource-limits.max-open-files]\nsoft-limit = "lots"\n',
     "settings.oci-defaults.resource-limits.max-open-files.soft-limit", "unlimited"),
    ('[settings.oci-defaults.capabilities]\ncap-chown = true\n',
     "settings.oci-defaults.capabilities.cap-chown", "unknown setting"),
    ('[settings.pki.mine]\ndata = "not base64!"\n', "settings.pki.mine.data", "base64"),
    ('[settings.boot.kernel-parameters]\n"a..b" = []\n', 'settings.boot.kernel-parameters."a..b"',
     "boot parameter name"),
])
def test_near_misses_name_the_key(text, key, words):
    problems = Schema.load("aws-k8s").validate(tomllib.loads(text)["settings"])
    assert [p.key for p in problems] == [key], problems
    assert words in problems[0].message
