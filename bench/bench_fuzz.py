"""The fuzz targets of tests/test_fuzz.py with a large budget; prints the cases run per target.

``FUZZ_EXAMPLES`` (default here 200) is the number of examples per API operation and mode; the
pure parsers get four times as many. ``make bench`` runs it with the other benchmarks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    examples = os.environ.get("FUZZ_EXAMPLES", "200")
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py"],
        cwd=REPO, env={**os.environ, "FUZZ_EXAMPLES": examples},
    )
    print(f"fuzz: FUZZ_EXAMPLES={examples}, {time.perf_counter() - started:.1f} s, "
          f"{'ok' if result.returncode == 0 else 'FAILED'}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
