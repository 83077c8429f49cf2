"""A real etcd (Debian's etcd-server) on loopback ports, for the fleet tests.

It fails, never skips, when etcd is missing: ``make test`` installs it
(scripts/install-system-deps.sh).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


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
