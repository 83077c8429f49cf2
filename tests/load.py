"""Mixed read/write load against a real daemon: N clients for a fixed time (tests and bench)."""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field

from tests.daemon import Daemon, UnixHTTPConnection


@dataclass
class LoadResult:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lost_commits: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rss_before_kib: int = 0
    rss_after_kib: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)

    def summary(self) -> str:
        return (f"{self.requests} requests in {self.seconds:.1f} s = {self.rate:.0f}/s, "
                f"p50 {statistics.median(self.latencies) * 1000:.2f} ms, "
                f"p99 {self.percentile(0.99) * 1000:.2f} ms, errors {len(self.errors)}, "
                f"lost commits {len(self.lost_commits)}, RSS {self.rss_before_kib / 1024:.1f} -> "
                f"{self.rss_after_kib / 1024:.1f} MiB")


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (0.0 for none)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_load(daemon: Daemon, clients: int, seconds: float, seed: int = 1) -> LoadResult:
    """Each client: 70% reads of settings, 10% status, 20% PATCH + commit of its own label."""
    result = LoadResult(rss_before_kib=rss_kib(daemon.process.pid))
    lock = threading.Lock()
    last_committed: dict[str, str] = {}
    deadline = time.monotonic() + seconds

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        connection = UnixHTTPConnection(daemon.socket)
        label, tx = f"load-{number}", f"load-{number}"
        done, errors, latencies = 0, [], []

        def call(method: str, path: str, body: object = None) -> int:
            data = None if body is None else json.dumps(body).encode()
            start = time.perf_counter()
            connection.request(method, path, body=data,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            latencies.append(time.perf_counter() - start)
            if not 200 <= response.status < 300:
                errors.append(f"{method} {path} -> {response.status}: {payload[:200]!r}")
            return response.status

        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.7:
                call("GET", "/settings?keys=settings.motd,settings.ntp.time-servers")
                done += 1
            elif roll < 0.8:
                call("GET", "/status")
                done += 1
            else:
                value = f"v{done}"
                patched = call("PATCH", f"/settings?tx={tx}",
                               {"kubernetes": {"node-labels": {label: value}}})
                committed = call("POST", f"/tx/commit?tx={tx}")
                done += 2
                if patched == 204 and committed == 200:
                    with lock:
                        last_committed[label] = value
        connection.close()
        with lock:
            result.requests += done
            result.errors += errors
            result.latencies += latencies

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - started
    labels = daemon.ok("GET", "/settings?prefix=kubernetes.node-labels")
    live = labels.get("kubernetes", {}).get("node-labels", {})
    result.lost_commits = [f"{k}={v} (live {live.get(k)})" for k, v in last_committed.items()
                           if live.get(k) != v]
    result.rss_after_kib = rss_kib(daemon.process.pid)
    return result
