"""Image formats and bootability: lz4 frames decoded into the partition, anything else refused,
and a set whose verity tree does not match its root never marked valid."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path

import lz4.frame
import pytest

from tests.updates.simhost import Sim, image_bytes, image_set, lz4_frame, make_sim
from updates import osimage
from updates.gptprio import Flags
from updates.imageformat import DecodingSink, ImageFormatError, preflight
from updates.partitions import OsDisk
from updates.setcheck import SetCheckError, check_set


def partition_bytes(disk: Path, set_name: str, kind: str, length: int) -> bytes:
    with OsDisk(disk, writable=False) as d:
        entry = d.entry(set_name, kind)
        return os.pread(d.fd, length, entry.offset)


def assert_not_flipped(sim: Sim) -> None:
    flags = sim.flags()
    assert flags["B"].tries_left == 0 and flags["B"].priority == 0 and flags["next"] == "A"
    assert sim.reboot() == "A" and sim.running_version() == "1.0.0"


def test_lz4_published_images_land_decoded(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", lz4=True)
    published = sim.tmp / "work" / "aws-dev-1.1.0-root.img.lz4"
    assert published.read_bytes().startswith(b"\x04\x22\x4d\x18")
    sim.updog("update-image")
    for kind in ("root", "boot", "hash"):
        plain = image_bytes("1.1.0", kind)
        written = partition_bytes(sim.disk, "B", kind, len(plain))
        assert hashlib.sha256(written).hexdigest() == hashlib.sha256(plain).hexdigest()
    assert sim.flags()["B"] == Flags(0, 1, False)
    sim.updog("update-apply")
    assert sim.reboot() == "B" and sim.running_version() == "1.1.0"


@pytest.mark.parametrize(("label", "make", "message"), [
    ("corrupt lz4", lambda raw: lz4_frame(raw)[:40] + b"\xff" * 200 + lz4_frame(raw)[240:],
     "corrupt LZ4 frame"),
    ("truncated lz4", lambda raw: lz4_frame(raw)[:-64], "truncated"),
])
def test_corrupt_lz4_is_refused_and_not_flipped(tmp_path: Path, serve, label: str, make,
                                                message: str) -> None:
    sim = make_sim(tmp_path, serve)
    bad = make(image_bytes("1.1.0", "root"))
    sim.publish("1.1.0", lz4=True, images={"root": bad})
    done = sim.updog("update", check=False)
    assert done.returncode == 1 and message in done.stderr, (label, done.stderr)
    assert_not_flipped(sim)


@pytest.mark.parametrize(("label", "data", "message"), [
    ("gzip", gzip.compress(image_bytes("1.1.0", "root")), "gzip-compressed"),
    ("arbitrary file", b"just some bytes " * 1000, "is not a root image"),
])
def test_unknown_format_refused_before_writing(tmp_path: Path, serve, label: str, data: bytes,
                                               message: str) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", images={"root": data})
    before = sim.disk.read_bytes()
    done = sim.updog("update", check=False)
    assert done.returncode == 1 and message in done.stderr, (label, done.stderr)
    if label == "gzip":  # refused on its first bytes: nothing at all was written
        assert sim.disk.read_bytes() == before
    assert_not_flipped(sim)


def test_lz4_decoded_size_checked_before_anything_is_written(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", lz4=True, sizes={"root": 4 << 20})  # compresses to a few KiB
    before = sim.disk.read_bytes()
    done = sim.updog("update", check=False)
    assert done.returncode == 1 and "does not fit its partition" in done.stderr
    assert sim.disk.read_bytes() == before


def test_verity_mismatch_refused_before_the_flip(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    other = image_set("1.1.0", 96 * 1024 + 4096)  # the same version, a different root
    sim.publish("1.1.0", images={"hash": other.hash})
    done = sim.updog("update", check=False)
    assert done.returncode == 1 and "verity check failed" in done.stderr, done.stderr
    assert_not_flipped(sim)


def test_check_set_reports_each_fault(tmp_path: Path) -> None:
    from updates.partitions import create_os_disk

    disk = tmp_path / "d.img"
    create_os_disk(disk, 8 << 20, version="1.0.0")
    with OsDisk(disk) as d:
        assert check_set(d, "A").version == "1.0.0"
        with pytest.raises(SetCheckError, match="no boot image header"):
            check_set(d, "B")
        root = d.entry("A", "root")
        os.pwrite(d.fd, b"X", root.offset + 1000)  # after the header, in the first block
        with pytest.raises(SetCheckError, match="verity"):
            check_set(d, "A")


class Collect(io.BytesIO):
    pass


def test_decoding_sink_rules() -> None:
    raw = osimage.root_image("1.1.0", "aws-dev", payload=b"z" * 300_000)
    out = Collect()
    sink = DecodingSink(out, 1 << 20, "r.lz4")
    frame = lz4.frame.compress(raw, store_size=False)  # like the lz4 CLI: no size declared
    for i in range(0, len(frame), 7):  # delivered in tiny pieces
        sink.write(frame[i:i + 7])
    assert sink.finish() == len(raw) and out.getvalue() == raw
    small = DecodingSink(Collect(), 1000, "r.lz4")  # undeclared size: bounded on the way
    with pytest.raises(ImageFormatError, match="exceeds its partition"):
        small.write(frame)
    with pytest.raises(ImageFormatError, match="bytes after the end"):
        trailing = DecodingSink(Collect(), 1 << 20, "r.lz4")
        trailing.write(lz4_frame(raw) + b"extra")
    with pytest.raises(ImageFormatError, match="named .lz4"):
        DecodingSink(Collect(), 1 << 20, "r.lz4").write(raw)
    with pytest.raises(ImageFormatError, match="xz"):
        preflight(b"\xfd7zXZ\x00" + b"\0" * 20, "r.img.xz", 100, 1000)
    assert preflight(lz4_frame(raw)[:19], "r.lz4", 10, len(raw)) == len(raw)
