"""``reconciler serve --once`` on the example user data, against ``python3 -c 'import reconciler'``.

Both are whole processes, timed in the same run (median of several); the ratio says what the
boot pipeline and one pass cost beyond starting Python.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = 7


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    baseline, once = [], []
    for n in range(RUNS):
        baseline.append(timed([sys.executable, "-c", "import reconciler"]))
        with tempfile.TemporaryDirectory() as tmp:
            once.append(timed([
                sys.executable, "-m", "reconciler.cli", "serve", "--state-dir", f"{tmp}/s{n}",
                "--user-data", "examples/user-data/aws-dev.toml", "--once",
            ]))
    b, o = statistics.median(baseline), statistics.median(once)
    print(f"python3 -c 'import reconciler' (baseline):  {b * 1000:8.1f} ms median")
    print(f"reconciler serve --once (example data):      {o * 1000:8.1f} ms median")
    print(f"ratio:                                       {o / b:8.1f}")


if __name__ == "__main__":
    main()
