"""The daemon on a real host: Debian, systemd as PID 1, `--root /`, real services.

The host is the image of `tests/realhost/build.py` (cached by the hash of its inputs; the first
run on a machine builds it) booted in podman. The daemon runs as
`examples/systemd/reconciler.service`
(`Type=notify`), installed by the steps of `examples/systemd/README.md`, with the host's user data
in `/etc/reconciler/user-data.toml`. Every check is made on the host with the host's own tools:
`systemctl`, `chronyc`, `apiclient`. No podman or no image is a failure saying why, never a skip.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from hostcore.keys import flatten
from renderers.catalog import Catalog
from tests.realhost.build import HostImageError, ensure_image
from tests.realhost.machine import Machine, eventually
from tests.realhost.probes import PROBES

VARIANT = "aws-k8s"  # what examples/systemd/reconciler.service runs
UNIT = "reconciler.service"
DISK = "/var/lib/reconciler-test/disk.img"
FAILING_RELOAD = "/run/systemd/system/chrony.service.d/fail-reload.conf"
pytestmark = pytest.mark.timeout(900)
_counter = itertools.count(1)


def catalog() -> Catalog:
    """The catalog as the host's daemon loads it (Debian: os-release ID=debian)."""
    return Catalog.load(VARIANT, distributions=["debian"])


@pytest.fixture(scope="module")
def host() -> Iterator[Machine]:
    machine = Machine.boot()
    try:
        eventually(lambda: machine.unit(UNIT, "ActiveState")["ActiveState"] == "active", 60,
                   machine.daemon_log)
        machine.settle()
        yield machine
    finally:
        machine.remove()


def step(receipt: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    return next((s for s in receipt["steps"] if s["kind"] == kind and s["name"] == name), None)


def installed_units(host: Machine) -> dict[str, str]:
    """service -> unit, for the catalog's services whose unit the host has."""
    return {name: s.unit for name, s in catalog().services.items()
            if s.unit and s.commands and host.installed(s.unit)}


# ---- the unit ---------------------------------------------------------------------------------


def test_no_podman_or_mmdebstrap_is_a_failure_saying_why(monkeypatch, tmp_path) -> None:
    """Without the tools the host cannot be made, and the tests fail (never skip) saying so."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HostImageError, match=r"podman, mmdebstrap not installed: run `make test`"):
        ensure_image()


def test_first_boot_applied_user_data_with_root_slash(host: Machine) -> None:
    assert host.out("cat", "/proc/1/comm") == "systemd"
    assert host.run("sh", "-c", "command -v git", check=False).returncode != 0, \
        "the image must lack git: the daemon has to start without it when gitops is unused"
    assert host.unit(UNIT, "Type")["Type"] == "notify"
    assert host.read("/etc/motd").strip() == "hello from the real host"
    assert "127.0.0.11" in host.read("/etc/chrony/chrony.conf")
    assert host.run("test", "-e", "/etc/chrony.conf", check=False).returncode != 0, \
        "on Debian the catalog writes Debian's path, not Bottlerocket's"
    status = host.status()
    assert status["state"] == "Ready", status
    assert host.out("chronyc", "-n", "sources").count("127.0.0.1") == 2


def test_active_only_after_ready(host: Machine) -> None:
    """`systemctl start` returns once READY=1 came; without READY=1 the unit never gets active
    even though the API answers."""
    host.run("systemctl", "restart", UNIT)
    assert host.unit(UNIT, "ActiveState")["ActiveState"] == "active"
    assert host.api("/os")["variant_id"] == VARIANT  # no wait: ready means the socket answers

    host.write("/run/systemd/system/reconciler.service.d/no-notify.conf",
               "[Service]\nUnsetEnvironment=NOTIFY_SOCKET\nTimeoutStartSec=infinity\n")
    try:
        host.run("systemctl", "daemon-reload")
        host.run("systemctl", "restart", "--no-block", UNIT)
        eventually(lambda: host.api("/os"), 60, host.daemon_log)
        assert host.unit(UNIT, "ActiveState")["ActiveState"] == "activating"
    finally:
        host.run("rm", "-rf", "/run/systemd/system/reconciler.service.d")
        host.run("systemctl", "daemon-reload")
        host.run("systemctl", "restart", UNIT)
    assert host.unit(UNIT, "ActiveState")["ActiveState"] == "active"
    host.settle()


def test_clean_stop_and_restart_keep_state(host: Machine) -> None:
    host.set({"motd": "kept across restarts"})
    before = host.status()
    host.run("systemctl", "stop", UNIT)
    props = host.unit(UNIT, "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert host.run("test", "-S", "/run/api.sock", check=False).returncode != 0
    host.run("systemctl", "start", UNIT)
    after = host.settle()
    assert after["live_generation"] == before["live_generation"]
    assert host.api("/settings?keys=settings.motd")["motd"] == "kept across restarts"
    assert host.read("/etc/motd").strip() == "kept across restarts"
    assert after["state"] == "Ready", after


# ---- every service of the catalog -------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(catalog().services))
def test_service_picks_up_its_settings_when_and_only_when_they_change(
    host: Machine, service: str
) -> None:
    spec = catalog().services[service]
    probe = PROBES.get(service)
    assert probe is not None, (
        f"service {service!r} of renderers/metadata.toml has no real-host probe: add one to "
        "tests/realhost/probes.py (a settings change and a check that its program reads it)")
    unrelated = {"motd": f"unrelated {next(_counter)}"} if service != "motd" else \
        {"updates": {"version-lock": f"v9.9.{next(_counter)}"}}

    if spec.unit and spec.commands and not host.installed(spec.unit):
        # The image cannot run it: the pass reports it and goes on, and does not retry.
        receipt = host.set(probe.change(next(_counter)))
        assert receipt["ok"], receipt
        got = step(receipt, "service", service)
        assert got and got["result"] == "not-installed" and spec.unit in got["detail"], receipt
        status = host.status()
        assert status["not_installed"].get(service) == spec.unit, status
        again = host.set(unrelated)
        assert again["ok"] and step(again, "service", service) is None, again
        assert host.status()["state"] == "Ready"
        return

    watched = installed_units(host)
    before = {name: host.started(unit) for name, unit in watched.items()}
    receipt = host.set(unrelated)
    assert receipt["ok"], receipt
    assert {n: host.started(u) for n, u in watched.items()} == before, \
        "a change of other settings restarted a service"

    n = next(_counter)
    receipt = host.set(probe.change(n))
    assert receipt["ok"], receipt
    got = step(receipt, "service", service)
    assert got is not None, receipt
    probe.reads(host, n)
    after = {name: host.started(unit) for name, unit in watched.items()}
    # Services that read the same settings (containerd and podman both read the registry
    # mirrors) restart together; every other one must keep running.
    changed = list(flatten({"settings": probe.change(n)}))
    readers = {s for names in catalog().affected_services(changed).values() for s in names}
    for name in watched:
        if name == service:
            assert after[name] != before[name], f"{watched[name]} was not restarted/reloaded"
            assert got["result"] == "restarted", got
        elif name not in readers:
            assert after[name] == before[name], f"{watched[name]} restarted for {service}"
    if not spec.commands:
        assert got["result"] == "applied" and probe.why, got

    receipt = host.set(probe.change(n))  # the same values again: nothing to do
    assert step(receipt, "service", service) is None, receipt
    assert {name: host.started(unit) for name, unit in watched.items()} == after


def test_hand_edits_under_etc_are_repaired(host: Machine) -> None:
    """Each rendered file edited by hand comes back, and its service restarts to read it."""
    host.settle()
    units = installed_units(host)
    for name, spec in catalog().files.items():
        path = spec.path
        original = host.run("cat", path).stdout
        owners = [s for s, svc in catalog().services.items() if name in svc.configuration_files]
        before = {s: host.started(units[s]) for s in owners if s in units}
        host.sh(f"echo '# edited by hand' >> {path}")
        eventually(lambda path=path, original=original: host.run("cat", path).stdout == original,
                   30, host.daemon_log)
        for service, started in before.items():
            eventually(lambda s=service, b=started: host.started(units[s]) != b, 30,
                       host.daemon_log)
    status = host.settle()
    assert status["state"] == "Ready", status


def test_a_failing_restart_leaves_the_others_running_and_degrades(host: Machine) -> None:
    units = installed_units(host)
    assert "chronyd" in units
    others = {name: host.started(unit) for name, unit in units.items() if name != "chronyd"}
    # Its pick-up command (try-reload-or-restart) now fails, and chronyd keeps running.
    host.write(FAILING_RELOAD, "[Service]\nExecReload=/bin/false\n")
    host.run("systemctl", "daemon-reload")
    try:
        n = next(_counter)
        receipt = host.set({**PROBES["chronyd"].change(n), "motd": f"despite chrony {n}"})
        assert not receipt["ok"]
        assert step(receipt, "service", "chronyd")["result"] == "failed", receipt
        assert host.read("/etc/motd").strip() == f"despite chrony {n}"
        status = host.status()
        assert status["state"] == "Degraded", status
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert any(r.startswith("service chronyd:") for r in degraded["reasons"]), degraded
        assert {name: host.started(u) for name, u in units.items() if name != "chronyd"} == \
            others
        for unit in ("containerd.service", "ssh.service", UNIT):
            assert host.unit(unit, "ActiveState")["ActiveState"] == "active", unit
    finally:
        host.run("rm", "-f", FAILING_RELOAD)
        host.run("systemctl", "daemon-reload")
    host.set({"motd": f"chrony back {n}"})  # the owed restart is retried with the next pass
    PROBES["chronyd"].reads(host, n)
    assert host.settle()["state"] == "Ready"


# ---- reboot -----------------------------------------------------------------------------------


def test_reboot_comes_back_from_state_and_the_boot_gate_marks_it(host: Machine) -> None:
    """`apiclient reboot` reboots the host (systemd in the container ends it, podman's restart
    policy boots it again); the daemon, now with `--disk` on a disk image (the drop-in of
    examples/systemd), starts from its state and its boot gate marks the new boot."""
    vm = "/opt/host-reconciler/bin/python"
    host.run("mkdir", "-p", "/var/lib/reconciler-test")
    host.run("signpost", "--disk", DISK, "create-disk", "--os-version", "1.0.0",
             "--variant", VARIANT)
    # Set B holds the same version; it becomes the next to boot, not yet successful.
    host.run(vm, "-c", (
        "import sys; from updates import osimage; from updates.partitions import OsDisk\n"
        f"d = OsDisk('{DISK}'); e = d.entry('B', 'root')\n"
        f"img = osimage.root_image('1.0.0', '{VARIANT}')\n"
        f"f = open('{DISK}', 'r+b'); f.seek(e.offset); f.write(img); f.close(); d.close()"))
    host.run("signpost", "--disk", DISK, "mark-inactive-valid")
    host.run("signpost", "--disk", DISK, "upgrade-to-inactive")
    # The firmware of this host: the bootloader's choice, made before the daemon starts.
    host.write("/etc/systemd/system/test-bootloader.service", (
        "[Unit]\nDescription=Simulated bootloader (signpost boot) of the test host\n"
        "Before=reconciler.service\nDefaultDependencies=no\n"
        f"[Service]\nType=oneshot\nExecStart=/usr/local/bin/signpost --disk {DISK} boot\n"
        "[Install]\nWantedBy=multi-user.target\n"))
    host.run("systemctl", "enable", "test-bootloader.service")
    host.sh("mkdir -p /etc/systemd/system/reconciler.service.d && sed 's|/dev/nvme0n1|"
            f"{DISK}|' /usr/share/doc/host-reconciler/examples/systemd/"
            "reconciler-mark-boot.service > /etc/systemd/system/reconciler.service.d/disk.conf")
    dropin = host.read("/etc/systemd/system/reconciler.service.d/disk.conf")
    assert DISK in dropin, dropin
    host.run("systemctl", "daemon-reload")
    # A `shutdown` still running when systemd stops the services, as on a loaded host: it is
    # ended with them (SIGTERM), and the reboot it queued goes on.
    host.write("/usr/local/sbin/shutdown", '#!/bin/sh\n/usr/sbin/shutdown "$@" && exec sleep 60\n',
               mode="0755")

    n = next(_counter)
    host.set({"motd": f"before reboot {n}"})
    generation = host.status()["live_generation"]
    started = host.inspect()["State"]["StartedAt"]
    host.apiclient("reboot")
    eventually(lambda: host.inspect()["State"]["StartedAt"] != started, 120)
    host.wait_booted()
    eventually(lambda: host.unit(UNIT, "ActiveState")["ActiveState"] == "active", 60,
               host.daemon_log)
    status = host.settle()
    assert status["live_generation"] == generation, status
    assert host.read("/etc/motd").strip() == f"before reboot {n}"
    boot = eventually(lambda: host.status()["updates"]["boot"], 30, host.daemon_log)
    assert boot["marked_successful"] and boot["set"] == "B", boot
    flags = json.loads(host.out(vm, "-c", (
        "import json; from updates.partitions import OsDisk\n"
        f"d = OsDisk('{DISK}', writable=False); f = d.flags('B')\n"
        "print(json.dumps({'successful': f.successful, 'active': d.active}))")))
    assert flags == {"successful": True, "active": "B"}, flags
