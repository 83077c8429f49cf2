"""examples/updates/README.md, run verbatim: every ```sh block, in order, in one shell."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from updates.partitions import OsDisk

REPO = Path(__file__).resolve().parents[2]
WALKTHROUGH = REPO / "examples" / "updates" / "README.md"


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_walkthrough_runs_verbatim(tmp_path: Path) -> None:
    blocks = shell_blocks(WALKTHROUGH.read_text())
    assert len(blocks) == 8
    script = "set -euo pipefail\n" + "\n".join(blocks)
    env = {**os.environ, "PORT": str(free_port()),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    demo = tmp_path / "demo"
    try:
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    finally:
        pid = demo / "server.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid.read_text()), signal.SIGTERM)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out, err = done.stdout, done.stderr
    assert "outside the published directory" in out
    assert not any((demo / "repo").rglob("*.pem"))  # no private key is served
    assert "No update available: 1.1.0 is in wave" in err and "opens at" in err
    assert "Update applied: aws-dev 1.1.0" in out
    assert "Next boot:       Set B (uses its last try)" in out
    assert "otherwise Set A (fallback)" in out
    versions = re.findall(r"^(\d+\.\d+\.\d+)$", out, flags=re.MULTILINE)
    assert versions == ["1.1.0", "1.0.0"]  # booted into the update, then rolled back
    with OsDisk(demo / "disk.img", writable=False) as d:
        assert d.active == "A" and d.running_version() == "1.0.0"
        assert (d.identity("B") or {}).get("VERSION_ID") == "1.1.0"
