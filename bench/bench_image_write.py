"""Benchmark: stream a verified TUF target into a partition, against `dd conv=fsync`.

Builds a repository (fresh keys, `file://`) holding one random root image (512 MiB by default)
and a GPT disk image with the two-set layout, then, in the same run and on the same bytes:

* baseline (the issue's): `dd if=IMAGE of=DISK bs=1M seek=<partition offset> oflag=seek_bytes
  conv=notrunc,fsync` (copy + fsync, no verification);
* reference: the same dd with `oflag=direct`, the path ours takes (no page cache);
* ours: `updates.apply.write_image` - TUF refresh, streaming with incremental length and
  sha256 checks (hashing overlapped with writing), O_DIRECT writes, fsync;
* ceiling: reading and sha256-hashing the same bytes, writing nothing. No verified write can be
  faster, so when a virtual disk's host cache lets `dd conv=fsync` run faster than sha256, the
  ratio against dd says more about that cache than about the writer;
* lz4: the same image published as an LZ4 frame (as Bottlerocket ships images): ours verifies the
  delivered (compressed) bytes and decodes them into the partition; the baseline is
  `lz4 -d -c IMAGE.lz4 | dd oflag=direct iflag=fullblock conv=fsync` (target >= 0.7).

The image is a root image (`updates.osimage` header) whose payload alternates random and zero
4 KiB blocks, so it compresses about 2:1, like a real root filesystem.

Every measurement writes into a disk image file created for it (sparse, so every block is newly
allocated: a rewrite of blocks that already hold the same bytes is absorbed by a virtual disk's
host-side cache and would measure that cache, not the write), and the order of the measurements
rotates every round. Prints MiB/s per round, medians and the throughput ratio ours/dd
(target >= 0.7 against dd oflag=direct). Not a test.

    .venv/bin/python bench/bench_image_write.py [--size-mib 512] [--rounds 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lz4.frame  # noqa: E402

from updates import apply, osimage  # noqa: E402
from updates.partitions import OsDisk, create_os_disk  # noqa: E402
from updates.repo import Repository  # noqa: E402
from updates.tuf_client import TufClient  # noqa: E402

NAME = "bench-root.img"
LZ4_NAME = NAME + ".lz4"


def dd(image: Path, disk: Path, offset: int, direct: bool) -> float:
    oflag = "seek_bytes,direct" if direct else "seek_bytes"
    start = time.perf_counter()
    subprocess.run(["dd", f"if={image}", f"of={disk}", "bs=1M", f"seek={offset}",
                    f"oflag={oflag}", "conv=notrunc,fsync", "status=none"], check=True)
    return time.perf_counter() - start


def lz4_dd(image: Path, disk: Path, offset: int) -> float:
    """`lz4 -d | dd oflag=direct`: decode and write, no verification."""
    start = time.perf_counter()
    decoder = subprocess.Popen(["lz4", "-d", "-c", str(image)], stdout=subprocess.PIPE)
    subprocess.run(["dd", f"of={disk}", "bs=1M", f"seek={offset}",
                    "oflag=seek_bytes,direct", "iflag=fullblock", "conv=notrunc,fsync",
                    "status=none"], stdin=decoder.stdout, check=True)
    assert decoder.stdout is not None
    decoder.stdout.close()
    if decoder.wait() != 0:
        raise RuntimeError("lz4 -d failed")
    return time.perf_counter() - start


def sha256_only(image: Path) -> float:
    """The verification floor: reading and hashing the same bytes, writing nothing."""
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(image, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return time.perf_counter() - start


def ours(repo: Path, cache: Path, disk: Path, name: str = NAME) -> float:
    start = time.perf_counter()
    meta = repo / "metadata"
    with TufClient(cache, meta.as_uri() + "/", trusted_root=(meta / "1.root.json").read_bytes(),
                   targets_base_url=(repo / "targets").as_uri() + "/") as client:
        info = client.get_target(name)
        with OsDisk(disk) as d:
            apply.write_image(d, "B", "root", client, info)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        image = tmp / NAME
        with open(image, "wb") as f:
            f.write(osimage.root_image("9.9.9", "bench").ljust(4096, b"\0"))
            for _ in range(args.size_mib):
                f.write(b"".join(os.urandom(4096) if i % 2 else bytes(4096)
                                 for i in range(256)))
        size = image.stat().st_size
        packed = tmp / LZ4_NAME
        with open(image, "rb") as src:
            packed.write_bytes(lz4.frame.compress(src.read(), store_size=True))
        repo = Repository.create(tmp / "repo")
        repo.add_target(NAME, image)
        repo.add_target(LZ4_NAME, packed)
        repo.publish()
        disk_size = 4 * size + (64 << 20)
        disk = tmp / "disk.img"
        create_os_disk(disk, disk_size)
        with OsDisk(disk) as d:
            offset = d.entry("B", "root").offset
        print(f"image {args.size_mib} MiB, disk {disk.stat().st_size >> 20} MiB, "
              f"partition offset {offset}, dir {tmp}")
        results: dict[str, list[float]] = {"dd conv=fsync": [], "dd oflag=direct conv=fsync": [],
                                           "ours (verified stream, fsync)": [],
                                           "sha256 only (no write)": [],
                                           "lz4 -d | dd oflag=direct": [],
                                           "ours lz4 (verified, decoded)": []}
        labels = list(results)
        for r in range(args.rounds):
            turn = r % len(labels)  # rotate: nobody always goes first
            for label in labels[turn:] + labels[:turn]:
                disk.unlink()
                create_os_disk(disk, disk_size)  # fresh blocks for every writer
                if label.startswith("dd"):
                    seconds = dd(image, disk, offset, direct="direct" in label)
                elif label.startswith("sha256"):
                    seconds = sha256_only(image)
                elif label.startswith("lz4"):
                    seconds = lz4_dd(packed, disk, offset)
                elif label.startswith("ours lz4"):
                    seconds = ours(tmp / "repo", tmp / f"cache-lz4-{r}", disk, LZ4_NAME)
                else:
                    seconds = ours(tmp / "repo", tmp / f"cache{r}", disk)
                results[label].append(seconds)
                print(f"round {r + 1}: {label:<28} {args.size_mib / seconds:8.1f} MiB/s")
        med = {label: statistics.median(v) for label, v in results.items()}
        print("\nmedian:")
        for label, seconds in med.items():
            print(f"  {label:<28} {args.size_mib / seconds:8.1f} MiB/s ({seconds:.3f} s)")
        mine = med["ours (verified stream, fsync)"]
        print(f"  ratio ours / dd conv=fsync: {med['dd conv=fsync'] / mine:.2f} (target >= 0.8)")
        print(f"  ratio ours / dd oflag=direct conv=fsync: "
              f"{med['dd oflag=direct conv=fsync'] / mine:.2f}")
        print(f"  ratio ours / sha256 only (the ceiling of any verified write): "
              f"{med['sha256 only (no write)'] / mine:.2f}")
        print(f"  ratio ours lz4 / lz4 -d | dd oflag=direct: "
              f"{med['lz4 -d | dd oflag=direct'] / med['ours lz4 (verified, decoded)']:.2f} "
              f"(target >= 0.7; image {packed.stat().st_size >> 20} MiB as lz4)")


if __name__ == "__main__":
    main()
