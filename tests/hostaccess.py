"""Helpers of the host-access tests: the project's images, SSH keys and an SSH client."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from pathlib import Path

from reconciler.hostimages.build import build_all, reference
from tests.images import require_podman


def require_images() -> None:
    """``reconciler images build`` (cached: a no-op when up to date); fails without its tools."""
    require_podman()
    for tool in ("mmdebstrap", "ssh", "ssh-keygen"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            raise AssertionError(f"missing {tool}: run `make test` (it installs the system deps)")
    build_all()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ssh_key(folder: Path) -> tuple[Path, str]:
    key = folder / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
    return key, key.with_suffix(".pub").read_text().strip()


def admin_user_data(public_key: str, port: int, **extra) -> str:
    document = {"ssh": {"authorized-keys": [public_key], "port": port}, **extra}
    return base64.b64encode(json.dumps(document).encode()).decode()


def admin_entry(user_data: str, enabled: bool = True) -> dict:
    return {"source": reference("admin"), "enabled": enabled, "superpowered": True,
            "user-data": user_data}


def ssh(key: Path, port: int, *command: str, known_hosts: Path | None = None,
        user: str = "ec2-user", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    checking = (["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"]
                if known_hosts and known_hosts.exists() else
                ["-o", "StrictHostKeyChecking=no", "-o",
                 f"UserKnownHostsFile={known_hosts or os.devnull}"])
    argv = ["ssh", "-p", str(port), "-i", str(key), "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            *checking, f"{user}@127.0.0.1", *command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


class BlackHoleRegistry:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a registry whose
    pulls hang (until the client's own timeouts), the worst case for a reconcile pass."""

    def __init__(self) -> None:
        from tests.faultutil import AcceptLoop, tcp_listener

        self._loop = AcceptLoop(tcp_listener(16))
        self.port = self._loop.sock.getsockname()[1]
        self.accepted = self._loop.held

    @property
    def source(self) -> str:
        return f"127.0.0.1:{self.port}/never/answers:1"

    def close(self) -> None:
        self._loop.close()
