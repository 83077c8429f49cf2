"""The daemon on the real test host (systemd, `--root /`): an NTP change until chronyd uses it.

1. Time from `apiclient set ntp.time-servers=[...]` until chronyd runs with the new configuration
   (a new main PID, and `chronyc -n sources` lists the new servers), against `systemctl restart
   chronyd` alone (until `chronyc -n sources` answers) in the same run, interleaved; prints the
   medians and their ratio (target <= 1.5).
2. The daemon's RSS and CPU time (user + system) over 60 s idle, with chronyd's beside them.

Both are measured inside the host (a timing script run by the host's own Python), so podman's
`exec` latency is in neither figure. The host image is `tests/realhost/build.py`'s (built on the
first run, cached after). Run: `.venv/bin/python bench/bench_realhost.py`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.realhost.machine import Machine  # noqa: E402

ROUNDS = 7
IDLE_SECONDS = 60
PYTHON = "/opt/host-reconciler/bin/python"  # the host's venv: the timing script is stdlib only

INNER = r'''
import json, os, subprocess, sys, time

UNIT = "chrony.service"

def main_pid():
    return subprocess.run(["systemctl", "show", "-P", "MainPID", UNIT], capture_output=True,
                          text=True, check=True).stdout.strip()

def sources():
    done = subprocess.run(["chronyc", "-n", "sources"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""

def wait(condition, limit=60.0):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("condition not met in time")
        time.sleep(0.005)

def ours(i):
    servers = [f"127.0.{i}.41", f"127.0.{i}.42"]
    before = main_pid()
    start = time.perf_counter()
    subprocess.run(["apiclient", "set", "ntp.time-servers=" + json.dumps(servers)], check=True,
                   capture_output=True)
    wait(lambda: main_pid() not in ("0", before) and all(s in sources() for s in servers))
    return time.perf_counter() - start

def theirs():
    before = main_pid()
    start = time.perf_counter()
    subprocess.run(["systemctl", "restart", "chronyd"], check=True, capture_output=True)
    wait(lambda: main_pid() not in ("0", before) and "^?" in sources())
    return time.perf_counter() - start

def cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return cpu, rss

if sys.argv[1] == "change":
    a, b = [], []
    for i in range(int(sys.argv[2])):
        b.append(theirs())
        a.append(ours(i + 1))
    print(json.dumps({"ours": a, "theirs": b}))
else:
    pids = {"reconciler": sys.argv[3], "chronyd": main_pid()}
    start = {name: cpu_rss(pid) for name, pid in pids.items()}
    time.sleep(float(sys.argv[2]))
    end = {name: cpu_rss(pid) for name, pid in pids.items()}
    print(json.dumps({name: {"cpu_s": end[name][0] - start[name][0], "rss_kib": end[name][1]}
                      for name in pids}))
'''


def main() -> int:
    machine = Machine.boot()
    try:
        machine.settle()
        machine.write("/tmp/bench_realhost_inner.py", INNER)
        change = json.loads(machine.out(PYTHON, "/tmp/bench_realhost_inner.py", "change",
                                        str(ROUNDS)))
        ours = statistics.median(change["ours"]) * 1000
        theirs = statistics.median(change["theirs"]) * 1000
        ratio = ours / theirs
        verdict = "meets" if ratio <= 1.5 else "MISSES"
        print(f"apiclient set ntp.time-servers until chronyd runs with it: {ours:.0f} ms median "
              f"of {ROUNDS} (min {min(change['ours']) * 1000:.0f}, "
              f"max {max(change['ours']) * 1000:.0f})")
        print(f"baseline `systemctl restart chronyd` until chronyc answers: {theirs:.0f} ms "
              f"median (min {min(change['theirs']) * 1000:.0f}, "
              f"max {max(change['theirs']) * 1000:.0f})")
        print(f"ratio {ratio:.2f} ({verdict} the target <= 1.5)")

        machine.settle()
        pid = machine.unit("reconciler.service", "MainPID")["MainPID"]
        idle = json.loads(machine.out(PYTHON, "/tmp/bench_realhost_inner.py", "idle",
                                      str(IDLE_SECONDS), pid))
        ours_idle, chrony = idle["reconciler"], idle["chronyd"]
        print(f"daemon idle {IDLE_SECONDS} s on the host: RSS {ours_idle['rss_kib'] / 1024:.1f} "
              f"MiB, CPU {ours_idle['cpu_s'] * 1000:.0f} ms "
              f"({ours_idle['cpu_s'] / IDLE_SECONDS * 100:.2f} % of a core)")
        print(f"chronyd, same {IDLE_SECONDS} s: RSS {chrony['rss_kib'] / 1024:.1f} MiB, "
              f"CPU {chrony['cpu_s'] * 1000:.0f} ms")
        return 0 if ratio <= 1.5 else 1
    finally:
        machine.remove()


if __name__ == "__main__":
    sys.exit(main())
