"""GPT read/write: both copies, CRCs, backup fallback, and sgdisk's agreement with our table."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updates import gpt, gptprio
from updates.partitions import OsDisk, create_os_disk, device_name, find_sets

SGDISK = shutil.which("sgdisk")


def need_sgdisk() -> str:
    if SGDISK is None:  # CI installs gdisk (scripts/install-system-deps.sh): never skip there
        pytest.fail("sgdisk is missing: run scripts/install-system-deps.sh")
    return SGDISK


def sgdisk_view(disk: Path) -> dict[int, dict[str, object]]:
    """What sgdisk reads: per partition start, end, name, type GUID, attribute hex."""
    exe = need_sgdisk()
    verify = subprocess.run([exe, "-v", str(disk)], capture_output=True, text=True, check=True)
    assert "No problems found" in verify.stdout, verify.stdout
    out = subprocess.run([exe, "-p", str(disk)], capture_output=True, text=True,
                         check=True).stdout
    parts: dict[int, dict[str, object]] = {}
    for line in out.splitlines():
        m = re.match(r"\s+(\d+)\s+(\d+)\s+(\d+)\s", line)
        if m:
            n = int(m[1])
            info = subprocess.run([exe, "-i", str(n), str(disk)], capture_output=True,
                                  text=True, check=True).stdout
            parts[n] = {
                "start": int(m[2]), "end": int(m[3]),
                "type": uuid.UUID(re.search(r"GUID code: (\S+)", info)[1]),
                "unique": uuid.UUID(re.search(r"unique GUID: (\S+)", info)[1]),
                "attributes": int(re.search(r"Attribute flags: ([0-9A-Fa-f]+)", info)[1], 16),
                "name": re.search(r"Partition name: '(.*)'", info)[1],
            }
    return parts


def assert_sgdisk_agrees(disk: Path) -> None:
    """sgdisk -v finds no problem and -p/-i list exactly our table, attributes included."""
    fd = gpt.open_disk(disk, writable=False)
    try:
        table = gpt.read_table(fd).table
    finally:
        os.close(fd)
    ours = {n: {"start": e.first_lba, "end": e.last_lba, "type": e.type_guid,
                "unique": e.unique_guid, "attributes": e.attributes, "name": e.name}
            for n, e in table.partitions()}
    assert sgdisk_view(disk) == ours
    exe = need_sgdisk()
    for n, e in table.partitions():  # sgdisk -A agrees on each gptprio bit
        shown = subprocess.run([exe, "-A", f"{n}:show", str(disk)], capture_output=True,
                               text=True, check=True).stdout
        bits = {int(m) for m in re.findall(rf"^{n}:(\d+):1", shown, re.M)}
        assert bits == {b for b in range(64) if e.attributes >> b & 1}


def test_attribute_vector() -> None:
    f = gptprio.decode(0x5555555555555555)
    assert (f.priority, f.tries_left, f.successful) == (5, 5, True)
    a = gptprio.encode(0x5555555555555555, gptprio.Flags(0, 5, True))
    assert a == 0x5550555555555555
    a = gptprio.encode(a, gptprio.Flags(0, 0, True))
    assert a == 0x5500555555555555
    assert gptprio.encode(a, gptprio.Flags(0, 0, False)) == 0x5400555555555555


@given(st.integers(0, 2**64 - 1), st.integers(0, 15), st.integers(0, 15), st.booleans())
def test_encode_decode_roundtrip_keeps_other_bits(attrs: int, p: int, t: int, s: bool) -> None:
    flags = gptprio.Flags(p, t, s)
    out = gptprio.encode(attrs, flags)
    assert gptprio.decode(out) == flags
    mask = (0xF << 48) | (0xF << 52) | (1 << 56)
    assert out & ~mask == attrs & ~mask


def test_header_and_entries_roundtrip() -> None:
    table = gpt.new_table(16384, gpt.plan_layout(16384))
    raw = gpt.entries_bytes(table)
    header = gpt.parse_header(gpt.header_bytes(table, primary=True, entries_crc=gpt._crc(raw)))
    assert (header.current_lba, header.backup_lba, header.entries_lba) == (1, 16383, 2)
    assert gpt.parse_entries(header, raw) == table.entries
    bad = bytearray(gpt.header_bytes(table, primary=True, entries_crc=0))
    bad[40] ^= 1
    with pytest.raises(gpt.GptError, match="CRC"):
        gpt.parse_header(bytes(bad))


def test_create_disk_layout_agrees_with_sgdisk(tmp_path: Path) -> None:
    disk = tmp_path / "d.img"
    create_os_disk(disk, 8 << 20)
    assert_sgdisk_agrees(disk)
    with OsDisk(disk) as d:
        assert [d.sets[s].boot for s in "AB"] == [2, 6]
        assert (d.sets["B"].root, d.sets["B"].hash) == (7, 8)
        assert d.flags("A") == gptprio.Flags(1, 0, True)
        assert d.flags("B") == gptprio.Flags(0, 0, False)
        assert d.active == "A" and d.running_version() == "1.0.0"


def test_reads_what_sgdisk_writes(tmp_path: Path) -> None:
    """A table made by sgdisk itself: our reader finds both sets and the bits sgdisk set."""
    exe = need_sgdisk()
    disk = tmp_path / "s.img"
    with open(disk, "wb") as f:
        f.truncate(4 << 20)
    args = [exe, "-o"]
    types = [gpt.BOOT_TYPE, gpt.ROOT_TYPE, gpt.HASH_TYPE] * 2
    for n, t in enumerate(types, 1):
        args += [f"-n={n}:0:+256K", f"-t={n}:{t}"]
    args += ["-A=1:set:48", "-A=1:set:56", "-A=4:set:52", str(disk)]
    subprocess.run(args, check=True, capture_output=True)
    fd = gpt.open_disk(disk)
    try:
        table = gpt.read_table(fd).table
        sets = find_sets(table)
        assert (sets["A"].boot, sets["B"].boot) == (1, 4)
        assert gptprio.decode(table.entry(1).attributes) == gptprio.Flags(1, 0, True)
        assert gptprio.decode(table.entry(4).attributes) == gptprio.Flags(0, 1, False)
        gpt.write_table(fd, table.with_attributes(4, gptprio.encode(
            table.entry(4).attributes, gptprio.Flags(2, 1, False))))
    finally:
        os.close(fd)
    assert_sgdisk_agrees(disk)


def test_damaged_primary_falls_back_to_backup_and_is_repaired(tmp_path: Path) -> None:
    disk = tmp_path / "d.img"
    create_os_disk(disk, 4 << 20)
    fd = gpt.open_disk(disk)
    try:
        os.pwrite(fd, b"\xff" * 512, 3 * 512)  # inside the primary entry array
        result = gpt.read_table(fd)
        assert result.source == "backup" and not result.consistent
        gpt.write_table(fd, result.table)
        assert gpt.read_table(fd).consistent
    finally:
        os.close(fd)
    assert_sgdisk_agrees(disk)


def test_torn_primary_header_reads_backup(tmp_path: Path) -> None:
    disk = tmp_path / "d.img"
    create_os_disk(disk, 4 << 20)
    fd = gpt.open_disk(disk)
    try:
        before = gpt.read_table(fd).table
        new = before.with_attributes(6, gptprio.encode(0, gptprio.Flags(2, 1, False)))
        # what a kill between the backup's fsync and the primary's write leaves
        raw = gpt.entries_bytes(new)
        os.pwrite(fd, raw, (new.last_lba - 32) * 512)
        os.pwrite(fd, gpt.header_bytes(new, primary=False, entries_crc=gpt._crc(raw)),
                  new.last_lba * 512)
        assert gpt.read_table(fd).table == before  # primary intact: old state
        os.pwrite(fd, b"\0" * 100, 512)  # primary header torn: new state from the backup
        assert gpt.read_table(fd).table == new
    finally:
        os.close(fd)


def test_no_table_is_an_error(tmp_path: Path) -> None:
    disk = tmp_path / "blank.img"
    disk.write_bytes(b"\0" * (1 << 20))
    fd = gpt.open_disk(disk)
    try:
        with pytest.raises(gpt.GptError, match="no valid GPT"):
            gpt.read_table(fd)
    finally:
        os.close(fd)


def test_device_names() -> None:
    assert device_name("/dev/xvda", 2) == "/dev/xvda2"
    assert device_name("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"
