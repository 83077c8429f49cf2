"""The API daemon under load, against baselines measured in the same run.

* ``GET /settings`` requests per second on one keep-alive connection;
* ``PATCH`` + ``commit_and_apply?wait=true`` latency until ``/etc/motd`` holds the value
  (p50, p99; target p50 <= 6 ms), against the same one-line change made by
  ``ansible-playbook`` (local connection, template + handler), reported as a ratio, and
  against its floor on this disk: the change is durable after four syncs (two SQLite
  commits: the commit, the receipt; the file and its directory; the PATCH, pending until the
  commit, does not wait for the disk), each timed here;
* the daemon's CPU time per change (user + system, all threads), less noisy than latency on
  a shared machine;
* daemon RSS before and after 10,000 commits.

ansible-core is installed from PyPI into ``bench/.ansible-venv`` on first use.

``--baseline TREE``: a checkout of an older commit (``git worktree add --detach TREE
<commit>``) whose daemon is measured in the same run, on the same interpreter, beside this
tree's (requests per second, latency and CPU per change; the changes of the two daemons
alternate in rounds, so a shared machine's load falls on both alike).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import Daemon, UnixHTTPConnection  # noqa: E402
from tests.load import percentile, rss_kib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_VENV = REPO / "bench/.ansible-venv"


def requests_per_second(daemon: Daemon, count: int = 3000) -> float:
    connection = UnixHTTPConnection(daemon.socket)
    start = time.perf_counter()
    for _ in range(count):
        connection.request("GET", "/settings")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    elapsed = time.perf_counter() - start
    connection.close()
    return count / elapsed


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sync_latencies(directory: Path, count: int = 200) -> list[float]:
    """One small write + fsync on the daemon's file system, ``count`` times."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    latencies = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 512)
            start = time.perf_counter()
            os.fsync(fd)
            latencies.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return latencies


def apply_latencies(daemon: Daemon, count: int = 300) -> list[float]:
    motd = daemon.root / "etc/motd"
    latencies = []
    for n in range(count):
        text = f"latency run {n}"
        start = time.perf_counter()
        daemon.ok("PATCH", "/settings", {"motd": text})
        result = daemon.ok("POST", "/tx/commit_and_apply?wait=true")
        latencies.append(time.perf_counter() - start)
        assert result["receipt"]["ok"] and motd.read_text().startswith(text)
    return latencies


def ansible_playbook() -> Path:
    binary = ANSIBLE_VENV / "bin/ansible-playbook"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin/pip"), "install", "-q", "ansible-core"],
                       check=True)
    return binary


def ansible_latencies(workdir: Path, count: int = 5) -> list[float]:
    binary = ansible_playbook()
    (workdir / "motd.j2").write_text("{{ motd }}\n")
    (workdir / "site.yml").write_text(textwrap.dedent(f"""
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - name: render motd
              ansible.builtin.template:
                src: {workdir}/motd.j2
                dest: {workdir}/motd
              notify: motd changed
          handlers:
            - name: motd changed
              ansible.builtin.command: "true"
    """))
    env = {**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    latencies = []
    for n in range(count):
        start = time.perf_counter()
        subprocess.run([str(binary), str(workdir / "site.yml"), "-e",
                        json.dumps({"motd": f"ansible run {n}"})],
                       check=True, capture_output=True, env=env)
        latencies.append(time.perf_counter() - start)
        assert (workdir / "motd").read_text().startswith(f"ansible run {n}")
    return latencies


def memory_after_commits(daemon: Daemon, commits: int = 10_000) -> tuple[int, int]:
    before = rss_kib(daemon.process.pid)
    connection = UnixHTTPConnection(daemon.socket)
    for n in range(commits):
        body = json.dumps({"kubernetes": {"node-labels": {f"k{n % 500}": f"v{n}"}}})
        connection.request("PATCH", "/settings?tx=mem", body=body,
                           headers={"Content-Type": "application/json"})
        connection.getresponse().read()
        connection.request("POST", "/tx/commit?tx=mem")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    connection.close()
    return before, rss_kib(daemon.process.pid)


def start(tree: Path, state: Path) -> Daemon:
    """The daemon of ``tree`` (this checkout or an older one) on the aws-k8s example."""
    return Daemon(state, ["--variant", "aws-k8s", "--user-data",
                          str(tree / "examples/user-data/aws-k8s.toml")], cwd=tree)


def commit_of(tree: Path) -> str:
    run = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return run.stdout.strip() or "?"


def changes_in_rounds(daemons: list[Daemon], count: int = 300,
                      rounds: int = 3) -> list[tuple[list[float], float]]:
    """Each daemon's change latencies and CPU per change; the daemons take turns, a round at
    a time, so that load from elsewhere falls on each of them alike."""
    for daemon in daemons:
        apply_latencies(daemon, 20)  # warm
    latencies: list[list[float]] = [[] for _ in daemons]
    cpu = [0.0 for _ in daemons]
    for _ in range(rounds):
        for n, daemon in enumerate(daemons):
            before = cpu_seconds(daemon.process.pid)
            latencies[n] += apply_latencies(daemon, count // rounds)
            cpu[n] += cpu_seconds(daemon.process.pid) - before
    return [(each, cpu[n] / len(each)) for n, each in enumerate(latencies)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="an older checkout measured beside")
    args = parser.parse_args()
    baseline = args.baseline.resolve() if args.baseline else None
    with tempfile.TemporaryDirectory() as tmp:
        daemons = [start(REPO, Path(tmp) / "state")]
        try:
            if baseline is not None:
                daemons.append(start(baseline, Path(tmp) / "baseline"))
            rates = [requests_per_second(d) for d in daemons]
            changes = changes_in_rounds(daemons)
            syncs = sync_latencies(daemons[0].state_dir)
            for extra in daemons[1:]:
                extra.stop()
            before, after = memory_after_commits(daemons[0])
        finally:
            for daemon in daemons:
                daemon.stop()
        peer = ansible_latencies(Path(tmp))
    latencies, cpu_per_change = changes[0]
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    peer50 = statistics.median(peer)
    sync50 = statistics.median(syncs)
    print(f"this tree: {commit_of(REPO)}")
    print(f"GET /settings on one connection:            {rates[0]:8.0f} requests/s")
    print(f"PATCH + commit_and_apply?wait, file on disk: p50 {p50 * 1000:6.2f} ms, "
          f"p99 {p99 * 1000:6.2f} ms (target p50 <= 6 ms)")
    print(f"ansible-playbook, same change (peer):        p50 {peer50 * 1000:6.0f} ms")
    print(f"ratio ansible / reconciler (p50):            {peer50 / p50:8.0f}x")
    print(f"floor: 4 syncs x fsync p50 {sync50 * 1000:.2f} ms:        {4 * sync50 * 1000:6.2f} ms")
    print(f"daemon CPU per change (all threads):         {cpu_per_change * 1000:6.2f} ms")
    print(f"daemon RSS before / after 10,000 commits:    {before / 1024:.1f} MiB / "
          f"{after / 1024:.1f} MiB")
    if baseline is not None:
        old, old_cpu = changes[1]
        print(f"baseline {commit_of(baseline)}, measured in this run, turn about with this tree:")
        print(f"  GET /settings on one connection:          {rates[1]:8.0f} requests/s "
              f"({rates[0] / rates[1]:.2f}x)")
        print(f"  PATCH + commit_and_apply?wait p50:        {statistics.median(old) * 1000:8.2f} "
              f"ms, p99 {percentile(old, 0.99) * 1000:6.2f} ms")
        print(f"  daemon CPU per change (all threads):      {old_cpu * 1000:8.2f} ms")


if __name__ == "__main__":
    main()
