"""Fleet simulation: 50 daemons on one machine (separate state dirs) follow one git repository.

A settings change is committed once to the fleet's common layer; the figure is the time until
all 50 hosts have rendered it (each polls on a 2 s interval with 10% jitter). Baseline in the
same run: one daemon following the same repository the same way. Three changes each; medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import Daemon  # noqa: E402
from tests.gitutil import git  # noqa: E402

INTERVAL = 2


def start_fleet(base: Path, bare: Path, count: int, prefix: str) -> list[Daemon]:
    daemons: list[Daemon | None] = [None] * count
    errors: list[BaseException] = []

    def start(n: int) -> None:
        user_data = base / f"{prefix}-{n}.toml"
        user_data.write_text(f'[settings.gitops]\nurl = "file://{bare}"\nref = "main"\n'
                             f'path = "fleet"\nhost-id = "{prefix}-{n}"\n'
                             f"interval = {INTERVAL}\n")
        try:
            daemons[n] = Daemon(base / f"{prefix}-{n}", ["--user-data", str(user_data)])
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [d for d in daemons if d is not None]


def propagation(daemons: list[Daemon], work: Path, text: str) -> list[float]:
    (work / "fleet/common.toml").write_text(f'[settings]\nmotd = "{text}"\n')
    git("commit", "-q", "-am", text, cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    start = time.monotonic()
    times: dict[int, float] = {}
    while len(times) < len(daemons):
        for n, daemon in enumerate(daemons):
            if n not in times:
                motd = daemon.root / "etc/motd"
                if motd.exists() and motd.read_text().startswith(text):
                    times[n] = time.monotonic() - start
        if time.monotonic() - start > 120:
            raise TimeoutError(f"only {len(times)} of {len(daemons)} hosts applied {text!r}")
        time.sleep(0.01)
    return sorted(times.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        bare, work = base / "fleet.git", base / "work"
        git("init", "-q", "--bare", "-b", "main", str(bare), cwd=base)
        git("init", "-q", "-b", "main", str(work), cwd=base)
        (work / "fleet").mkdir()
        (work / "fleet/common.toml").write_text('[settings]\nmotd = "fleet v0"\n')
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "v0", cwd=work)
        git("remote", "add", "origin", str(bare), cwd=work)
        git("push", "-q", "origin", "main", cwd=work)

        single = start_fleet(base, bare, 1, "solo")
        try:
            solo = [propagation(single, work, f"solo change {n}")[-1] for n in range(3)]
        finally:
            for daemon in single:
                daemon.stop()
        started = time.monotonic()
        fleet = start_fleet(base, bare, args.hosts, "host")
        boot = time.monotonic() - started
        try:
            rounds = [propagation(fleet, work, f"fleet change {n}") for n in range(3)]
        finally:
            for daemon in fleet:
                daemon.stop()
    everyone = statistics.median(r[-1] for r in rounds)
    median_host = statistics.median(statistics.median(r) for r in rounds)
    baseline = statistics.median(solo)
    print(f"fleet: {args.hosts} daemons on one machine, one git repository, "
          f"{INTERVAL} s interval (started in {boot:.1f} s)")
    print(f"one daemon (baseline): change applied after         {baseline * 1000:8.0f} ms median")
    print(f"{args.hosts} daemons: half of them applied it after       "
          f"{median_host * 1000:8.0f} ms median")
    print(f"{args.hosts} daemons: all of them applied it after        "
          f"{everyone * 1000:8.0f} ms median")
    print(f"ratio all {args.hosts} / one:                         "
          f"       {everyone / baseline:8.1f}")


if __name__ == "__main__":
    main()
