"""The daemon on the real test host (systemd, `--root /`): an NTP change until chronyd uses it.

1. Time from `apiclient set ntp.time-servers=[...]` until chronyd runs with the new configuration
   (a new main PID, and `chronyc -n sources` lists the new servers), against `systemctl restart
   chronyd` alone (until `chronyc -n sources` answers) in the same run, interleaved; prints the
   medians and their ratio (target <= 1.5). Beside it, the same change sent on the API socket by
   a running process (the daemon's share), and `apiclient get` against `python3 -c pass` (the
   client's start-up share).
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
import json, os, socket, subprocess, sys, time

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

def unlimited():
    # systemd refuses a 6th start within 10 s (StartLimitBurst): clear the count, untimed.
    subprocess.run(["systemctl", "reset-failed", UNIT], check=True)

def ours(i):
    servers = [f"127.0.{i}.41", f"127.0.{i}.42"]
    unlimited()
    before = main_pid()
    start = time.perf_counter()
    subprocess.run(["apiclient", "set", "ntp.time-servers=" + json.dumps(servers)], check=True,
                   capture_output=True)
    wait(lambda: main_pid() not in ("0", before) and all(s in sources() for s in servers))
    return time.perf_counter() - start

def api(method, path, body=None):
    # The same change through the API from a process already running: no client start-up.
    c = socket.socket(socket.AF_UNIX)
    c.connect("/run/api.sock")
    data = b"" if body is None else json.dumps(body).encode()
    c.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
              .encode() + data)
    answer = b""
    while chunk := c.recv(65536):
        answer += chunk
    c.close()
    if not answer.startswith(b"HTTP/1.1 2"):
        raise SystemExit(answer[:300])

def ours_api(i):
    servers = [f"127.0.{i}.51", f"127.0.{i}.52"]
    unlimited()
    before = main_pid()
    start = time.perf_counter()
    api("PATCH", f"/settings?tx=bench{i}", {"ntp": {"time-servers": servers}})
    api("POST", f"/tx/commit_and_apply?tx=bench{i}&wait=true")
    wait(lambda: main_pid() not in ("0", before) and all(s in sources() for s in servers))
    return time.perf_counter() - start

def client_start():
    start = time.perf_counter()
    subprocess.run(["apiclient", "get", "settings.motd"], check=True, capture_output=True)
    middle = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return middle - start, time.perf_counter() - middle

def theirs():
    unlimited()
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
    a, b, c, d, e = [], [], [], [], []
    for i in range(int(sys.argv[2])):
        b.append(theirs())
        a.append(ours(i + 1))
        c.append(ours_api(i + 1))
        get, bare = client_start()
        d.append(get)
        e.append(bare)
    print(json.dumps({"ours": a, "theirs": b, "api": c, "get": d, "python": e}))
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
        api = statistics.median(change["api"]) * 1000
        print(f"the same change through the API socket from a running process (PATCH + "
              f"commit_and_apply?wait=true) until chronyd runs with it: {api:.0f} ms median; "
              f"ratio {api / theirs:.2f}")
        get = statistics.median(change["get"]) * 1000
        bare = statistics.median(change["python"]) * 1000
        print(f"where the rest goes: `apiclient get settings.motd` {get:.0f} ms against "
              f"`python3 -c pass` {bare:.0f} ms (the client's start-up, issue 18)")

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
