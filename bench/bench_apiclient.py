"""``apiclient`` starts fast: ``apiclient get settings.motd`` against ``python3 -c pass``.

Starts a daemon (variant aws-dev, the example user data) in a temporary state directory, then
times whole processes, interleaved, in the same run: the baseline interpreter doing nothing and
the client in the ways it is launched (the console script when installed, ``python -m`` and the
toolbox zipapp host containers get), and ``apply`` of a document it refuses (start-up plus the
user-data parser it shares, no request). Prints the medians and the ratios (target <= 1.3 for
``get``, issue 18).

Bytecode is written (``PYTHONDONTWRITEBYTECODE`` is dropped from the children's environment), as
on an installed host: otherwise every run would compile the client and the baseline would not.

    .venv/bin/python bench/bench_apiclient.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon import Daemon  # noqa: E402

TARGET = 1.3  # issue 18: `apiclient get settings.motd`
APPLY_TARGET = 3.0  # `apply` also imports and runs the user-data parser


CPU: dict[str, list[float]] = {}  # command label -> the child's CPU seconds (user + system)


def timed(command: list[str], env: dict[str, str], expect: int = 0, label: str = "") -> float:
    """Wall seconds of one run; its CPU seconds go to ``CPU[label]``: on a loaded machine the
    wall clock mostly measures the wait for a core, CPU time what the process itself costs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL if expect else None)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != expect:
        sys.exit(f"{' '.join(command)} exited {result.returncode}, not {expect}")
    if label:
        CPU.setdefault(label, []).append(
            after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return elapsed


def settle(daemon: Daemon, timeout: float = 60.0) -> None:
    """Wait out the daemon's boot pass: a pass running in its worker thread holds the GIL and
    slows its answers, which would be timed as the client's start-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = daemon.ok("GET", "/status")
        if status.get("state") == "Ready" and status.get("last_receipt"):
            time.sleep(1.0)  # the pass's own file-watch echo
            return
        time.sleep(0.1)
    sys.exit(f"the daemon did not settle within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    python = sys.executable
    forms: dict[str, list[str]] = {}
    script = shutil.which("apiclient", path=str(Path(python).parent))
    if script:
        forms["apiclient (console script)"] = [script]
    forms["python -m reconciler.apiclient"] = [python, "-m", "reconciler.apiclient"]
    from reconciler import toolbox

    zipapp = Path(tempfile.mkdtemp(prefix="bench-apiclient-")) / "tools.pyz"
    zipapp.write_bytes(toolbox.zipapp_bytes())  # as host containers run it
    forms["python tools.pyz (the zipapp)"] = [python, str(zipapp)]

    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        daemon = Daemon(state_dir, ["--variant", "aws-dev",
                                    "--user-data", "examples/user-data/aws-dev.toml"])
        env = {**os.environ, "APICLIENT_SOCKET": str(daemon.socket)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        try:
            settle(daemon)
            # `apply` parses with hostcore.documents (the user-data parser) before any request:
            # a document it refuses times start-up + that parser's imports + parsing alone.
            document = Path(tmp) / "refused.toml"
            document.write_text('[settings]\nmotd = "x"\n[settings.ntp]\nwhen = 1979-05-27\n')
            apply = [python, "-m", "reconciler.apiclient", "apply", str(document)]
            baseline: list[float] = []
            times: dict[str, list[float]] = {name: [] for name in forms}
            applies: list[float] = []
            for command in forms.values():  # warm the page cache and .pyc files
                timed([*command, "get", "settings.motd"], env)
            timed(apply, env, expect=1)
            for _ in range(args.runs):
                baseline.append(timed([python, "-c", "pass"], env, label="baseline"))
                for name, command in forms.items():
                    times[name].append(timed([*command, "get", "settings.motd"], env,
                                             label=name))
                applies.append(timed(apply, env, expect=1))
        finally:
            daemon.stop()

    base = statistics.median(baseline)
    print(f"interpreter: {python} ({sys.version.split()[0]}), {args.runs} runs each, medians")
    print(f"{'python -c pass (baseline, same interpreter)':<52} {base * 1000:7.1f} ms")
    for name, values in times.items():
        median = statistics.median(values)
        ratio = median / base
        verdict = "ok" if ratio <= TARGET else "OVER TARGET"
        label = f"{name} get settings.motd"
        print(
            f"{label:<52} {median * 1000:7.1f} ms  ratio {ratio:4.2f} (target <= {TARGET:g}: "
            f"{verdict})"
        )
    cpu_base = statistics.median(CPU["baseline"])
    print(f"CPU time (user + system), medians: {'python -c pass':<34} {cpu_base * 1000:7.1f} ms")
    for name in forms:
        cpu = statistics.median(CPU[name])
        print(f"{'':35}{name:<34} {cpu * 1000:7.1f} ms  ratio {cpu / cpu_base:4.2f}")
    median = statistics.median(applies)
    ratio = median / base
    verdict = "ok" if ratio <= APPLY_TARGET else "OVER TARGET"
    label = "python -m reconciler.apiclient apply (parse, refused)"
    print(f"{label:<52} {median * 1000:7.1f} ms  ratio {ratio:4.2f} (target <= {APPLY_TARGET:g}: "
          f"{verdict})")


if __name__ == "__main__":
    main()
