"""The OS disk: its two partition sets, their gptprio flags, the running set, the boot simulator.

`OsDisk` is the imperative shell around `gpt` (table I/O) and `gptprio` (pure rules). It holds
an exclusive flock on the disk while open, so signpost, updog and the boot simulator never
interleave their read-modify-write of the table.

Which set is running:
* on a real host, from the running root as Bottlerocket's block-party does (`find_running`);
* on a disk image, from the boot record the simulator leaves in the first sector of the
  BIOS-BOOT partition (the simulated kernel command line: `booted=A`, `boot_partuuid=...`),
  written by `create-disk` and by every simulated boot.
"""

from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from updates import gpt, gptprio, osimage
from updates.gptprio import Flags, Sets

RECORD_MAGIC = b"RECONCILER-BOOTENV v1\n"
SET_NAMES = ("A", "B")


class DiskError(Exception):
    """The disk cannot be used as an OS disk (no two sets, unknown running set, ...)."""


@dataclass(frozen=True)
class PartitionSet:
    name: str
    boot: int  # partition numbers (1-based)
    root: int
    hash: int


def find_sets(table: gpt.Table) -> dict[str, PartitionSet]:
    """Set A = the first entry of each type (boot, root, hash), set B = the second."""
    found: dict[str, list[int]] = {"boot": [], "root": [], "hash": []}
    kinds = {gpt.BOOT_TYPE: "boot", gpt.ROOT_TYPE: "root", gpt.HASH_TYPE: "hash"}
    for number, entry in table.partitions():
        kind = kinds.get(entry.type_guid)
        if kind:
            found[kind].append(number)
    for kind, numbers in found.items():
        if len(numbers) < 2:
            raise DiskError(f"found {len(numbers)} {kind} partition(s); an OS disk needs two")
    return {name: PartitionSet(name, found["boot"][i], found["root"][i], found["hash"][i])
            for i, name in enumerate(SET_NAMES)}


def device_name(disk: str, number: int) -> str:
    """Linux's partition naming: `/dev/xvda` + 2, `/dev/nvme0n1` + p2 (files likewise)."""
    return f"{disk}{'p' if disk[-1:].isdigit() else ''}{number}"


def _record_bytes(set_name: str, partuuid: str) -> bytes:
    text = RECORD_MAGIC + f"booted={set_name}\nboot_partuuid={partuuid}\n".encode()
    return text.ljust(gpt.SECTOR, b"\0")


def _parse_record(sector: bytes) -> dict[str, str] | None:
    if not sector.startswith(RECORD_MAGIC):
        return None
    body = sector[len(RECORD_MAGIC):].split(b"\0", 1)[0].decode(errors="replace")
    return dict(line.split("=", 1) for line in body.splitlines() if "=" in line)


class OsDisk:
    """An open OS disk (exclusively locked until `close()`)."""

    def __init__(self, path: Path | str, *, active_partition: int | None = None,
                 writable: bool = True) -> None:
        self.path = str(path)
        try:
            self.fd = gpt.open_disk(self.path, writable)
        except OSError as e:
            raise DiskError(f"cannot open {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.read = gpt.read_table(self.fd)
            self.table = self.read.table
            self.sets = find_sets(self.table)
            self.active = self._active(active_partition)
        except BaseException:
            os.close(self.fd)
            raise

    # -- lifecycle

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1

    def __enter__(self) -> OsDisk:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- which set runs

    def _bios_boot(self) -> gpt.Entry | None:
        return next((e for _, e in self.table.partitions() if e.type_guid == gpt.BIOS_BOOT_TYPE),
                    None)

    def boot_record(self) -> dict[str, str] | None:
        entry = self._bios_boot()
        if entry is None:
            return None
        return _parse_record(os.pread(self.fd, gpt.SECTOR, entry.offset))

    def _active(self, active_partition: int | None) -> str | None:
        if active_partition is not None:
            for s in self.sets.values():
                if active_partition in (s.boot, s.root, s.hash):
                    return s.name
            raise DiskError(f"Active partition {device_name(self.path, active_partition)} not in "
                            "either detected partition set")
        record = self.boot_record()
        if record and record.get("booted") in SET_NAMES:
            return record["booted"]
        return None

    def require_active(self) -> str:
        if self.active is None:
            raise DiskError(f"{self.path}: cannot tell which partition set is running (no boot "
                            "record); boot the disk first: signpost --disk PATH boot")
        return self.active

    # -- flags

    def flags(self, set_name: str) -> Flags:
        return gptprio.decode(self.table.entry(self.sets[set_name].boot).attributes)

    def state(self) -> Sets:
        return Sets(self.flags("A"), self.flags("B"), self.require_active())

    def write_state(self, sets: Sets) -> None:
        """Persist the flags of both boot partitions (both GPT copies, fsynced)."""
        table = self.table
        for name in SET_NAMES:
            number = self.sets[name].boot
            attributes = gptprio.encode(table.entry(number).attributes, sets.get(name))
            table = table.with_attributes(number, attributes)
        self.write_table(table)

    def write_table(self, table: gpt.Table) -> None:
        gpt.write_table(self.fd, table)
        self.table = table

    def apply(self, operation: str) -> Sets:
        """Run one signpost operation and write the table."""
        sets = gptprio.OPERATIONS[operation](self.state())
        self.write_state(sets)
        return sets

    # -- partitions and images

    def entry(self, set_name: str, kind: str) -> gpt.Entry:
        return self.table.entry(getattr(self.sets[set_name], kind))

    def identity(self, set_name: str) -> dict[str, str] | None:
        """os-release fields of the image written in the set's root partition."""
        root = self.entry(set_name, "root")
        return osimage.read_header(self.fd, root.offset, root.size)

    def running_version(self) -> str | None:
        fields = self.identity(self.require_active()) or {}
        return fields.get("VERSION_ID")

    # -- boot simulator

    def boot(self) -> str | None:
        """Apply GRUB's gptprio rule, write the table, record and return the booted set."""
        if stat.S_ISBLK(os.fstat(self.fd).st_mode):
            # The record goes into BIOS-BOOT, which on a real disk holds the bootloader.
            raise DiskError(f"{self.path} is a block device: the boot simulator only runs on "
                            "a disk image file (on a real disk, the bootloader boots)")
        boots = [(n, e) for n, e in self.table.partitions() if e.type_guid == gpt.BOOT_TYPE]
        chosen, after = gptprio.grub_select([gptprio.decode(e.attributes) for _, e in boots])
        if chosen is None:
            return None
        number, entry = boots[chosen]
        table = self.table.with_attributes(number, gptprio.encode(entry.attributes,
                                                                  after[chosen]))
        if table != self.table or not self.read.consistent:
            self.write_table(table)
        name = next((s.name for s in self.sets.values() if s.boot == number), None)
        if name is None:
            raise DiskError(f"GRUB picked partition {number}, which is in neither set")
        self.write_boot_record(name)
        return name

    def write_boot_record(self, set_name: str) -> None:
        entry = self._bios_boot()
        if entry is None:
            raise DiskError(f"{self.path} has no BIOS-BOOT partition for the boot record")
        boot = self.entry(set_name, "boot")
        os.pwrite(self.fd, _record_bytes(set_name, str(boot.unique_guid)), entry.offset)
        os.fsync(self.fd)
        self.active = set_name

    # -- status

    def status_text(self) -> str:
        lines = [f"OS disk: {self.path}"]
        for name in SET_NAMES:
            s = self.sets[name]
            parts = " ".join(f"{k}={device_name(self.path, getattr(s, k))}"
                             for k in ("boot", "root", "hash"))
            lines.append(f"Set {name}:   {parts} {self.flags(name).describe()}")
        lines.append(f"Active:  Set {self.require_active()}")
        nxt = gptprio.signpost_next(self.flags("A"), self.flags("B"))
        lines.append(f"Next:    {'Set ' + nxt if nxt else 'None'}")
        return "\n".join(lines)


def create_os_disk(path: Path | str, size: int, *, version: str = "1.0.0",
                   variant: str = "aws-dev", arch: str | None = None) -> None:
    """A disk image with both sets; set A holds `version` and runs (priority 1, successful).

    Set A gets a complete image set (root, verity hash tree, boot: `osimage.build_set`), so a
    rollback to it passes the same checks as an update."""
    table = gpt.create_disk(path, size)
    sets = find_sets(table)
    attrs = gptprio.encode(0, Flags(priority=1, tries_left=0, successful=True))
    table = table.with_attributes(sets["A"].boot, attrs)
    images = osimage.build_set(version, variant, arch=arch)
    fd = gpt.open_disk(path)
    try:
        for kind in osimage.KINDS:
            entry = table.entry(getattr(sets["A"], kind))
            data = getattr(images, kind)
            if len(data) > entry.size:
                raise DiskError(f"a {size}-byte disk is too small for the {kind} image")
            os.pwrite(fd, data, entry.offset)
        gpt.write_table(fd, table)
    finally:
        os.close(fd)
    with OsDisk(path) as disk:
        disk.write_boot_record("A")


# ---------------------------------------------------------------------------- block-party


def find_running(root: str = "/") -> tuple[str, int]:
    """(disk device, partition number) behind the running root, as Bottlerocket finds them.

    `/` is a dm-verity device; its first slave is the active root (or hash) partition.
    """
    dev = os.stat(root).st_dev
    base = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    slaves = sorted((base / "slaves").iterdir()) if (base / "slaves").is_dir() else []
    part = slaves[0] if slaves else base.resolve()
    part_dev = (part / "dev").read_text().strip() if slaves else \
        f"{os.major(dev)}:{os.minor(dev)}"
    part_dir = Path(f"/sys/dev/block/{part_dev}").resolve()
    number = int((part_dir / "partition").read_text())
    disk = "/dev/" + part_dir.parent.name
    if not stat.S_ISBLK(os.stat(disk).st_mode):
        raise DiskError(f"{disk} is not a block device")
    return disk, number


def open_os_disk(disk: str | None, *, writable: bool = True) -> OsDisk:
    """The given disk (image), or the running host's OS disk."""
    if disk:
        return OsDisk(disk, active_partition=_running_partition_on(disk), writable=writable)
    try:
        path, number = find_running()
    except (OSError, ValueError) as e:
        raise DiskError(f"cannot find the OS disk from the running root: {e}; pass --disk") \
            from None
    return OsDisk(path, active_partition=number, writable=writable)


def _running_partition_on(disk: str) -> int | None:
    """The running root's partition number when `disk` is the block device it lives on.

    A real OS disk says which set runs through the running root (block-party), never through a
    boot record: its BIOS-BOOT partition holds the bootloader.
    """
    try:
        if not stat.S_ISBLK(os.stat(disk).st_mode):
            return None
        path, number = find_running()
        return number if os.path.samefile(path, disk) else None
    except (OSError, ValueError):
        return None
