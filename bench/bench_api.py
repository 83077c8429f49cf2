"""The API daemon under load, against baselines measured in the same run.

* ``GET /settings`` requests per second on one keep-alive connection;
* ``PATCH`` + ``commit_and_apply?wait=true`` latency until ``/etc/motd`` holds the value
  (p50, p99; target p50 <= 25 ms), against the same one-line change made by
  ``ansible-playbook`` (local connection, template + handler), reported as a ratio;
* daemon RSS before and after 10,000 commits.

ansible-core is installed from PyPI into ``bench/.ansible-venv`` on first use.
"""

from __future__ import annotations

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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp) / "state", [
            "--variant", "aws-k8s", "--user-data", str(REPO / "examples/user-data/aws-k8s.toml"),
        ])
        try:
            rps = requests_per_second(daemon)
            latencies = apply_latencies(daemon)
            before, after = memory_after_commits(daemon)
        finally:
            daemon.stop()
        peer = ansible_latencies(Path(tmp))
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    peer50 = statistics.median(peer)
    print(f"GET /settings on one connection:            {rps:8.0f} requests/s")
    print(f"PATCH + commit_and_apply?wait, file on disk: p50 {p50 * 1000:6.2f} ms, "
          f"p99 {p99 * 1000:6.2f} ms (target p50 <= 25 ms)")
    print(f"ansible-playbook, same change (peer):        p50 {peer50 * 1000:6.0f} ms")
    print(f"ratio ansible / reconciler (p50):            {peer50 / p50:8.0f}x")
    print(f"daemon RSS before / after 10,000 commits:    {before / 1024:.1f} MiB / "
          f"{after / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
