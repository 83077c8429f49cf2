"""Faults of the adversarial trial (issue 19), measured against baselines of the same run.

* SIGTERM while a fetch hangs on a remote that accepts and never answers, against SIGTERM of an
  idle daemon (the unit's ``TimeoutStopSec=30`` is the bound; before: 118 s);
* another client's ``GET /settings?keys=settings.motd`` while one client PATCHes 5,000 node
  labels (about 300 KB) back to back, against the same GET on an idle daemon (before: up to
  3.6 s, the validation held the store lock);
* the PATCH cost after 1,000 pending patches in one transaction, against the first ones
  (before: 19 ms after 200, 109 ms after 1,000);
* ``GET /status`` while 1,100 idle connections are held by a daemon limited to 1,024 file
  descriptors, against the same GET without them (before: time-outs).
"""

from __future__ import annotations

import json
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon import Daemon, UnixHTTPConnection, eventually  # noqa: E402
from tests.faultutil import Blackhole  # noqa: E402


def timed_get(d: Daemon, path: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        code, _ = d.request("GET", path)
        times.append(time.perf_counter() - start)
        assert code == 200
    return times


def sigterm(base: Path) -> tuple[float, float]:
    idle = Daemon(base / "idle")
    start = time.perf_counter()
    assert idle.stop() == 0
    idle_s = time.perf_counter() - start
    remote = Blackhole()
    user_data = base / "ud.toml"
    user_data.write_text(
        f'[settings.gitops]\nurl = "git://127.0.0.1:{remote.port}/f.git"\ninterval = 3600\n')
    hanging = Daemon(base / "hanging", ["--user-data", str(user_data)])
    eventually(lambda: remote.held, timeout=30)
    start = time.perf_counter()
    code = hanging.stop()
    hanging_s = time.perf_counter() - start
    remote.close()
    assert code == 0, hanging.logs()
    return idle_s, hanging_s


def big_patch_contention(base: Path) -> tuple[float, float, float]:
    d = Daemon(base / "k8s", ["--variant", "aws-k8s"])
    try:
        idle = timed_get(d, "/settings?keys=settings.motd", 50)
        labels = {f"label-{n}.example.com/key-{n}": f"value-{n}" for n in range(5_000)}
        body = json.dumps({"kubernetes": {"node-labels": labels}}).encode()
        assert len(body) < 1024 * 1024, len(body)  # under the API's body limit
        stop = threading.Event()
        patch_times: list[float] = []

        def patcher() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                code, text = d.request("PATCH", "/settings?tx=big", raw=body)
                assert code == 204, (code, text)
                patch_times.append(time.perf_counter() - start)
                d.request("DELETE", "/tx?tx=big")

        thread = threading.Thread(target=patcher)
        thread.start()
        busy = timed_get(d, "/settings?keys=settings.motd", 50)
        stop.set()
        thread.join()
    finally:
        d.stop()
    return max(idle), max(busy), statistics.median(patch_times)


def pending_growth(base: Path) -> tuple[float, float]:
    d = Daemon(base / "pending")
    try:
        def patch_time(n: int) -> float:
            start = time.perf_counter()
            d.ok("PATCH", "/settings", {"motd": f"m{n}" * 1000})
            return time.perf_counter() - start

        first = [patch_time(n) for n in range(20)]
        for n in range(20, 980):
            patch_time(n)
        last = [patch_time(n) for n in range(980, 1000)]
    finally:
        d.stop()
    return statistics.median(first), statistics.median(last)


def idle_flood(base: Path) -> tuple[float, float]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    d = Daemon(base / "flood", nofile=1024)
    held = []
    try:
        quiet = timed_get(d, "/status", 20)
        for _ in range(1100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d.socket))
            held.append(s)
        flooded = []
        for _ in range(20):
            start = time.perf_counter()
            connection = UnixHTTPConnection(d.socket, timeout=10)
            connection.request("GET", "/status")
            assert connection.getresponse().status == 200
            connection.close()
            flooded.append(time.perf_counter() - start)
    finally:
        for s in held:
            s.close()
        d.stop()
    return statistics.median(quiet), statistics.median(flooded)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        idle_s, hanging_s = sigterm(base)
        print(f"SIGTERM, idle daemon (baseline):               {idle_s:7.2f} s")
        print(f"SIGTERM, fetch hanging on a silent remote:     {hanging_s:7.2f} s "
              f"(bound: TimeoutStopSec=30; before: 118 s)")
        g_idle, g_busy, p_big = big_patch_contention(base)
        print(f"GET motd, idle daemon, worst of 50 (baseline): {g_idle * 1000:7.1f} ms")
        print(f"GET motd during 300 KB PATCHes, worst of 50: {g_busy * 1000:7.1f} ms "
              f"(one such PATCH: {p_big * 1000:.0f} ms; before: GET up to 3,570 ms)")
        first, last = pending_growth(base)
        print(f"PATCH, first 20 of a transaction (baseline):   {first * 1000:7.2f} ms median")
        print(f"PATCH, after 980 pending in it:                {last * 1000:7.2f} ms median "
              f"(ratio {last / first:.2f}; before: 109 ms after 1,000)")
        quiet, flooded = idle_flood(base)
        print(f"GET /status, no idle connections (baseline):   {quiet * 1000:7.2f} ms median")
        print(f"GET /status, 1,100 idle held, 1,024 fds:       {flooded * 1000:7.2f} ms median "
              "(before: time-outs)")


if __name__ == "__main__":
    main()
