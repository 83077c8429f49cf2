"""Benchmark: download and verify a large TUF target, against `sha256sum` + `cp`.

Builds a repository with `updates.repo` (fresh keys) holding one random target (512 MiB by
default), then, in the same run and on the same file:

* baseline: `sha256sum FILE` then `cp FILE DEST` (then `sync DEST`, reported separately,
  because the client fsyncs what it downloads and `cp` does not);
* client: a fresh `TufClient` (child process) refreshes the metadata and streams the target
  to disk with length and hash verification, over `file://` and over HTTP on 127.0.0.1
  (`python -m http.server` in its own process).

Prints throughput, the ratio to the baseline (target >= 0.7) and the client's peak RSS
(target <= 100 MB). Not a test: it only prints figures.

    .venv/bin/python bench/bench_tuf_download.py [--size-mib 512] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAME = "bench-root.ext4.lz4"


def child(cache: str, metadata_url: str, targets_url: str, trusted_root: str, dest: str) -> None:
    """Runs in a separate process so its peak RSS is the client's alone."""
    from updates.tuf_client import TufClient

    start = time.perf_counter()
    with TufClient(Path(cache), metadata_url, trusted_root=Path(trusted_root).read_bytes(),
                   targets_base_url=targets_url) as client:
        client.refresh()
        info = client.get_target(NAME)
        client.download_target(info, Path(dest))
    print(f"{time.perf_counter() - start:.6f}")


def run_child(args: list[str]) -> tuple[float, float, int]:
    """(seconds inside the client, wall seconds incl. interpreter start, peak RSS bytes)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args],
                            stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read()
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"client failed with exit code {proc.returncode}")
    return float(out.strip().splitlines()[-1]), wall, usage.ru_maxrss * 1024


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_file(path: Path, size: int) -> None:
    block = 4 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", type=Path, help="work directory on the disk to measure")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*a.child)
        return

    from updates.repo import Repository

    size = a.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="bench-tuf-", dir=a.dir))
    server = None
    try:
        src = work / "image.bin"
        make_file(src, size)
        t0 = time.perf_counter()
        repo = Repository.create(work / "repo")
        info = repo.add_target(NAME, src)
        repo.publish()
        print(f"repository built in {time.perf_counter() - t0:.2f}s "
              f"(target {a.size_mib} MiB, sha256 {info.hashes['sha256'][:16]}...)")
        stored = work / "repo" / "targets" / f"{info.hashes['sha256']}.{NAME}"
        trusted = work / "repo" / "metadata" / "1.root.json"
        subprocess.run(["cat", str(stored)], check=True, stdout=subprocess.DEVNULL)  # warm

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(work / "repo")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        bases = {"file://": (work / "repo").as_uri(), "http://127.0.0.1": f"http://127.0.0.1:{port}"}

        results: dict[str, list[float]] = {"baseline": [], "baseline+sync": []}
        rss: dict[str, int] = {}
        walls: dict[str, list[float]] = {}
        dest = work / "out.img"
        for _ in range(a.rounds):
            dest.unlink(missing_ok=True)
            t_sha = timed(["sha256sum", str(stored)])
            t_cp = timed(["cp", str(stored), str(dest)])
            t_sync = timed(["sync", str(dest)])
            results["baseline"].append(t_sha + t_cp)
            results["baseline+sync"].append(t_sha + t_cp + t_sync)
            for label, base in bases.items():
                dest.unlink(missing_ok=True)
                cache = work / f"cache-{len(results.get(label, []))}-{label[:4]}"
                t, wall, peak = run_child([str(cache), f"{base}/metadata/", f"{base}/targets/",
                                           str(trusted), str(dest)])
                shutil.rmtree(cache)
                results.setdefault(label, []).append(t)
                walls.setdefault(label, []).append(wall)
                rss[label] = max(rss.get(label, 0), peak)

        def mibs(seconds: float) -> float:
            return size / (1 << 20) / seconds

        base = statistics.median(results["baseline"])
        base_sync = statistics.median(results["baseline+sync"])
        print(f"\n{'':34}{'median s':>10}{'MiB/s':>10}{'ratio':>8}{'peak RSS':>12}")
        print(f"{'sha256sum + cp':34}{base:10.3f}{mibs(base):10.0f}")
        print(f"{'sha256sum + cp + sync':34}{base_sync:10.3f}{mibs(base_sync):10.0f}")
        for label in bases:
            t = statistics.median(results[label])
            print(f"{'updog client, ' + label:34}{t:10.3f}{mibs(t):10.0f}"
                  f"{base / t:8.2f}{rss[label] / 1e6:9.1f} MB"
                  f"   (vs +sync {base_sync / t:.2f}; wall incl. start-up "
                  f"{statistics.median(walls[label]):.2f}s)")
        print("\ntargets: ratio >= 0.70 of sha256sum + cp, peak RSS <= 100 MB")
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
