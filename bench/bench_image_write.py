"""Benchmark: stream a verified TUF target into a partition, against `dd conv=fsync`.

Builds a repository (fresh keys, `file://`) holding one random root image (512 MiB by default)
and a GPT disk image with the two-set layout, then, in the same run and on the same bytes:

* baseline: `dd if=IMAGE of=DISK bs=1M seek=<partition offset> oflag=seek_bytes
  conv=notrunc,fsync` (copy + fsync, no verification);
  every measurement writes into a disk image file created for it (sparse, so every block is
  newly allocated: a rewrite of blocks that already hold the same bytes is absorbed by a
  virtual disk's host-side cache and would measure that cache, not the write), and the order of
  the three measurements rotates every round;
* ours: `updates.apply.write_image` - TUF refresh, streaming with incremental length and
  sha256 checks (hashing overlapped with writing), fsync, then a read-back of the partition
  checked against the verified stream (what updog does before marking a set valid); also
  reported without the read-back.

Prints MiB/s per round, medians and the throughput ratio ours/dd (target >= 0.8). Not a test.

    .venv/bin/python bench/bench_image_write.py [--size-mib 512] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from updates import apply  # noqa: E402
from updates.partitions import OsDisk, create_os_disk  # noqa: E402
from updates.repo import Repository  # noqa: E402
from updates.tuf_client import TufClient  # noqa: E402

NAME = "bench-root.img"


def dd(image: Path, disk: Path, offset: int) -> float:
    start = time.perf_counter()
    subprocess.run(["dd", f"if={image}", f"of={disk}", "bs=1M", f"seek={offset}",
                    "oflag=seek_bytes", "conv=notrunc,fsync", "status=none"], check=True)
    return time.perf_counter() - start


def ours(repo: Path, cache: Path, disk: Path, verify: bool) -> float:
    start = time.perf_counter()
    meta = repo / "metadata"
    with TufClient(cache, meta.as_uri() + "/", trusted_root=(meta / "1.root.json").read_bytes(),
                   targets_base_url=(repo / "targets").as_uri() + "/") as client:
        info = client.get_target(NAME)
        with OsDisk(disk) as d:
            if verify:
                apply.write_image(d, "B", "root", client, info)
            else:
                entry = d.entry("B", "root")
                client.copy_target(info, apply.PartitionSink(d.fd, entry.offset, entry.size))
                os.fsync(d.fd)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        image = tmp / NAME
        with open(image, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        repo = Repository.create(tmp / "repo")
        repo.add_target(NAME, image)
        repo.publish()
        disk_size = 4 * size + (64 << 20)
        disk = tmp / "disk.img"
        create_os_disk(disk, disk_size)
        with OsDisk(disk) as d:
            offset = d.entry("B", "root").offset
        print(f"image {args.size_mib} MiB, disk {disk.stat().st_size >> 20} MiB, "
              f"partition offset {offset}, dir {tmp}")
        results: dict[str, list[float]] = {"dd conv=fsync": [], "ours (stream+fsync+verify)": [],
                                           "ours (stream+fsync)": []}
        labels = list(results)
        for r in range(args.rounds):
            for label in labels[r % 3:] + labels[:r % 3]:  # rotate: nobody always goes first
                disk.unlink()
                create_os_disk(disk, disk_size)  # fresh blocks for every writer
                if label.startswith("dd"):
                    seconds = dd(image, disk, offset)
                else:
                    seconds = ours(tmp / "repo", tmp / f"cache{r}{len(label)}", disk,
                                   verify="verify" in label)
                results[label].append(seconds)
                print(f"round {r + 1}: {label:<28} {args.size_mib / seconds:8.1f} MiB/s")
        med = {label: statistics.median(v) for label, v in results.items()}
        print("\nmedian:")
        for label, seconds in med.items():
            print(f"  {label:<28} {args.size_mib / seconds:8.1f} MiB/s ({seconds:.3f} s)")
        base = med["dd conv=fsync"]
        for label in list(med)[1:]:
            print(f"  ratio {label} / dd: {base / med[label]:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
