"""Fleet simulation: 50 daemons on one machine (separate state dirs).

``--mode git``: the fleet follows one git repository. A settings change is committed once to the
fleet's common layer; the figure is the time until all 50 hosts have rendered it (each polls on
a 2 s interval with 10% jitter). Baseline in the same run: one daemon following the same
repository the same way. Three changes each; medians.

``--mode reboots``: the fleet updates its OS through reboot slots (issue 16). Each host has its
own A/B disk image and daemon (``tests/fleet.py``); one TUF repository on 127.0.0.1 carries
1.1.0; ``fleetlock serve`` on a real etcd gives out ``--slots`` slots. The operator turns
``settings.updates.automatic`` on everywhere at once (an API commit per host); each host then
refreshes, prepares and activates by itself, takes a slot, reboots (its machine is
power-cycled by the harness), passes its boot health gate and gives the slot back. The figure
is the time until every host is back on 1.1.0 with its slot given back, against the floor
ceil(hosts / slots) x (one host's update-and-reboot time, the same flow on a fleet of one,
measured first in the same run); target ratio <= 1.5.

``--mode all`` (the default, what ``make bench`` runs) does both.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import Daemon  # noqa: E402
from tests.etcd import Etcd, FleetLockServer  # noqa: E402
from tests.fleet import Fleet, at_once  # noqa: E402
from tests.gitutil import git  # noqa: E402

INTERVAL = 2


def start_fleet(base: Path, bare: Path, count: int, prefix: str) -> list[Daemon]:
    daemons: list[Daemon | None] = [None] * count

    def start(n: int) -> None:
        user_data = base / f"{prefix}-{n}.toml"
        user_data.write_text(f'[settings.gitops]\nurl = "file://{bare}"\nref = "main"\n'
                             f'path = "fleet"\nhost-id = "{prefix}-{n}"\n'
                             f"interval = {INTERVAL}\n")
        daemons[n] = Daemon(base / f"{prefix}-{n}", ["--user-data", str(user_data)])

    at_once(start, range(count))
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


def git_mode(hosts: int) -> None:
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
        fleet = start_fleet(base, bare, hosts, "host")
        boot = time.monotonic() - started
        try:
            rounds = [propagation(fleet, work, f"fleet change {n}") for n in range(3)]
        finally:
            for daemon in fleet:
                daemon.stop()
    everyone = statistics.median(r[-1] for r in rounds)
    median_host = statistics.median(statistics.median(r) for r in rounds)
    baseline = statistics.median(solo)
    print(f"fleet: {hosts} daemons on one machine, one git repository, "
          f"{INTERVAL} s interval (started in {boot:.1f} s)")
    print(f"one daemon (baseline): change applied after         {baseline * 1000:8.0f} ms median")
    print(f"{hosts} daemons: half of them applied it after       "
          f"{median_host * 1000:8.0f} ms median")
    print(f"{hosts} daemons: all of them applied it after        "
          f"{everyone * 1000:8.0f} ms median")
    print(f"ratio all {hosts} / one:                         "
          f"       {everyone / baseline:8.1f}")


def update_through_slots(fleet: Fleet, timeout: float = 1800) -> tuple[float, list[float]]:
    """Boot the fleet on 1.0.0, turn automatic updates on everywhere, play the machines until
    every host rebooted into 1.1.0 and gave its slot back: (seconds from the commit to the
    last slot given back, each host's slot time from its reboot request to its release)."""
    fleet.each(lambda host: host.boot())
    # each boot's gate done (the fleet is idle) before the clock starts
    fleet.each(lambda host: _wait(lambda: host.daemon.ok("GET", "/status")["updates"]["boot"]))
    started = time.monotonic()
    fleet.start_updates()
    deadline = started + timeout
    fleet.each(lambda host: host.follow(deadline))
    last = max(h.timeline.released for h in fleet.hosts) - started
    for host in fleet.hosts:
        version = host.daemon.ok("GET", "/os")["version_id"]
        assert version == "1.1.0", f"{host.name} is on {version}"
    return last, [h.timeline.released - h.timeline.asked for h in fleet.hosts]


def _wait(check, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the fleet did not settle after its boot")
        time.sleep(0.2)


def reboots_mode(hosts: int, slots: int) -> None:
    print(f"reboot coordination: {hosts} daemons, {slots} slots, etcd + fleetlock serve, "
          "one TUF repository, 1.0.0 -> 1.1.0", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        etcd = Etcd(base / "etcd")
        # a lease far longer than any reboot here: no slot is lost to expiry in the bench
        lock = FleetLockServer(etcd, base / "fleetlock.log", "--slots", str(slots),
                               "--group", "solo=1", "--lease-ttl", "1800")
        try:
            solo = Fleet(base / "solo", 1, lock.base, automatic=False, prefix="solo",
                         group="solo")
            try:
                solo.publish("1.1.0")
                one, (one_slot,) = update_through_slots(solo)
            finally:
                solo.stop()
            print(f"one host (baseline): update and reboot     {one:8.1f} s "
                  f"(of which holding its slot {one_slot:.1f} s)", flush=True)
            fleet = Fleet(base / "fleet", hosts, lock.base, automatic=False)
            try:
                fleet.publish("1.1.0")
                everyone, held = update_through_slots(fleet)
            finally:
                fleet.stop()
        finally:
            lock.stop()
            etcd.stop()
    rounds = math.ceil(hosts / slots)
    floor = rounds * one
    verdict = "ok" if everyone / floor <= 1.5 else "over"
    print(f"floor ceil({hosts}/{slots}) x one host:            {floor:8.1f} s")
    print(f"{hosts} daemons: all on 1.1.0, slots back     {everyone:8.1f} s")
    print(f"ratio fleet / floor:                       {everyone / floor:8.2f} "
          f"(target <= 1.5: {verdict})")
    print(f"slot held per host in the fleet:           {statistics.median(held):8.1f} s median, "
          f"{max(held):.1f} s max")
    print(f"stricter floor ceil({hosts}/{slots}) x one slot hold: {rounds * one_slot:8.1f} s, "
          f"ratio {everyone / (rounds * one_slot):.2f} (staging overlaps; reboots cannot)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=50, help="daemons (default: %(default)s)")
    parser.add_argument("--mode", choices=("git", "reboots", "all"), default="all",
                        help="what the fleet does (default: %(default)s)")
    parser.add_argument("--slots", type=int, default=2,
                        help="reboot slots, --mode reboots (default: %(default)s)")
    args = parser.parse_args()
    if args.mode in ("git", "all"):
        git_mode(args.hosts)
    if args.mode in ("reboots", "all"):
        reboots_mode(args.hosts, args.slots)


if __name__ == "__main__":
    main()
