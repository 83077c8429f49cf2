"""Is a partition set bootable? Its headers, sizes and dm-verity tree, read back off the disk.

updog runs `check_set` on the inactive set after writing an update and before its gptprio bits
change (a set that fails is never marked valid), and the daemon re-runs it periodically on the
set a rollback would boot (`RollbackAvailable`). See `updates.osimage` for the format.

On a real disk the partitions are block devices `veritysetup` reads directly; in a disk image
file they are byte ranges, copied (in the kernel: `copy_file_range`) to two temporary files
next to the image for the duration of the check.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from updates import osimage, verity
from updates.errors import UpdateError
from updates.partitions import OsDisk, device_name


class SetCheckError(UpdateError):
    """The set would not boot (the message says why)."""


@dataclass(frozen=True)
class SetReport:
    set_name: str
    version: str
    variant: str
    root_hash: str


def check_set(disk: OsDisk, set_name: str, *, version: str | None = None) -> SetReport:
    """Raise `SetCheckError` unless set `set_name` holds a complete, matching image set."""
    where = f"set {set_name} of {disk.path}"
    boot_entry, root_entry, hash_entry = (disk.entry(set_name, k) for k in ("boot", "root",
                                                                           "hash"))
    boot = osimage.read_boot_header(disk.fd, boot_entry.offset, boot_entry.size)
    root = osimage.read_header(disk.fd, root_entry.offset, root_entry.size)
    sb = verity.parse_superblock(os.pread(disk.fd, verity.SUPERBLOCK.size, hash_entry.offset))
    if boot is None or not boot.get("VERITY_ROOT_HASH"):
        raise SetCheckError(f"{where}: the boot partition holds no boot image header with a "
                            "VERITY_ROOT_HASH")
    if root is None or not root.get("VERSION_ID"):
        raise SetCheckError(f"{where}: the root partition holds no OS image header")
    if sb is None:
        raise SetCheckError(f"{where}: the hash partition holds no verity superblock")
    if boot.get("VERSION_ID") != root["VERSION_ID"]:
        raise SetCheckError(f"{where}: boot image is for {boot.get('VERSION_ID')}, root image "
                            f"for {root['VERSION_ID']}")
    if version is not None and root["VERSION_ID"] != version:
        raise SetCheckError(f"{where}: holds {root['VERSION_ID']}, expected {version}")
    if sb.data_size > root_entry.size or sb.data_size == 0:
        raise SetCheckError(f"{where}: the hash tree covers {sb.data_size} bytes, the root "
                            f"partition has {root_entry.size}")
    with _devices(disk, set_name, sb.data_size, hash_entry.size) as (data, tree):
        try:
            verity.verify(data, tree, boot["VERITY_ROOT_HASH"])
        except verity.VerityError as e:
            raise SetCheckError(f"{where}: {e}") from None
    return SetReport(set_name, root["VERSION_ID"], root.get("VARIANT_ID", ""),
                     boot["VERITY_ROOT_HASH"])


@contextlib.contextmanager
def _devices(disk: OsDisk, set_name: str, data_size: int, hash_size: int
             ) -> Iterator[tuple[str, str]]:
    numbers = disk.sets[set_name]
    if stat.S_ISBLK(os.fstat(disk.fd).st_mode):
        yield device_name(disk.path, numbers.root), device_name(disk.path, numbers.hash)
        return
    parent = Path(disk.path).resolve().parent
    try:
        tmp = tempfile.TemporaryDirectory(prefix=".setcheck-", dir=parent)
    except OSError:
        tmp = tempfile.TemporaryDirectory(prefix="setcheck-")
    with tmp as name:
        data, tree = Path(name) / "root", Path(name) / "hash"
        _copy(disk.fd, disk.entry(set_name, "root").offset, data_size, data)
        _copy(disk.fd, disk.entry(set_name, "hash").offset, hash_size, tree)
        yield str(data), str(tree)


def _copy(fd: int, offset: int, length: int, dest: Path) -> None:
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        done = 0
        while done < length:
            n = os.copy_file_range(fd, out, length - done, offset + done, done)
            if n == 0:
                raise SetCheckError(f"{dest}: short read at {offset + done}")
            done += n
    finally:
        os.close(out)
