"""A simulated fleet for reboot coordination: many hosts, one TUF repository, one lock server.

Each host is what ``tests/updates/test_daemon_updates.py`` drives by hand: its own GPT disk image
(the A/B sets), host root and state directory, and a real ``reconciler serve --disk`` daemon
that updates itself (``settings.updates.automatic`` and ``automatic-reboot``) through updog
children against the fleet's TUF repository on 127.0.0.1, and takes a FleetLock slot from
``fleetlock serve`` on a real etcd before rebooting.

The machine's part is here: a sandboxed daemon cannot run ``shutdown -r now`` and says so in
its log ("...; skipped: the root is a sandbox"); its host then power-cycles it as a real host
would be: SIGTERM, the simulated bootloader (``signpost boot``) on its disk image, a new daemon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.daemon import Daemon
from tests.tufserver import http_server
from tests.updates.conftest import ARCH, VARIANT, run_updata, write_host_root
from tests.updates.simhost import DISK_SIZE, Sim
from updates.partitions import create_os_disk

ASKED = "skipped: the root is a sandbox"  # the daemon's reboot event, in its log
DEFERRED = "reboot deferred: waiting for a reboot slot"  # refused: every slot is held
RELEASED = "reboot slot released"  # RebootSlots, once the new boot passed its gate
T = TypeVar("T")
# Daemons starting at once (each start is a second or two of CPU): dozens at a time on a few
# shared cores starve each other past any readiness timeout.
STARTING = threading.BoundedSemaphore(4)


@dataclass
class Timeline:
    """When (monotonic seconds) the harness saw each step of one host's update."""

    asked: float | None = None  # the daemon asked for its reboot (it holds a slot)
    up: float | None = None  # the rebooted daemon answers
    released: float | None = None  # ...and gave its slot back
    waited: bool = False  # it was refused a slot (and asked again) before it got one


@dataclass
class FleetHost:
    name: str
    sim: Sim
    user_data: Path
    daemon: Daemon | None = None
    timeline: Timeline = field(default_factory=Timeline)

    def boot(self) -> None:
        """The bootloader picks a set; a new daemon starts (and answers)."""
        assert self.sim.reboot() in ("A", "B")
        with STARTING:
            self.daemon = Daemon(self.sim.state, [
                "--variant", VARIANT, "--disk", str(self.sim.disk), "--root", str(self.sim.root),
                "--interval", "3600", "--user-data", str(self.user_data)], wait=False)
            self.daemon.wait_ready(timeout=300)

    def log_has(self, text: str) -> bool:
        """Whether this boot's daemon logged ``text`` (each daemon start rewrites the log)."""
        path = self.sim.state.parent / f"{self.sim.state.name}.log"
        try:
            return text in path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    def power_cycle(self, stop_timeout: float = 90.0) -> None:
        """SIGTERM, then SIGKILL what has not stopped after ``stop_timeout`` (systemd's
        TimeoutStopSec does the same on a real reboot), the bootloader, a new daemon."""
        assert self.daemon is not None
        self.daemon.process.send_signal(signal.SIGTERM)
        try:
            self.daemon.process.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            self.daemon.process.kill()
            self.daemon.process.wait()
        self.daemon.log.close()
        self.boot()

    def kill(self) -> None:
        """The host dies: SIGKILL, no clean shutdown, nothing given back."""
        assert self.daemon is not None
        os.kill(self.daemon.process.pid, signal.SIGKILL)
        self.daemon.process.wait()
        self.daemon.log.close()

    def follow(self, deadline: float, interval: float = 0.2) -> None:
        """Play the machine until this host rebooted into its update and gave its slot back."""
        while self.timeline.asked is None:
            if self.log_has(ASKED):
                self.timeline.asked = time.monotonic()
                self.timeline.waited = self.log_has(DEFERRED)  # the reboot rewrites the log
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} never asked to reboot:\n{self._tail()}")
            else:
                time.sleep(interval)
        self.power_cycle()
        self.timeline.up = time.monotonic()
        while not self.log_has(RELEASED):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} kept its slot:\n{self._tail()}")
            time.sleep(interval)
        self.timeline.released = time.monotonic()

    def _tail(self) -> str:
        return self.daemon.logs()[-3000:] if self.daemon else "(no daemon)"


def at_once(action: Callable[[T], None], items: Iterable[T]) -> None:
    """``action`` on every item at once, a thread each; the first error is raised once all
    are done."""
    errors: list[BaseException] = []

    def run(item: T) -> None:
        try:
            action(item)
        except BaseException as error:  # noqa: BLE001 - raised below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class Fleet:
    """``count`` hosts on 1.0.0 (set A), a TUF repository, a reboot lock at ``lock_url``."""

    def __init__(self, base: Path, count: int, lock_url: str, *, automatic: bool = True,
                 retry_interval: float = 2.0, prefix: str = "host", group: str = "default"):
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.repo = base / "repo"
        if not self.repo.exists():
            run_updata("create", self.repo)
            (base / "work").mkdir(exist_ok=True)
            run_updata("init", base / "work" / "manifest.json")
        self.server, self._http = http_server(self.repo)
        trusted = (self.repo / "metadata" / "1.root.json").read_bytes()
        url = self.server.base_url
        self.hosts: list[FleetHost] = []
        for n in range(count):
            name = f"{prefix}-{n}"
            disk = base / f"{name}.img"
            create_os_disk(disk, DISK_SIZE, version="1.0.0", variant=VARIANT, arch=ARCH)
            root = write_host_root(base / f"{name}-root", trusted, url, seed=n,
                                   ignore_waves=True)
            sim = Sim(base, self.repo, self.server, trusted, disk, root, base / name)
            user_data = base / f"{name}.toml"
            user_data.write_text(f"""
[settings.updates]
metadata-base-url = "{url}/metadata/"
targets-base-url = "{url}/targets/"
ignore-waves = true
automatic = {str(automatic).lower()}
automatic-reboot = true
[settings.coordination]
node-id = "{name}"
[settings.coordination.reboot-lock]
url = "{lock_url}"
group = "{group}"
retry-interval = {retry_interval}
""")
            self.hosts.append(FleetHost(name, sim, user_data))

    def publish(self, version: str) -> None:
        """A signed release of ``version`` in the fleet's repository (images and manifest)."""
        self.hosts[0].sim.publish(version)

    def each(self, action: Callable[[FleetHost], None]) -> None:
        at_once(action, self.hosts)

    def start_updates(self) -> None:
        """The operator turns automatic updates on, on every host (an API commit each)."""
        def turn_on(host: FleetHost) -> None:
            assert host.daemon is not None
            host.daemon.ok("PATCH", "/settings", {"updates": {"automatic": True}})
            host.daemon.ok("POST", "/tx/commit_and_apply")

        self.each(turn_on)

    def stop(self) -> None:
        for host in self.hosts:
            if host.daemon is not None:
                host.daemon.stop()
        self._http.shutdown()
        self._http.server_close()
