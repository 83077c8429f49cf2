"""The migrator: at boot, before the daemon opens the store, bring it to the running OS version.

The store (`<state-dir>/store.db`) records the OS version its data is shaped for in its metadata
(`datastore-version`). When that differs from the version of the booted set:

1. read `manifest.json` and the migrations from the cache updog filled before it touched the
   partition, verified offline against the cached TUF metadata (expiry ignored, signatures and
   hashes enforced) and the trusted root shipped with the OS;
2. compute the path (`find_migrations`): forward when going up, reversed after a rollback;
3. copy the store with SQLite's backup API, migrate the copy (one new generation, source
   `migration:<from>-><to>`, so history and provenance show it) through the store's public
   `Store.migrate`, close it;
4. switch it in durably (`hostcore.durable.rename_over`: fsync, rename, fsync the directory).

A failure at any step leaves the old store untouched (the copy is discarded); the boot is then
not marked successful, and the bootloader falls back to the set whose version matches it.

It lives here, above `updates/` (whose migrations, manifest and cache it uses), because it opens
the settings store: `updates` never imports `reconciler` (the import-linter contract).

`prepare_boot()` is what the daemon runs before opening the store: it reads the booted set's
identity from the OS disk and runs the migrator to that version.

    python -m reconciler.migrator --state-dir DIR --disk PATH [--root DIR] [--trusted-root PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hostcore.durable import rename_over
from reconciler.store import Store
from updates.apply import MigrationCache
from updates.errors import UpdateError
from updates.manifest import ManifestError, find_migrations, parse_manifest
from updates.migrations import (
    Migration,
    MigrationError,
    OfflineTargets,
    apply_migrations,
    migrate_patch,
    parse_migration,
)
from updates.partitions import DiskError, open_os_disk
from updates.semver import Version, VersionError

DATASTORE_VERSION = "datastore-version"
STORE = "store.db"


@dataclass(frozen=True)
class Result:
    from_version: str | None
    to_version: str
    migrations: tuple[str, ...] = ()
    direction: str = "none"  # "forward" | "backward" | "none"
    changed: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        if self.direction == "none":
            return f"store already at {self.to_version}"
        return (f"store migrated {self.direction} {self.from_version} -> {self.to_version} "
                f"({len(self.migrations)} migration(s), {len(self.changed)} key(s) changed)")


def _remove(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def datastore_version(db: Path) -> str | None:
    """The version recorded in the store (None: no store, or never recorded)."""
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = ?",
                           (DATASTORE_VERSION,)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return None if row is None else json.loads(row[0])


def _checkpoint(db: Path) -> sqlite3.Connection:
    """A connection to the store with its WAL folded in; refuses when someone else has it."""
    src = sqlite3.connect(db, isolation_level=None)
    busy, _, _ = src.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        src.close()
        raise MigrationError(f"{db} is in use (stop the daemon before migrating)")
    return src


def migrate_store(db: Path, migrations: list[Migration], *, forward: bool, from_version: str,
                  to_version: str) -> tuple[str, ...]:
    """Migrate a copy of the store and switch it in atomically; returns the changed keys."""
    db = Path(db)
    tmp = db.with_name(f".{db.name}.migrating")
    _remove(tmp)
    src = _checkpoint(db)
    try:
        _backup(src, tmp)
    finally:
        src.close()  # last connection: SQLite removes the (empty) WAL of the old file
    try:
        changed = _migrate_copy(tmp, migrations, forward=forward, from_version=from_version,
                                to_version=to_version)
        rename_over(tmp, db)
    except BaseException:
        _remove(tmp)
        raise
    return changed


def _backup(src: sqlite3.Connection, dest: Path) -> None:
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()


def _migrate_copy(copy_path: Path, migrations: list[Migration], *, forward: bool,
                  from_version: str, to_version: str) -> tuple[str, ...]:
    """Migrate the store at `copy_path` in place (one transaction); returns the changed keys."""
    copy = Store(copy_path)
    try:
        new_live, new_meta = apply_migrations(copy.live(), copy.meta(), migrations, forward)
        new_meta[DATASTORE_VERSION] = to_version
        result = copy.migrate(  # one transaction: settings, history, pending, metadata
            new_live, new_meta, tx=f"migration-{to_version}",
            label=f"migration:{from_version}->{to_version}",
            rewrite_pending=lambda body: migrate_patch(body, migrations, forward))
    finally:
        copy.close()
    return result.changed


def rehearse(db: Path, trusted_root: bytes, cache: MigrationCache, to_version: str) -> Result:
    """Run the migrations to `to_version` on a throw-away copy of the store (pending
    transactions included); raises `MigrationError` with the reason when one fails.

    The update manager runs this before activation flips the partition flags: a store the next
    boot could not migrate would make that boot fail and fall back, so the flip is refused
    instead. The store may be in use (the daemon runs): the copy is an online SQLite backup.
    """
    db = Path(db)
    current = datastore_version(db)
    if current is None or current == to_version:
        return Result(current, to_version)
    try:
        src_v, dst_v = Version.parse(current), Version.parse(to_version)
        loaded = load_migrations(trusted_root, cache, src_v, dst_v)
    except (VersionError, ManifestError) as e:
        raise MigrationError(str(e)) from None
    forward = dst_v > src_v
    with tempfile.TemporaryDirectory(prefix=".rehearse-", dir=db.parent) as tmp:
        copy = Path(tmp) / STORE
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            _backup(src, copy)
        finally:
            src.close()
        try:
            changed = _migrate_copy(copy, [m for _, m in loaded], forward=forward,
                                    from_version=current, to_version=to_version)
        except MigrationError:
            raise
        except Exception as e:  # any failure of a migration refuses the flip
            raise MigrationError(f"{type(e).__name__}: {e}") from None
    return Result(current, to_version, tuple(n for n, _ in loaded),
                  "forward" if forward else "backward", changed)


def load_migrations(trusted_root: bytes, cache: MigrationCache, from_version: Version,
                    to_version: Version) -> list[tuple[str, Migration]]:
    """The verified migrations to run, in run order (already reversed when going down)."""
    cached = OfflineTargets(trusted_root, cache.metadata, cache.targets)
    manifest = parse_manifest(cached.read("manifest.json"))
    names = find_migrations(manifest, from_version, to_version)
    return [(n, parse_migration(cached.read(n), n)) for n in names]


def migrate_at_boot(state_dir: Path, running_version: str, trusted_root: bytes | None,
                    cache: MigrationCache) -> Result:
    """Bring `<state_dir>/store.db` to `running_version` (see the module docstring)."""
    db = Path(state_dir) / STORE
    current = datastore_version(db)
    if current is None:  # first boot, or a store from before versions were recorded
        db.parent.mkdir(parents=True, exist_ok=True)
        with Store(db) as store:
            store.set_meta(DATASTORE_VERSION, running_version)
        return Result(None, running_version)
    if current == running_version:
        return Result(current, running_version)
    try:
        src_v, dst_v = Version.parse(current), Version.parse(running_version)
    except VersionError as e:
        raise MigrationError(f"datastore or OS version: {e}") from None
    if trusted_root is None:
        raise MigrationError("no trusted root.json to verify the cached migrations with")
    try:
        loaded = load_migrations(trusted_root, cache, src_v, dst_v)
    except ManifestError as e:
        raise MigrationError(str(e)) from None
    forward = dst_v > src_v
    changed = migrate_store(db, [m for _, m in loaded], forward=forward, from_version=current,
                            to_version=running_version)
    return Result(current, running_version, tuple(n for n, _ in loaded),
                  "forward" if forward else "backward", changed)


def migrate_host(state_dir: Path, root: Path, running_version: str, *,
                 trusted_root: Path | None = None, updog_state: Path | None = None) -> Result:
    """`migrate_at_boot` with a host's layout: its root.json and updog's migration cache."""
    trusted = trusted_root or Path(root) / "usr/share/updog/root.json"
    cache = MigrationCache.under(updog_state or Path(root) / "var/lib/updog")
    return migrate_at_boot(Path(state_dir), running_version,
                           trusted.read_bytes() if trusted.exists() else None, cache)


@dataclass(frozen=True)
class BootInfo:
    version: str
    variant: str | None
    arch: str | None
    migration: Result


def prepare_boot(state_dir: Path, root: Path, disk: str | None,
                 updog_state: Path | None = None) -> BootInfo:
    """Identity of the booted set, and the store migrated to its version (raises on failure)."""
    with open_os_disk(disk, writable=False) as d:
        fields = d.identity(d.require_active()) or {}
    version = fields.get("VERSION_ID")
    if not version:
        raise DiskError("the booted set's root holds no OS image header (VERSION_ID)")
    result = migrate_host(state_dir, root, version, updog_state=updog_state)
    return BootInfo(version, fields.get("VARIANT_ID"), fields.get("ARCH"), result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="migrator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--disk", help="OS disk (default: the disk behind /)")
    parser.add_argument("--root", type=Path, default=None,
                        help="host filesystem prefix (default <state-dir>/root)")
    parser.add_argument("--trusted-root", type=Path, default=None,
                        help="root.json (default <root>/usr/share/updog/root.json)")
    parser.add_argument("--updog-state", type=Path, default=None,
                        help="updog state dir (default <root>/var/lib/updog)")
    parser.add_argument("--version", help="running OS version (default: from the disk)")
    args = parser.parse_args(argv)
    root = args.root or args.state_dir / "root"
    try:
        version = args.version
        if version is None:
            with open_os_disk(args.disk, writable=False) as disk:
                version = disk.running_version()
        if version is None:
            raise MigrationError("the running set holds no OS version")
        result = migrate_host(args.state_dir, root, version, trusted_root=args.trusted_root,
                              updog_state=args.updog_state)
    except (UpdateError, DiskError, OSError, sqlite3.Error) as e:
        print(f"migrator: {e}", file=sys.stderr)
        return 1
    print(f"migrator: {result.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
