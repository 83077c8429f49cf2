"""GUID partition tables: parse, serialize, read from and write to a disk (or disk image file).

Pure part: `parse_header`, `parse_entries`, `serialize`, `plan_layout` work on bytes and plain
data. Shell part: `read_table`, `write_table`, `create_disk` do the I/O with `os.pread`/`pwrite`
and fsync.

Writes are crash-safe: the backup copy (entry array, then header at the last LBA) is written
and fsynced first, then the primary (entry array at LBA 2, header at LBA 1). A reader takes the
primary when its header and array CRCs are good and falls back to the backup otherwise, so a kill
at any byte leaves either the old table or the new one readable, never a mix. The next write
repairs the other copy. Sector size is 512 bytes (disk images and the usual virtual disks).
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hostcore import faults

SECTOR = 512
SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER_SIZE = 92
ENTRY_SIZE = 128
NUM_ENTRIES = 128
ENTRIES_SECTORS = NUM_ENTRIES * ENTRY_SIZE // SECTOR  # 32
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")
ZERO_GUID = b"\0" * 16
MAX_ENTRIES_BYTES = 1 << 20  # an entry array larger than this is damage, not a table

# Partition type GUIDs (canonical text; stored mixed-endian on disk).
BOOT_TYPE = uuid.UUID("6b636168-7420-6568-2070-6c616e657421")
ROOT_TYPE = uuid.UUID("5526016a-1a97-4ea4-b39a-b7c8c6ca4502")
HASH_TYPE = uuid.UUID("598f10af-c955-4456-6a99-7720068a6cea")
BIOS_BOOT_TYPE = uuid.UUID("21686148-6449-6e6f-744e-656564454649")
RESERVED_TYPE = uuid.UUID("8da63339-0007-60c0-c436-083ac8230908")  # Linux reserved


class GptError(Exception):
    """The disk holds no valid GUID partition table, or a request does not fit the disk."""


@dataclass(frozen=True)
class Entry:
    """One partition entry (128 bytes); an all-zero type GUID means an unused slot."""

    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int
    attributes: int
    name: str

    @property
    def used(self) -> bool:
        return self.type_guid.bytes_le != ZERO_GUID

    @property
    def sectors(self) -> int:
        return self.last_lba - self.first_lba + 1

    @property
    def offset(self) -> int:
        return self.first_lba * SECTOR

    @property
    def size(self) -> int:
        return self.sectors * SECTOR

    def pack(self) -> bytes:
        name = self.name.encode("utf-16-le")[:72]
        return _ENTRY.pack(self.type_guid.bytes_le, self.unique_guid.bytes_le, self.first_lba,
                           self.last_lba, self.attributes, name)

    @classmethod
    def unpack(cls, raw: bytes) -> Entry:
        t, u, first, last, attrs, name = _ENTRY.unpack(raw[:ENTRY_SIZE])
        text = name.decode("utf-16-le", errors="replace")
        return cls(uuid.UUID(bytes_le=t), uuid.UUID(bytes_le=u), first, last, attrs,
                   text.split("\0", 1)[0])


EMPTY = Entry(uuid.UUID(bytes_le=ZERO_GUID), uuid.UUID(bytes_le=ZERO_GUID), 0, 0, 0, "")


@dataclass(frozen=True)
class Table:
    """A whole table: disk identity, usable range and the full entry array (unused slots too)."""

    disk_guid: uuid.UUID
    last_lba: int  # the disk's last sector (where the backup header lives)
    first_usable: int
    last_usable: int
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    def partitions(self) -> list[tuple[int, Entry]]:
        """(1-based partition number, entry) of the used slots, in table order."""
        return [(i + 1, e) for i, e in enumerate(self.entries) if e.used]

    def entry(self, number: int) -> Entry:
        return self.entries[number - 1]

    def with_attributes(self, number: int, attributes: int) -> Table:
        entries = list(self.entries)
        entries[number - 1] = replace(entries[number - 1], attributes=attributes)
        return replace(self, entries=tuple(entries))


# ---------------------------------------------------------------------------- pure encoding


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def entries_bytes(table: Table) -> bytes:
    raw = b"".join(e.pack() for e in table.entries)
    return raw.ljust(NUM_ENTRIES * ENTRY_SIZE, b"\0")


def header_bytes(table: Table, *, primary: bool, entries_crc: int) -> bytes:
    """One 512-byte header sector (CRC filled in)."""
    current, backup = (1, table.last_lba) if primary else (table.last_lba, 1)
    entries_lba = 2 if primary else table.last_lba - ENTRIES_SECTORS
    fields = [SIGNATURE, REVISION, HEADER_SIZE, 0, 0, current, backup, table.first_usable,
              table.last_usable, table.disk_guid.bytes_le, entries_lba, NUM_ENTRIES, ENTRY_SIZE,
              entries_crc]
    header = _HEADER.pack(*fields)
    fields[3] = _crc(header)
    return _HEADER.pack(*fields).ljust(SECTOR, b"\0")


@dataclass(frozen=True)
class Header:
    current_lba: int
    backup_lba: int
    first_usable: int
    last_usable: int
    disk_guid: uuid.UUID
    entries_lba: int
    num_entries: int
    entry_size: int
    entries_crc: int


def parse_header(sector: bytes) -> Header:
    """A header sector, checked (signature, size, CRC); raises GptError."""
    if len(sector) < HEADER_SIZE or sector[:8] != SIGNATURE:
        raise GptError("no GPT signature")
    (_, _, size, crc, _, current, backup, first, last, guid, entries_lba, num, esize,
     ecrc) = _HEADER.unpack(sector[:HEADER_SIZE])
    if not HEADER_SIZE <= size <= len(sector):
        raise GptError(f"bad GPT header size {size}")
    check = bytearray(sector[:size])
    check[16:20] = b"\0\0\0\0"
    if _crc(bytes(check)) != crc:
        raise GptError("GPT header CRC mismatch")
    if esize < ENTRY_SIZE or esize % 8 or not 0 < num <= 1024 or num * esize > MAX_ENTRIES_BYTES:
        raise GptError(f"unsupported entry array ({num} entries of {esize} bytes)")
    return Header(current, backup, first, last, uuid.UUID(bytes_le=guid), entries_lba, num,
                  esize, ecrc)


def parse_entries(header: Header, raw: bytes) -> tuple[Entry, ...]:
    if _crc(raw) != header.entries_crc:
        raise GptError("GPT partition entry array CRC mismatch")
    return tuple(Entry.unpack(raw[i * header.entry_size:(i + 1) * header.entry_size])
                 for i in range(header.num_entries))


def protective_mbr(total_sectors: int) -> bytes:
    mbr = bytearray(SECTOR)
    size = min(total_sectors - 1, 0xFFFFFFFF)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


# ---------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class PartSpec:
    name: str
    type_guid: uuid.UUID
    sectors: int


def plan_layout(total_sectors: int) -> list[PartSpec]:
    """Bottlerocket's two-set layout scaled to the disk.

    1 BIOS-BOOT, 2-4 set A (boot, root, hash), 5 reserved A, 6-8 set B, 9 reserved B.
    Each set takes half the space: boot 1/5, root 3/5, hash 1/5.
    """
    align = 2048 if total_sectors * SECTOR >= 64 << 20 else 8
    first = _align_up(2 + ENTRIES_SECTORS, align)
    last_usable = total_sectors - 2 - ENTRIES_SECTORS
    small = align if align > 8 else 64
    space = last_usable + 1 - first - 3 * small
    per_set = (space // 2) // align * align
    boot = max(align, per_set // 5 // align * align)
    hash_ = boot
    root = per_set - boot - hash_
    if root < align or boot < 8:
        raise GptError(f"a {total_sectors * SECTOR}-byte disk is too small for two sets")
    specs = [PartSpec("BIOS-BOOT", BIOS_BOOT_TYPE, small)]
    for s in "AB":
        specs += [PartSpec(f"BOTTLEROCKET-BOOT-{s}", BOOT_TYPE, boot),
                  PartSpec(f"BOTTLEROCKET-ROOT-{s}", ROOT_TYPE, root),
                  PartSpec(f"BOTTLEROCKET-HASH-{s}", HASH_TYPE, hash_),
                  PartSpec(f"BOTTLEROCKET-RESERVED-{s}", RESERVED_TYPE, small)]
    return specs


def _align_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def new_table(total_sectors: int, specs: Sequence[PartSpec],
              attributes: dict[int, int] | None = None) -> Table:
    """A table placing `specs` one after the other from the first aligned usable sector."""
    align = 2048 if total_sectors * SECTOR >= 64 << 20 else 8
    lba = _align_up(2 + ENTRIES_SECTORS, align)
    last_usable = total_sectors - 2 - ENTRIES_SECTORS
    entries = []
    for number, spec in enumerate(specs, 1):
        end = lba + spec.sectors - 1
        if end > last_usable:
            raise GptError(f"partition {number} ({spec.name}) does not fit on the disk")
        entries.append(Entry(spec.type_guid, uuid.uuid4(), lba, end,
                             (attributes or {}).get(number, 0), spec.name))
        lba = end + 1
    entries += [EMPTY] * (NUM_ENTRIES - len(entries))
    return Table(uuid.uuid4(), total_sectors - 1, 2 + ENTRIES_SECTORS, last_usable,
                 tuple(entries))


# ---------------------------------------------------------------------------- I/O shell


def disk_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)  # works for regular files and block devices


def _read_copy(fd: int, header_lba: int) -> tuple[Header, tuple[Entry, ...]]:
    header = parse_header(os.pread(fd, SECTOR, header_lba * SECTOR))
    if header.current_lba != header_lba:
        raise GptError(f"GPT header at LBA {header_lba} says it lives at {header.current_lba}")
    total = disk_size(fd) // SECTOR
    check_geometry(header, total)
    raw = os.pread(fd, header.num_entries * header.entry_size, header.entries_lba * SECTOR)
    entries = parse_entries(header, raw)
    for number, entry in enumerate(entries, 1):
        if entry.used and not header.first_usable <= entry.first_lba <= entry.last_lba \
                <= header.last_usable:
            raise GptError(f"partition {number} ({entry.first_lba}-{entry.last_lba}) lies "
                           f"outside the usable sectors {header.first_usable}-{header.last_usable}")
    return header, entries


def check_geometry(header: Header, total: int) -> None:
    """A header whose CRC is good still has to describe this disk: usable range and entry array
    inside it, apart from each other (a damaged or hostile table is refused, never followed)."""
    array = -(-header.num_entries * header.entry_size // SECTOR)
    if not 1 < header.first_usable <= header.last_usable < total - 1:
        raise GptError(f"usable sectors {header.first_usable}-{header.last_usable} do not fit "
                       f"a disk of {total} sectors")
    first, last = header.entries_lba, header.entries_lba + array - 1
    if not 1 < first <= last < total - 1 or (
        first <= header.last_usable and last >= header.first_usable
    ):
        raise GptError(f"partition entry array at {first}-{last} is outside the table area")


@dataclass(frozen=True)
class ReadResult:
    table: Table
    source: str  # "primary" or "backup"
    consistent: bool  # both copies valid and equal


def read_table(fd: int) -> ReadResult:
    """The table from the primary copy, or from the backup when the primary is damaged."""
    total = disk_size(fd) // SECTOR
    copies: dict[str, tuple[Header, tuple[Entry, ...]]] = {}
    errors = []
    for name, lba in (("primary", 1), ("backup", total - 1)):
        try:
            copies[name] = _read_copy(fd, lba)
        except (GptError, OSError, struct.error) as e:
            errors.append(f"{name}: {e}")
    if not copies:
        raise GptError(f"no valid GPT on the disk ({'; '.join(errors)})")
    source = "primary" if "primary" in copies else "backup"
    header, entries = copies[source]
    if header.entry_size != ENTRY_SIZE or header.num_entries != NUM_ENTRIES:
        entries = tuple(Entry.unpack(e.pack()) for e in entries)[:NUM_ENTRIES]
        entries += (EMPTY,) * (NUM_ENTRIES - len(entries))
    table = Table(header.disk_guid, total - 1, header.first_usable, header.last_usable,
                  entries)
    consistent = len(copies) == 2 and copies["primary"][1] == copies["backup"][1]
    return ReadResult(table, source, consistent)


def write_table(fd: int, table: Table) -> None:
    """Both copies with fresh CRCs: backup first, fsync, then primary, fsync."""
    raw = entries_bytes(table)
    crc = _crc(raw)
    os.pwrite(fd, raw, (table.last_lba - ENTRIES_SECTORS) * SECTOR)
    os.pwrite(fd, header_bytes(table, primary=False, entries_crc=crc), table.last_lba * SECTOR)
    os.fsync(fd)
    faults.point("after-gpt-backup")
    os.pwrite(fd, raw, 2 * SECTOR)
    os.pwrite(fd, header_bytes(table, primary=True, entries_crc=crc), SECTOR)
    os.fsync(fd)
    faults.point("after-gpt-primary")


def open_disk(path: Path | str, writable: bool = True) -> int:
    return os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)


def create_disk(path: Path | str, size: int, attributes: dict[int, int] | None = None) -> Table:
    """A new disk image file of `size` bytes with the two-set layout (no partition contents)."""
    if size % SECTOR:
        raise GptError(f"disk size {size} is not a multiple of {SECTOR}")
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISBLK(os.stat(path).st_mode):
            raise GptError(f"{path} is a block device: only disk image files are created here")
    total = size // SECTOR
    table = new_table(total, plan_layout(total), attributes)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, protective_mbr(total), 0)
        write_table(fd, table)
    finally:
        os.close(fd)
    return table
