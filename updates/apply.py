"""Applying an update: cache what the migrator needs, stream images into the inactive set, flip.

`update_image()` follows Bottlerocket's updog with the port's fixes:

1. check that every image fits its partition (nothing is touched otherwise);
2. `clear_inactive` and write the table *before* any image byte is written, so a half-written
   set can never boot;
3. for root, boot and hash: stream the verified TUF target straight into the partition
   (no temporary copy), fsync, read the partition back and check the signed hash;
4. only then `mark_inactive_valid` and write the table.

`update_flags()` (upgrade-to-inactive) and `revert_flags()` (cancel-upgrade) only edit flags.
Killed at any point, the disk still boots the running set, and running the same command again
starts over from step 1.

`cache_for_migrator()` copies `manifest.json`, the migration targets on the path between the
running and the new version, and the TUF metadata that signs them into the state dir before any
partition is touched; the migrator verifies them offline at the next boot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuf.api.metadata import TargetFile

from reconciler import faults
from reconciler.durable import replace_file
from updates import gptprio
from updates.errors import TamperedTargetError, UpdateError
from updates.manifest import Manifest, Update, find_migrations
from updates.partitions import OsDisk
from updates.semver import Version
from updates.tuf_client import TufClient

IMAGE_ORDER = ("root", "boot", "hash")
MANIFEST = "manifest.json"
READ_CHUNK = 1 << 20

Progress = Callable[[int, int], None]


class PartitionSink:
    """A write-only stream into one partition of an open disk (never past its end).

    It keeps a CRC-32 of what it wrote, so the read-back after fsync can check that the medium
    holds exactly the stream whose signed hash the TUF client verified (the cryptographic check
    is on the stream; the read-back checks the disk, at memory speed).
    """

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.fd, self.offset, self.size = fd, offset, size
        self.written = 0
        self.crc = 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.size:
            raise UpdateError(f"image larger than its partition ({self.size} bytes)")
        self.crc = zlib.crc32(data, self.crc)
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, self.offset + self.written)
            self.written += n
            view = view[n:]
        return len(data)


def write_image(disk: OsDisk, set_name: str, kind: str, client: TufClient, info: TargetFile,
                progress: Progress | None = None) -> None:
    entry = disk.entry(set_name, kind)
    if info.length > entry.size:
        raise UpdateError(f"{info.path} ({info.length} bytes) does not fit {kind} partition "
                          f"of set {set_name} ({entry.size} bytes)")
    sink = PartitionSink(disk.fd, entry.offset, entry.size)
    client.copy_target(info, sink, progress=progress)
    faults.point(f"image-write:{kind}")
    os.fsync(disk.fd)
    verify_read_back(disk.fd, entry.offset, info, sink)


def verify_read_back(fd: int, offset: int, info: TargetFile, sink: PartitionSink) -> None:
    """Read the partition back: its first ``info.length`` bytes must be the verified stream."""
    crc, remaining, pos = 0, info.length, offset
    while remaining:
        chunk = os.pread(fd, min(READ_CHUNK, remaining), pos)
        if not chunk:
            raise UpdateError(f"{info.path}: partition ended before the image did")
        crc = zlib.crc32(chunk, crc)
        pos += len(chunk)
        remaining -= len(chunk)
    if sink.written != info.length or crc != sink.crc:
        raise TamperedTargetError(
            f"{info.path}: the partition does not hold the verified image after fsync "
            f"(crc32 {crc:08x}, written {sink.crc:08x})")


@dataclass(frozen=True)
class Staged:
    set_name: str
    update: Update


def update_image(disk: OsDisk, client: TufClient, update: Update,
                 progress: Callable[[str], Progress | None] | None = None,
                 hook: Callable[[str], None] | None = None) -> Staged:
    """Write `update`'s images into the inactive set and mark it valid (see the module doc).

    `hook(step)` is called between steps (tests use it to stop the process there).
    """
    sets = disk.state()
    inactive = sets.inactive
    infos = {kind: client.get_target(getattr(update.images, kind)) for kind in IMAGE_ORDER}
    for kind, info in infos.items():
        entry = disk.entry(inactive, kind)
        if info.length > entry.size:
            raise UpdateError(f"{kind} image {info.path} ({info.length} bytes) does not fit "
                              f"partition {disk.sets[inactive]} ({entry.size} bytes)")
    disk.write_state(gptprio.clear_inactive(sets))
    _step(hook, "cleared")
    for kind in IMAGE_ORDER:
        write_image(disk, inactive, kind, client, infos[kind],
                    progress(f"{kind} image") if progress else None)
        _step(hook, f"wrote-{kind}")
    disk.write_state(gptprio.mark_inactive_valid(disk.state()))
    _step(hook, "marked-valid")
    return Staged(inactive, update)


def update_flags(disk: OsDisk) -> None:
    disk.apply("upgrade-to-inactive")


def revert_flags(disk: OsDisk) -> None:
    disk.apply("cancel-upgrade")


def _step(hook: Callable[[str], None] | None, name: str) -> None:
    if hook:
        hook(name)


# ---------------------------------------------------------------------------- migrator cache


@dataclass(frozen=True)
class MigrationCache:
    """Where the migrator's inputs are kept (persistent, next to updog's TUF cache)."""

    targets: Path  # manifest.json and migrations, as <sha256>.<name>
    metadata: Path  # timestamp.json, N.snapshot.json, N.targets.json, k.root.json

    @classmethod
    def under(cls, state_dir: Path) -> MigrationCache:
        return cls(Path(state_dir) / "migrations", Path(state_dir) / "migration-metadata")


def cache_for_migrator(client: TufClient, manifest: Manifest, running: Version,
                       target: Version, cache: MigrationCache) -> list[str]:
    """Cache manifest.json, the migrations between `running` and `target`, and the metadata.

    Raises (before anything is written) when the manifest has no migration chain.
    Returns the migration names.
    """
    names = find_migrations(manifest, running, target)
    cache.targets.mkdir(parents=True, exist_ok=True, mode=0o700)
    cache.metadata.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in [*names, MANIFEST]:
        info = client.get_target(name)
        dest = cache.targets / f"{info.hashes['sha256']}.{name.replace('/', '_')}"
        if not TufClient.is_cached(info, dest):
            client.download_target(info, dest)
    meta = client.metadata_dir
    versions = {}
    for role in ("snapshot", "targets"):
        raw = (meta / f"{role}.json").read_bytes()
        versions[role] = _version_of(raw)
        replace_file(cache.metadata / f"{versions[role]}.{role}.json", raw)
    replace_file(cache.metadata / "timestamp.json", (meta / "timestamp.json").read_bytes())
    history = meta / "root_history"
    roots = sorted(history.glob("*.root.json")) if history.is_dir() else []
    for path in roots:
        replace_file(cache.metadata / path.name, path.read_bytes())
    if not roots:  # older python-tuf: only root.json
        raw = (meta / "root.json").read_bytes()
        replace_file(cache.metadata / f"{_version_of(raw)}.root.json", raw)
    return names


def _version_of(raw: bytes) -> int:
    import json

    return int(json.loads(raw)["signed"]["version"])


# ---------------------------------------------------------------------------- progress bar


class ProgressBar:
    """A one-line progress bar on stderr when it is a terminal (silent otherwise)."""

    def __init__(self, label: str, stream=None) -> None:  # noqa: ANN001 - a text stream
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - 50))
        frac = done / total if total else 1.0
        rate = done / max(now - self.start, 1e-6) / (1 << 20)
        bar = "#" * int(frac * width)
        self.stream.write(f"\r{self.label:<12} [{bar:<{width}}] {frac:6.1%} {rate:7.1f} MiB/s")
        if done >= total:
            self.stream.write("\n")
        with contextlib.suppress(Exception):
            self.stream.flush()
