"""A source that cannot be pulled does not delay other commits: motd commit with and without it.

On one real daemon (real podman), the median time of ``POST /tx/commit_and_apply?wait=true`` for
a commit that only changes motd: with no host container at all (no podman call in the pass),
with one host container running (the usual host, the baseline: each pass lists the containers),
then with a second one whose source is a black-hole registry (accepts, never answers: its pull
hangs), then with one whose registry refuses connections (its pull fails and backs off). Prints
the medians and their ratios to the baseline (target <= 2). Needs podman, runc and
busybox-static. Run: ``.venv/bin/python bench/bench_pulls.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon import Daemon, eventually  # noqa: E402
from tests.hostaccess import BlackHoleRegistry  # noqa: E402
from tests.images import build_image, require_podman, reset_storage  # noqa: E402

ROUNDS = 15


def motd_commits(daemon: Daemon, label: str) -> float:
    times = []
    for i in range(ROUNDS):
        daemon.ok("PATCH", "/settings", {"motd": f"{label} {i}"})
        start = time.perf_counter()
        daemon.ok("POST", "/tx/commit_and_apply?wait=true")
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def state(daemon: Daemon, name: str) -> str:
    status = daemon.ok("GET", "/status")["containers"]["host-containers"]
    return status.get(name, {}).get("state", "")


def main() -> int:
    require_podman()
    registry = BlackHoleRegistry()
    with tempfile.TemporaryDirectory(prefix="bench-pulls-") as tmp:
        source = build_image(Path(tmp) / "images", "busybox", "v1")
        reset_storage(Path(tmp) / "images" / "builder")
        daemon = Daemon(Path(tmp) / "state", ["--variant", "aws-dev"])
        try:
            empty = motd_commits(daemon, "empty")
            daemon.ok("PATCH", "/settings", {"host-containers": {
                "fine": {"source": source, "enabled": True}}})
            daemon.ok("POST", "/tx/commit_and_apply?wait=true")
            baseline = motd_commits(daemon, "baseline")
            daemon.ok("PATCH", "/settings", {"host-containers": {
                "stuck": {"source": registry.source, "enabled": True}}})
            daemon.ok("POST", "/tx/commit_and_apply?wait=true")
            eventually(lambda: registry.accepted, timeout=30)
            hanging = motd_commits(daemon, "hanging")
            hung = state(daemon, "stuck")
            daemon.ok("PATCH", "/settings", {"host-containers": {
                "stuck": None, "refused": {"source": "127.0.0.1:1/none:1", "enabled": True}}})
            daemon.ok("POST", "/tx/commit_and_apply?wait=true")
            eventually(lambda: state(daemon, "refused") == "failed", timeout=120)
            failing = motd_commits(daemon, "failing")
        finally:
            daemon.stop()
            reset_storage(Path(tmp) / "state" / "containers")
            registry.close()
    print(f"motd commit, no host container:              {empty:8.1f} ms median")
    print(f"motd commit, one running (baseline):         {baseline:8.1f} ms median")
    print(f"motd commit, + one pull hanging ({hung}):   {hanging:8.1f} ms median"
          f"  ratio {hanging / baseline:.2f} (target <= 2)")
    print(f"motd commit, + one pull failing, backing off: {failing:7.1f} ms median"
          f"  ratio {failing / baseline:.2f} (target <= 2)")
    return 0 if max(hanging, failing) <= 2 * baseline else 1


if __name__ == "__main__":
    sys.exit(main())
