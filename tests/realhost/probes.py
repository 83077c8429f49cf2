"""How the test host proves that each service of the catalog picks up our settings.

One ``Probe`` per service of ``renderers/metadata.toml``: a settings change (different for every
``n``) and a check that the service's *program* runs with the result (not merely that a file was
written). ``tests/test_realhost.py`` iterates over the catalog, so a service added to the
metadata without a probe here fails there, naming itself.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.realhost.machine import Machine, eventually


@dataclass(frozen=True)
class Probe:
    change: Callable[[int], dict[str, Any]]  # a settings patch (under ``settings``)
    reads: Callable[[Machine, int], object]  # passes once the program uses change ``n``
    why: str = ""  # what ``reads`` proves, when the program is not a long-running unit


def _servers(n: int) -> list[str]:
    # On the host's loopback: nothing leaves the container, chronyd still lists them.
    return [f"127.0.{n % 250}.21", f"127.0.{n % 250}.22"]


def _chrony_reads(machine: Machine, n: int) -> object:
    def listed() -> bool:
        sources = machine.out("chronyc", "-n", "sources")
        return all(server in sources for server in _servers(n))

    return eventually(listed, 20, lambda: machine.out("chronyc", "-n", "sources"))


def _file_has(path: str, text: Callable[[int], str]) -> Callable[[Machine, int], object]:
    def check(machine: Machine, n: int) -> object:
        content = machine.read(path)
        assert text(n) in content, f"{path}: {content!r} lacks {text(n)!r}"
        return True

    return check


PROBES: dict[str, Probe] = {
    "chronyd": Probe(
        lambda n: {"ntp": {"time-servers": _servers(n)}},
        _chrony_reads,
    ),
    "motd": Probe(
        lambda n: {"motd": f"motd number {n}"},
        _file_has("/etc/motd", lambda n: f"motd number {n}"),
        why="pam_motd prints /etc/motd at each login; there is no unit to restart",
    ),
    "updog": Probe(
        lambda n: {"updates": {"version-lock": f"v1.0.{n}"}},
        _file_has("/etc/updog.toml", lambda n: f'version_lock = "v1.0.{n}"'),
        why="updog reads /etc/updog.toml on each run; there is no unit to restart",
    ),
    "kubernetes": Probe(
        lambda n: {"kubernetes": {"max-pods": 20 + n}},
        _file_has("/etc/kubernetes/kubelet/config", lambda n: f"maxPods: {20 + n}"),
        why="the image has no kubelet: the service must be reported not installed",
    ),
    # ---- host settings (kernel, network, dns, registries, pki, boot) ----
    "sysctl": Probe(
        lambda n: {"kernel": {"sysctl": {"vm.max_map_count": str(262144 + n)}}},
        _file_has("/etc/sysctl.d/90-host-reconciler.conf",
                  lambda n: f"vm.max_map_count = {262144 + n}"),
        why="systemd-sysctl applies sysctl.d files; in a container /proc/sys is read-only",
    ),
    "kernel-modules": Probe(
        lambda n: {"kernel": {"modules": {f"probe{n}": {"allowed": False}}}},
        _file_has("/etc/modprobe.d/90-host-reconciler.conf", lambda n: f"blacklist probe{n}"),
        why="modprobe reads modprobe.d on every load",
    ),
    "bootconfig": Probe(
        lambda n: {"boot": {"kernel-parameters": {"probe": [str(n)]}}},
        _file_has("/etc/bootconfig.conf", lambda n: f'kernel.probe = "{n}"'),
        why="boot parameters are read at the next boot (RebootRequired in /status)",
    ),
    "hosts": Probe(
        lambda n: {"network": {"hosts": [[f"10.9.{n % 250}.1", [f"probe-{n}.example.com"]]]}},
        lambda machine, n: eventually(
            lambda: f"10.9.{n % 250}.1" in machine.out("getent", "hosts", f"probe-{n}.example.com"),
            10, lambda: machine.read("/etc/hosts")),
        why="the resolver (getent) reads /etc/hosts on every lookup",
    ),
    "dns": Probe(
        lambda n: {"dns": {"name-servers": [f"127.0.{n % 250}.53"]}},
        _file_has("/etc/resolv.conf", lambda n: f"nameserver 127.0.{n % 250}.53"),
        why="glibc re-reads /etc/resolv.conf when it changes",
    ),
    "hostname": Probe(
        lambda n: {"network": {"hostname": f"probe-{n}"}},
        lambda machine, n: eventually(lambda: machine.out("hostname").strip() == f"probe-{n}",
                                      10, lambda: machine.read("/etc/hostname")),
    ),
    "containerd": Probe(
        lambda n: {"container-runtime": {"max-concurrent-downloads": n}},
        _file_has("/etc/containerd/config.toml", lambda n: f"max_concurrent_downloads = {n}"),
        why="the image has no containerd: the service must be reported not installed",
    ),
    "podman-registries": Probe(
        lambda n: {"container-registry": {"mirrors": [
            {"registry": "docker.io", "endpoint": [f"https://m{n}.example.com"]}]}},
        _file_has("/etc/containers/registries.conf.d/50-host-reconciler.conf",
                  lambda n: f'location = "m{n}.example.com"'),
        why="podman reads registries.conf.d and its auth file on every pull",
    ),
    "kubelet-proxy": Probe(
        lambda n: {"network": {"https-proxy": f"http://127.0.0.1:{3000 + n}"}},
        _file_has("/etc/network/proxy.env", lambda n: f"HTTPS_PROXY=http://127.0.0.1:{3000 + n}"),
        why="the image has no kubelet: the service must be reported not installed",
    ),
    "aws-config": Probe(
        lambda n: {"aws": {"config": base64.b64encode(
            f"[default]\nregion = eu-probe-{n}\n".encode()).decode()}},
        _file_has("/root/.aws/config", lambda n: f"region = eu-probe-{n}"),
        why="the AWS SDKs (the kubelet's credential provider) read it at each use; no unit",
    ),
}
