"""Pure builders of the host's configuration files that a template alone renders badly.

Why not in the templates: ``/etc/hosts`` merges repeated addresses, the CA bundle compares
certificates, the boot parameters are read back from ``/proc/bootconfig`` to tell whether a reboot
is needed, podman's files translate containerd's registry names. Each is plain data in, text out,
and raises :class:`renderers.helpers.HelperError` (naming the setting) on a value it cannot place.
The templates call them as helpers (see ``HOST_HELPERS``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from renderers.helpers import HelperError, is_missing, toml_string

RLIM_INFINITY = 18446744073709551615  # what runc sets for "unlimited" (RLIM_INFINITY, 2^64-1)
DOCKER_HUB = "docker.io"
DOCKER_HUB_HOST = "registry-1.docker.io"  # where containerd sends docker.io credentials
LOCALHOST = {"ipv4": "127.0.0.1", "ipv6": "::1"}


def _map(value: Any) -> Mapping[str, Any]:
    return {} if is_missing(value) else value


def _list(value: Any) -> list[Any]:
    return [] if is_missing(value) else list(value)


# --- /etc/hosts -----------------------------------------------------------------------------------


def merged_hosts(entries: Any) -> list[tuple[str, list[str]]]:
    """``[address, [names]]`` pairs with repeated addresses merged, in first-seen order."""
    merged: dict[str, list[str]] = {}
    for address, names in _list(entries):
        merged.setdefault(address, []).extend(names)
    return list(merged.items())


def etc_hosts(hostname: Any, entries: Any) -> str:
    """The whole ``/etc/hosts``, as Bottlerocket's hosts template renders it.

    The host name goes onto the localhost lines unless an entry names it (Bottlerocket also asks
    DNS first; we do not, so the file depends on the settings alone). Entries for 127.0.0.1 and
    ::1 join the localhost lines.
    """
    merged = merged_hosts(entries)
    named = {name for _, names in merged for name in names}
    lines = []
    for family, base in (("ipv4", "localhost.localdomain localhost4 localhost4.localdomain4"),
                         ("ipv6", "localhost.localdomain localhost6 localhost6.localdomain6")):
        aliases = []
        if not is_missing(hostname) and hostname and hostname not in named:
            aliases.append(hostname)
        for address, names in merged:
            if address == LOCALHOST[family]:
                aliases.extend(names)
        lines.append(" ".join([LOCALHOST[family], "localhost", base, *aliases]))
    lines.append("")
    for address, names in merged:
        if address not in LOCALHOST.values():
            lines.append(f"{address} {' '.join(names)}")
    return "\n".join(lines) + "\n"


# --- proxy ----------------------------------------------------------------------------------------


def url_host(url: Any) -> str:
    """The host of a URL (``https://h:443/p`` -> ``h``), for NO_PROXY."""
    text = str(url)
    text = text.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def no_proxy(entries: Any, api_server: Any = None, cluster_domain: Any = None) -> str:
    """NO_PROXY as Bottlerocket builds it: the user's hosts, localhost, and on Kubernetes the API
    server's host and ``.<cluster domain>``."""
    hosts = [str(e) for e in _list(entries)] + ["localhost", "127.0.0.1"]
    if not is_missing(api_server):
        hosts.append(url_host(api_server))
    if not is_missing(cluster_domain):
        hosts.append(f".{cluster_domain}")
    for host in hosts:
        if "," in host or any(c.isspace() for c in host):
            raise HelperError(f"settings.network.no-proxy: {host!r} holds a comma or a space")
    return ",".join(hosts)


# --- containerd -----------------------------------------------------------------------------------


def mirror_list(mirrors: Any) -> list[tuple[str, list[str]]]:
    """Registry mirrors as ``(registry, [endpoints])``, from the list or the older table form."""
    if is_missing(mirrors):
        return []
    if isinstance(mirrors, Mapping):
        return [(registry, list(endpoints)) for registry, endpoints in mirrors.items()]
    found: list[tuple[str, list[str]]] = []
    for entry in mirrors:
        registry = entry.get("registry")
        if is_missing(registry):
            raise HelperError("settings.container-registry.mirrors: an entry has no registry")
        found.append((registry, list(_list(entry.get("endpoint")))))
    return found


def containerd_registries(mirrors: Any, credentials: Any) -> str:
    """The CRI registry tables of containerd's config (version 2) for mirrors and credentials."""
    out: list[str] = []
    prefix = '[plugins."io.containerd.grpc.v1.cri".registry'
    for registry, endpoints in mirror_list(mirrors):
        out.append(f"{prefix}.mirrors.{toml_string(registry)}]")
        out.append("endpoint = [" + ", ".join(toml_string(e) for e in endpoints) + "]")
        out.append("")
    for entry in _list(credentials):
        registry = entry.get("registry")
        if is_missing(registry):
            raise HelperError("settings.container-registry.credentials: an entry has no registry")
        host = DOCKER_HUB_HOST if registry == DOCKER_HUB else registry
        out.append(f"{prefix}.configs.{toml_string(host)}.auth]")
        for field in ("username", "password", "auth", "identitytoken"):
            if not is_missing(entry.get(field)):
                out.append(f"{field} = {toml_string(entry[field])}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def oci_capabilities(capabilities: Any) -> list[str]:
    """``CAP_*`` names of the granted capabilities, sorted."""
    return sorted(
        "CAP_" + name.upper().replace("-", "_")
        for name, granted in _map(capabilities).items() if granted
    )


_RLIMITS = {
    "max-address-space": "RLIMIT_AS", "max-core-file-size": "RLIMIT_CORE",
    "max-cpu-time": "RLIMIT_CPU", "max-data-size": "RLIMIT_DATA",
    "max-file-locks": "RLIMIT_LOCKS", "max-file-size": "RLIMIT_FSIZE",
    "max-locked-memory": "RLIMIT_MEMLOCK", "max-msgqueue-size": "RLIMIT_MSGQUEUE",
    "max-nice-priority": "RLIMIT_NICE", "max-open-files": "RLIMIT_NOFILE",
    "max-pending-signals": "RLIMIT_SIGPENDING", "max-processes": "RLIMIT_NPROC",
    "max-realtime-priority": "RLIMIT_RTPRIO", "max-realtime-timeout": "RLIMIT_RTTIME",
    "max-resident-set": "RLIMIT_RSS", "max-stack-size": "RLIMIT_STACK",
}  # fmt: skip


def _limit(value: Any, key: str) -> int:
    if value in ("unlimited", -1):
        return RLIM_INFINITY
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise HelperError(f"{key}: {value!r} is not a limit")


def oci_rlimits(limits: Any) -> list[dict[str, Any]]:
    """OCI ``process.rlimits`` entries; a missing soft or hard limit takes the other's value."""
    found = []
    for name, limit in sorted(_map(limits).items()):
        key = f"settings.oci-defaults.resource-limits.{name}"
        hard, soft = limit.get("hard-limit"), limit.get("soft-limit")
        if is_missing(hard) and is_missing(soft):
            continue
        hard = soft if is_missing(hard) else hard
        soft = hard if is_missing(soft) else soft
        found.append({"type": _RLIMITS[name], "hard": _limit(hard, key + ".hard-limit"),
                      "soft": _limit(soft, key + ".soft-limit")})
    return found


def oci_base_spec(base: Any, capabilities: Any, limits: Any) -> str:
    """containerd's base runtime spec: ``base`` (a JSON text) with the process section filled."""
    spec = json.loads(base)
    process = spec.setdefault("process", {})
    if not is_missing(capabilities):
        caps = oci_capabilities(capabilities)
        process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    rlimits = oci_rlimits(limits)
    if rlimits:
        process["rlimits"] = rlimits
    return json.dumps(spec, indent=4)


# --- podman ---------------------------------------------------------------------------------------


def _location(endpoint: str) -> tuple[str, bool]:
    """podman's mirror location (no scheme) and whether it is plain HTTP."""
    scheme, _, rest = endpoint.partition("://")
    if not rest:
        return endpoint.rstrip("/"), False
    return rest.rstrip("/"), scheme.lower() == "http"


def podman_registries(mirrors: Any) -> str:
    """containers-registries.conf(5) v2 tables: one [[registry]] per mirrored registry.

    ``*`` (every registry) has no registries.conf equivalent: its endpoints are appended to the
    mirrors of each named registry, and of docker.io.
    """
    entries = mirror_list(mirrors)
    everywhere = [e for registry, endpoints in entries if registry == "*" for e in endpoints]
    named = {registry: endpoints for registry, endpoints in entries if registry != "*"}
    if everywhere and DOCKER_HUB not in named:
        named[DOCKER_HUB] = []
    out = ["# Registry mirrors for podman (host containers), from settings.container-registry.",
           ""]
    for registry, endpoints in named.items():
        out += ["[[registry]]", f"prefix = {toml_string(registry)}",
                f"location = {toml_string(registry)}", ""]
        for endpoint in [*endpoints, *everywhere]:
            location, insecure = _location(endpoint)
            out += ["[[registry.mirror]]", f"location = {toml_string(location)}"]
            if insecure:
                out.append("insecure = true")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def podman_auth(credentials: Any) -> str:
    """containers-auth.json(5): ``{"auths": {registry: {"auth": base64 user:password}}}``."""
    auths: dict[str, dict[str, str]] = {}
    for entry in _list(credentials):
        registry = entry.get("registry")
        if is_missing(registry):
            raise HelperError("settings.container-registry.credentials: an entry has no registry")
        item: dict[str, str] = {}
        if not is_missing(entry.get("auth")):
            item["auth"] = entry["auth"]
        elif not is_missing(entry.get("username")) or not is_missing(entry.get("password")):
            pair = f"{entry.get('username') or ''}:{entry.get('password') or ''}"
            item["auth"] = base64.b64encode(pair.encode()).decode()
        if not is_missing(entry.get("identitytoken")):
            item["identitytoken"] = entry["identitytoken"]
        auths[registry] = item
    return json.dumps({"auths": auths}, indent=2, sort_keys=True) + "\n"


# --- CA bundle ------------------------------------------------------------------------------------

_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----"
)


def certificates(text: str) -> list[bytes]:
    """The DER bytes of every PEM certificate in ``text``."""
    found = []
    for match in _PEM.finditer(text):
        try:
            found.append(base64.b64decode("".join(match.group(1).split()), validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def _pem(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _check_certificate(der: bytes, where: str) -> None:
    """Refuse what is not an X.509 certificate (Bottlerocket's PemCertificateString rule)."""
    from cryptography import x509  # only when a bundle is set: keeps start-up light

    try:
        x509.load_der_x509_certificate(der)
    except ValueError as error:
        raise HelperError(f"{where} is not an X.509 certificate: {error}") from error


def ca_bundle(system: Any, bundles: Any) -> str:
    """The system bundle plus the trusted bundles, minus every certificate of a distrusted one.

    Each bundle's ``data`` is base64 of PEM text; a bundle that holds no certificate is an error
    naming it (an empty ``data`` drops the bundle). Certificates are compared by their DER bytes,
    so a distrusted certificate goes whatever its PEM line wrapping.
    """
    trusted: list[bytes] = []
    distrusted: set[bytes] = set()
    for name, bundle in sorted(_map(bundles).items()):
        data = bundle.get("data")
        if is_missing(data) or not str(data).strip():
            continue
        key = f"settings.pki.{name}.data"
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as error:
            raise HelperError(f"{key}: not base64 of PEM text: {error}") from error
        certs = certificates(text)
        if not certs:
            raise HelperError(f"{key}: holds no PEM certificate")
        for number, der in enumerate(certs, 1):
            _check_certificate(der, f"{key}: certificate {number}")
        if bundle.get("trusted") is True:
            trusted.extend(certs)
        else:
            distrusted.update(certs)
    seen: set[bytes] = set()
    out = []
    for der in [*certificates("" if is_missing(system) else str(system)), *trusted]:
        if der in distrusted or der in seen:
            continue
        seen.add(der)
        out.append(_pem(der))
    return "".join(out)


# --- boot parameters (bootconfig) -----------------------------------------------------------------


def boot_parameters(boot: Any, kernel: Any = None) -> dict[str, list[str]]:
    """``{"kernel.<name>" | "init.<name>": [values]}`` wanted for the next boot, sorted.

    ``kernel``/``init`` (Bottlerocket's stored names) and ``kernel-parameters``/``init-parameters``
    are merged, the latter winning; ``settings.kernel.lockdown`` adds ``kernel.lockdown`` unless
    the kernel parameters name it.
    """
    boot = _map(boot)
    found: dict[str, list[str]] = {}
    for prefix, names in (("kernel", ("kernel", "kernel-parameters")),
                          ("init", ("init", "init-parameters"))):
        for name in names:
            for key, values in _map(boot.get(name)).items():
                found[f"{prefix}.{key}"] = [str(v) for v in values]
    lockdown = _map(kernel).get("lockdown")
    if not is_missing(lockdown):
        found.setdefault("kernel.lockdown", [str(lockdown)])
    return dict(sorted(found.items()))


def _quote(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


def bootconfig(parameters: Mapping[str, Iterable[str]]) -> str:
    """Parameters in the kernel's bootconfig syntax, one ``key = "v", ...`` line each, the way
    ``/proc/bootconfig`` shows them (so the booted file parses back with :func:`parse_bootconfig`).
    """
    lines = []
    for key, values in parameters.items():
        values = list(values)
        lines.append(f"{key} = " + (", ".join(_quote(v) for v in values) if values else '""'))
    return "".join(line + "\n" for line in lines)


_VALUE = re.compile(r"\s*(?:\"([^\"]*)\"|'([^']*)'|([^,\s#]+))\s*(,|$)")


def parse_bootconfig(text: str) -> dict[str, list[str]]:
    """``/proc/bootconfig`` as ``{key: [values]}``; an empty value ``""`` reads as no value."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, rest = line.partition("=")
        values: list[str] = []
        position = 0
        rest = rest.strip()
        while position < len(rest):
            match = _VALUE.match(rest, position)
            if match is None:
                break
            values.append(next(g for g in match.groups()[:3] if g is not None))
            position = match.end()
        found[key.strip()] = [] if values == [""] else values
    return found


def normalized(parameters: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Parameters as :func:`parse_bootconfig` would read them back (``[""]`` is a flag)."""
    return {k: [] if list(v) == [""] else list(v) for k, v in parameters.items()}


HOST_HELPERS = {
    "etc_hosts": etc_hosts,
    "url_host": url_host,
    "no_proxy": no_proxy,
    "containerd_registries": containerd_registries,
    "oci_base_spec": oci_base_spec,
    "podman_registries": podman_registries,
    "podman_auth": podman_auth,
    "ca_bundle": ca_bundle,
    "boot_parameters": boot_parameters,
    "bootconfig": bootconfig,
}
