"""PartitionWriter: exact bytes in exactly its range, direct where it can, buffered where not."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from updates.errors import UpdateError
from updates.partition_writer import ALIGN, PartitionWriter

DISK = 1 << 20


def disk_file(directory: Path) -> Path:
    path = directory / "disk.img"
    path.write_bytes(b"\xee" * DISK)
    return path


def write_in_chunks(path: Path, offset: int, size: int, data: bytes, chunk: int,
                    buffer_size: int = 4 * ALIGN) -> bool:
    with PartitionWriter(str(path), offset, size, buffer_size=buffer_size) as w:
        direct = w.direct
        for i in range(0, len(data), chunk):
            w.write(data[i:i + chunk])
        w.sync()
    return direct


@pytest.mark.parametrize("length", [0, 1, ALIGN - 1, ALIGN, 4 * ALIGN, 9 * ALIGN + 123])
@pytest.mark.parametrize("chunk", [1000, ALIGN, 5 * ALIGN + 7])
def test_writes_exactly_its_range_with_direct_io(tmp_path: Path, length: int, chunk: int) -> None:
    disk = disk_file(tmp_path)
    data = os.urandom(length)
    offset, size = 16 * ALIGN, 32 * ALIGN
    assert write_in_chunks(disk, offset, size, data, chunk) is True  # ext4 under tmp_path
    raw = disk.read_bytes()
    assert raw[offset:offset + length] == data
    assert raw[:offset] == b"\xee" * offset
    assert raw[offset + length:] == b"\xee" * (DISK - offset - length)


def test_direct_writes_into_a_block_device(tmp_path: Path,
                                           loop_device: Callable[[Path], str]) -> None:
    disk = disk_file(tmp_path)
    data = os.urandom(5 * ALIGN + 77)
    assert write_in_chunks(Path(loop_device(disk)), 8 * ALIGN, 16 * ALIGN, data, 3000) is True
    raw = disk.read_bytes()
    assert raw[8 * ALIGN:8 * ALIGN + len(data)] == data
    assert raw[:8 * ALIGN] == b"\xee" * 8 * ALIGN
    assert raw[8 * ALIGN + len(data):] == b"\xee" * (DISK - 8 * ALIGN - len(data))


def test_unaligned_partition_falls_back_to_buffered_writes(tmp_path: Path) -> None:
    disk = disk_file(tmp_path)
    data = os.urandom(3 * ALIGN + 5)
    assert write_in_chunks(disk, 512, 8 * ALIGN, data, ALIGN) is False
    assert disk.read_bytes()[512:512 + len(data)] == data


def test_refuses_to_write_past_the_partition_end(tmp_path: Path) -> None:
    disk = disk_file(tmp_path)
    with PartitionWriter(str(disk), ALIGN, 2 * ALIGN, buffer_size=ALIGN) as w:
        w.write(b"a" * 2 * ALIGN)
        with pytest.raises(UpdateError, match="larger than its partition"):
            w.write(b"b")
        w.sync()
    raw = disk.read_bytes()
    assert raw[ALIGN:3 * ALIGN] == b"a" * 2 * ALIGN
    assert raw[3 * ALIGN:4 * ALIGN] == b"\xee" * ALIGN


def test_buffer_size_must_be_whole_blocks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple"):
        PartitionWriter(str(disk_file(tmp_path)), 0, ALIGN, buffer_size=ALIGN + 1)


def test_a_failed_background_write_surfaces_and_nothing_claims_durability(tmp_path: Path) -> None:
    """A write error in the helper thread reaches the caller (here: EFBIG past RLIMIT_FSIZE)."""
    disk = disk_file(tmp_path)
    limit = DISK + 2 * ALIGN  # the partition runs past what the process may write
    script = f"""
import errno, resource, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from updates.partition_writer import PartitionWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
try:
    with PartitionWriter({str(disk)!r}, {DISK - ALIGN}, {16 * ALIGN}, buffer_size={ALIGN}) as w:
        for _ in range(16):
            w.write(b"x" * {ALIGN})
        w.sync()
except OSError as e:
    sys.exit(0 if e.errno == errno.EFBIG else 3)
sys.exit(4)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert disk.stat().st_size == limit
