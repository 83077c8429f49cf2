"""A real etcd (Debian's etcd-server) on loopback ports, for the fleet tests.

It fails, never skips, when etcd is missing: ``make test`` installs it
(scripts/install-system-deps.sh).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Etcd:
    def __init__(self, data_dir: Path):
        binary = shutil.which("etcd")
        assert binary, "etcd is not installed (Debian: etcd-server; make test installs it)"
        client, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{client}"
        self.log = open(data_dir.parent / f"{data_dir.name}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, "--name", "test", "--data-dir", str(data_dir),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"test=http://127.0.0.1:{peer}"],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    if b'"health":"true"' in answer.read():
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (data_dir.parent / f"{data_dir.name}.log").read_text()
                raise RuntimeError(f"etcd did not start: {log}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


class FleetLockServer:
    """``fleetlock serve`` as a process on a free port, on ``etcd``."""

    def __init__(self, etcd: Etcd, log_path: Path, *flags: str):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}/"
        self.log = open(log_path, "wb")  # noqa: SIM115
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler.fleet.server", "serve", "--etcd", etcd.url,
             "--listen", f"127.0.0.1:{port}", *flags], cwd=REPO, stdout=self.log,
            stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.base + "v1/holders", timeout=2):
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fleetlock did not start: {log_path.read_text()}")
            time.sleep(0.1)

    def holders(self, group: str = "default") -> list[str]:
        import json

        with urllib.request.urlopen(f"{self.base}v1/holders?group={group}", timeout=10) as r:
            return [h["id"] for h in json.load(r)["holders"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


def history(url: str, prefix: str) -> list[tuple[int, dict[str, tuple[bytes, int]]]]:
    """Every revision of the keys under ``prefix``, oldest first: ``(revision, {key: (value,
    mod_revision)})``. etcd keeps every revision until compacted (these tests never compact),
    so a test can check what held at each moment after the fact."""
    import etcd3gw

    from reconciler.fleet.etcd import EtcdSlots

    client = EtcdSlots(url).client
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    head = int(client.status()["header"]["revision"])
    states = []
    for revision in range(1, head + 1):
        try:
            found = client.get(prefix, metadata=True, range_end=end, revision=revision)
        except etcd3gw.exceptions.Etcd3Exception as error:  # compacted: never in these tests
            raise AssertionError(f"etcd revision {revision} is gone: {error}") from None
        states.append((revision, {meta["key"].decode(): (value, int(meta["mod_revision"]))
                                  for value, meta in found}))
    return states
