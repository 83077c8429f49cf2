"""Applying an update: cache what the migrator needs, stream images into the inactive set, flip.

`update_image()` follows Bottlerocket's updog with the port's fixes:

1. read the first bytes of every image and refuse, before anything is touched, an image in a
   format we do not decode or one that does not fit its partition (`imageformat.preflight`:
   for an LZ4 frame, the decoded size its header declares);
2. `clear_inactive` and write the table *before* any image byte is written, so a half-written
   set can never boot;
3. for root, boot and hash: stream the TUF target straight into the partition (no temporary
   copy, no page cache: see `partition_writer`), verifying its signed length and hashes on the
   bytes as delivered and decoding an LZ4 frame on the way (`imageformat.DecodingSink`), then
   fsync;
4. check the written set as the boot will read it (`setcheck`: headers, sizes,
   `veritysetup verify`), and only then `mark_inactive_valid` and write the table.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuf.api.metadata import TargetFile

from hostcore import faults
from hostcore.durable import replace_file
from updates import gptprio, osimage
from updates.errors import UpdateError
from updates.imageformat import SNIFF_BYTES, DecodingSink, preflight
from updates.manifest import Manifest, Update, find_migrations
from updates.partition_writer import PartitionWriter
from updates.partitions import OsDisk
from updates.semver import Version
from updates.setcheck import check_set
from updates.tuf_client import TufClient

IMAGE_ORDER = ("root", "boot", "hash")
MANIFEST = "manifest.json"

Progress = Callable[[int, int], None]


def write_image(disk: OsDisk, set_name: str, kind: str, client: TufClient, info: TargetFile,
                progress: Progress | None = None) -> int:
    """Stream the verified target, decoded, into its partition and make it durable.

    The signed length and hashes are checked on the delivered stream (`copy_target` raises
    before `sync` on any mismatch), the format and the image's header on its first bytes; the
    set is marked valid only after this returns. Returns the decoded size.
    """
    entry = disk.entry(set_name, kind)
    head_size, check = osimage.head_check(kind, info.path)
    with PartitionWriter(disk.path, entry.offset, entry.size) as out:
        sink = DecodingSink(out, entry.size, info.path, check_head=check, head_size=head_size)
        client.copy_target(info, sink, progress=progress)
        decoded = sink.finish()
        faults.point(f"image-write:{kind}")
        out.sync()
    return decoded


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
    if gptprio.fallback_at_risk(sets):
        raise UpdateError(
            f"the running set {sets.active} has not been marked successful, and set {inactive} "
            f"is what the next boot falls back to: refusing to overwrite it (an update can "
            f"start once this boot is marked successful)")
    infos = {kind: client.get_target(getattr(update.images, kind)) for kind in IMAGE_ORDER}
    for kind, info in infos.items():
        entry = disk.entry(inactive, kind)
        if info.length > entry.size and not info.path.endswith(".lz4"):
            raise UpdateError(f"{kind} image {info.path} ({info.length} bytes) does not fit "
                              f"partition {disk.sets[inactive]} ({entry.size} bytes)")
        preflight(client.peek(info, SNIFF_BYTES), info.path, info.length, entry.size)
    disk.write_state(gptprio.clear_inactive(sets))
    _step(hook, "cleared")
    for kind in IMAGE_ORDER:
        write_image(disk, inactive, kind, client, infos[kind],
                    progress(f"{kind} image") if progress else None)
        _step(hook, f"wrote-{kind}")
    check_set(disk, inactive, version=str(update.version))
    _step(hook, "checked")
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


class ProgressFile:
    """Progress as JSON in a file (`{"image", "done", "total"}`), for a parent to poll.

    The API's update manager runs updog in a child process and reports what this file says in
    `/updates/status`. Replaced by rename, at most every 0.2 s and at each image's end.
    """

    def __init__(self, path: Path, label: str, also: Progress | None = None) -> None:
        self.path, self.label, self.also = path, label, also
        self.last = 0.0

    @classmethod
    def factory(cls, path: Path, also: Callable[[str], Progress] | None = None
                ) -> Callable[[str], Progress]:
        return lambda label: cls(path, label, also(label) if also else None)

    def __call__(self, done: int, total: int) -> None:
        if self.also:
            self.also(done, total)
        now = time.monotonic()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        import json

        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps({"image": self.label, "done": done, "total": total}))
            os.replace(tmp, self.path)
