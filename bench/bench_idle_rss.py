"""The idle daemon's memory (RSS), against baselines measured in the same run.

Starts ``reconciler serve`` unconfigured beyond the example user data (variant aws-dev: no git
source, no ``--disk``, no host container enabled), waits out its boot pass, lets it idle, and
reads its VmRSS; then makes ``--commits`` commits through the API (PATCH + commit) and reads it
again. Baselines, same interpreter, same run: ``python -c pass`` and a process that only
imported ``aiohttp.web`` (the server the daemon is built on). Also lists the third-party
top-level packages the idle daemon imported (``PYTHONPROFILEIMPORTTIME``), to show what stays
out until configured (git, tuf, the container engine...).

Targets (issue 18): idle <= 45 MiB, <= 60 MiB after 10,000 commits.

    .venv/bin/python bench/bench_idle_rss.py [--idle 5] [--commits 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon import Daemon, UnixHTTPConnection  # noqa: E402
from tests.load import rss_kib  # noqa: E402

IDLE_TARGET_MIB = 45.0
COMMITS_TARGET_MIB = 60.0
FIRST_PARTY = {"reconciler", "renderers", "updates", "hostcore"}
# What every daemon loads whatever it is configured for: the API server, the schema validator,
# the template engine, the log, the store, the metrics and the file watch (rich kept out as
# ``reconciler serve`` keeps it out). The daemon's own share is its figure minus this one.
LIBRARIES = ("import sys; sys.modules['rich'] = None\n"
             "import aiohttp.web, jsonschema, jinja2, structlog, sqlite3, prometheus_client, "
             "watchdog.observers")


def baseline_mib(code: str) -> float:
    """RSS of a process that ran ``code`` and then waits."""
    script = (f"{code}\nimport sys\nsys.stdout.write(open('/proc/self/status').read())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def settle(daemon: Daemon, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = daemon.ok("GET", "/status")
        if status.get("last_receipt"):
            return
        time.sleep(0.2)
    sys.exit(f"the daemon did not finish its boot pass within {timeout:.0f} s")


def commits(daemon: Daemon, count: int) -> None:
    connection = UnixHTTPConnection(daemon.socket)
    try:
        for n in range(count):
            body = json.dumps({"motd": f"commit {n}"})
            connection.request("PATCH", "/settings?tx=rss", body=body,
                               headers={"Content-Type": "application/json"})
            connection.getresponse().read()
            connection.request("POST", "/tx/commit?tx=rss")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                sys.exit(f"commit {n}: status {response.status}")
    finally:
        connection.close()


def third_party(log: str) -> list[str]:
    """Installed third-party packages the daemon imported (importtime also lists optional
    imports that failed, such as aiohttp's brotli: those are left out, and so is rich, which
    ``serve`` keeps out on purpose)."""
    from importlib.util import find_spec

    names = set()
    for line in log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip().split(".")[0]
            if name and not name.startswith("_") and name not in sys.stdlib_module_names:
                names.add(name)
    return sorted(n for n in names - FIRST_PARTY - {"rich"} if n.isidentifier() and find_spec(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before reading")
    parser.add_argument("--commits", type=int, default=10_000, help="commits, then read again")
    args = parser.parse_args()
    # A host's install has the bytecode compiled (pip does it); an editable tree run with
    # PYTHONDONTWRITEBYTECODE would compile every changed module at each start instead.
    subprocess.run([sys.executable, "-m", "compileall", "-q", *FIRST_PARTY], cwd=REPO,
                   check=True, stdout=subprocess.DEVNULL)

    python_mib = baseline_mib("pass")
    aiohttp_mib = baseline_mib("import aiohttp.web")
    libraries_mib = baseline_mib(LIBRARIES)
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp) / "state", [
            "--variant", "aws-dev", "--user-data", str(REPO / "examples/user-data/aws-dev.toml"),
        ], env={"PYTHONPROFILEIMPORTTIME": "1"})
        try:
            settle(daemon)
            time.sleep(args.idle)
            idle_mib = rss_kib(daemon.process.pid) / 1024
            imported = third_party(daemon.logs())
            start = time.monotonic()
            commits(daemon, args.commits)
            took = time.monotonic() - start
            after_mib = rss_kib(daemon.process.pid) / 1024
        finally:
            daemon.stop()
    verdict = "ok" if idle_mib <= IDLE_TARGET_MIB else "OVER TARGET"
    print(f"interpreter: {sys.executable} ({sys.version.split()[0]})")
    print(f"python -c pass (baseline):                 {python_mib:6.1f} MiB")
    print(f"python -c 'import aiohttp.web' (baseline): {aiohttp_mib:6.1f} MiB")
    print(f"its libraries alone (aiohttp.web, jsonschema, jinja2, structlog, sqlite3, "
          f"prometheus_client, watchdog): {libraries_mib:6.1f} MiB")
    print(f"daemon idle ({args.idle:g} s after its boot pass):     {idle_mib:6.1f} MiB  "
          f"(+{idle_mib - libraries_mib:.1f} over its libraries; target <= {IDLE_TARGET_MIB:g}: "
          f"{verdict})")
    verdict = "ok" if after_mib <= COMMITS_TARGET_MIB else "OVER TARGET"
    print(f"daemon after {args.commits:,} commits ({took:.0f} s):    {after_mib:6.1f} MiB  "
          f"(target <= {COMMITS_TARGET_MIB:g}: {verdict})")
    print(f"third-party packages the idle daemon imported: {', '.join(imported)}")


if __name__ == "__main__":
    main()
