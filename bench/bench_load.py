"""16 concurrent clients for 60 s of mixed reads and writes against one daemon.

Prints requests per second, p50/p99 latency, errors (target 0), lost commits (target 0), and
the daemon's memory before and after. ``--seconds`` and ``--clients`` change the budget.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import REPO, Daemon  # noqa: E402
from tests.load import run_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp) / "state", [
            "--variant", "aws-k8s", "--user-data", str(REPO / "examples/user-data/aws-k8s.toml")])
        try:
            result = run_load(daemon, args.clients, args.seconds)
        finally:
            daemon.stop()
    print(f"load: {args.clients} clients, {args.seconds:.0f} s, 70% reads / 10% status / "
          "20% PATCH+commit")
    print(f"  requests/s:    {result.rate:10.0f}")
    print(f"  latency:       p50 {result.percentile(0.5) * 1000:.2f} ms, "
          f"p99 {result.percentile(0.99) * 1000:.2f} ms")
    print(f"  errors:        {len(result.errors):10d} (target 0)")
    print(f"  lost commits:  {len(result.lost_commits):10d} (target 0)")
    print(f"  daemon RSS:    {result.rss_before_kib / 1024:.1f} MiB before, "
          f"{result.rss_after_kib / 1024:.1f} MiB after")
    if result.errors or result.lost_commits:
        print("\n".join((result.errors + result.lost_commits)[:10]))
        sys.exit(1)


if __name__ == "__main__":
    main()
