"""Wiring of one host's parts: state dir, store, schema, renderer catalog, reconciler."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostcore.documents import DocumentError
from hostcore.keys import unflatten
from reconciler.boot import BootResult, boot
from reconciler.bootparams import BootParameters
from reconciler.containers import HostContainers
from reconciler.containers.bootstrap import BootstrapContainers
from reconciler.containers.podman import PodmanEngine
from reconciler.logs import get_logger
from reconciler.osinfo import os_info, os_release_ids
from reconciler.platform.facts import read_facts
from reconciler.platform.providers import Platform, providers_for
from reconciler.reconcile import Reconciler
from reconciler.redact import SCRUBBER, flat_secret_values, redact_plan, secret_values
from reconciler.reserve import StoreReserve
from reconciler.schema import (
    DEFAULT_VARIANT,
    VARIANTS,
    InvalidSettings,
    Schema,
    UnknownVariant,
    variant_family,
)
from reconciler.statelock import StateDirBusy, StateDirLock
from reconciler.store import Store
from reconciler.transaction import apply_changes
from renderers.catalog import Catalog, CatalogError

if TYPE_CHECKING:
    from reconciler.migrator import BootInfo
    from reconciler.updates_executor import UpdatesExecutor

VARIANT_META = "variant"
_log = get_logger("boot")


class HostError(Exception):
    """The state dir cannot be used as asked (wrong variant, unreadable...)."""


@dataclass
class Host:
    state_dir: Path
    root: Path
    store: Store
    schema: Schema
    catalog: Catalog
    reconciler: Reconciler
    boot_result: BootResult | None = None
    lock: StateDirLock | None = None  # held by a daemon (``exclusive``) until it exits
    reserve: StoreReserve | None = None  # the store's room on the state disk (a daemon's)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()
        if self.lock is not None:
            self.lock.release()

    @property
    def variant(self) -> str:
        return self.schema.variant

    def boot(self, user_data: Sequence[str], platform: Platform | None = None) -> bool:
        """The boot pipeline; on invalid user data, says which file and key and returns False.

        ``platform`` says how to reach the instance metadata service (default: only on EC2).
        """
        platform = platform or Platform()
        imds = platform.imds(self.variant)
        try:
            result = boot(
                self.store,
                self.schema,
                user_data,
                providers=providers_for(self.variant, self.root, user_data, imds),
                platform_facts=(lambda: read_facts(imds)) if imds else None,
            )
        except (InvalidSettings, DocumentError) as error:
            print(f"reconciler: invalid user data, nothing applied:\n{error}", file=sys.stderr)
            return False
        except sqlite3.Error as error:  # a full disk: one line, not a traceback
            print(f"reconciler: boot pipeline failed, nothing applied: {error}"
                  f"{_disk_hint(self.store.path)}", file=sys.stderr)
            return False
        self.boot_result = result
        for ignored in result.user_data_ignored:
            print(
                f"reconciler: {ignored}: user data is applied at first boot only; ignored",
                file=sys.stderr,
            )
        for line in result.unavailable:
            _log.warning("boot source unavailable", detail=line)
            print(f"reconciler: {line}; booting without it", file=sys.stderr)
        return True

    def run_bootstrap(self) -> bool:
        """The bootstrap containers of this boot, to completion; False when an essential one
        failed (the passes of this boot then say so, and the boot is not marked)."""
        if self.reconciler.bootstrap is None:
            return True
        return self.reconciler.bootstrap.run_at_boot(self.store.live_document())

    @property
    def containers(self) -> HostContainers | None:
        return self.reconciler.containers

    @property
    def updates(self) -> UpdatesExecutor | None:
        return self.reconciler.updates

    def after_pass(self, receipt: dict[str, Any]) -> None:
        """The updates boot gate acts on the first pass's outcome."""
        if self.updates is not None:
            self.updates.after_pass(receipt)

    def serve_once(
        self,
        user_data: Sequence[str],
        platform: Platform | None = None,
        desired: Sequence[str] = (),
        report: Callable[[dict[str, Any]], None] | None = None,
    ) -> int:
        """Boot pipeline, the desired-state files (``--desired``, as the daemon applies them at
        start), and one pass; the receipt (secrets scrubbed) goes to ``report``, by default to
        stdout as JSON. A desired file that is refused is named on stderr and no pass runs."""
        if not self.boot(user_data, platform):
            return 1
        if desired:
            from reconciler.events import Events
            from reconciler.sources.localfiles import DesiredFiles

            files = DesiredFiles(self.store, self.schema, Events(), desired)
            files.apply()
            if files.status["condition"] != "Applied":
                print(f"reconciler serve: desired-state files not applied (nothing changed): "
                      f"{files.status['reason']}", file=sys.stderr)
                return 1
        self.run_bootstrap()
        receipt = self.reconciler.run_pass(reason="boot")
        self.after_pass(receipt)
        scrubbed = SCRUBBER.scrub(receipt)
        if report is None:
            print(json.dumps(scrubbed, indent=2))
        else:
            report(scrubbed)
        return 0 if receipt["ok"] else 1

    def dry_run(self, tx: str | None = None) -> dict[str, Any]:
        """What a pass would do now, or once ``tx`` is committed: the same snapshot and the
        same decision (``Reconciler.decide``) as the pass; touches nothing. With ``tx``, its
        settings changes are in the answer too (secrets redacted)."""
        snapshot = self.store.snapshot(tx, self.schema)
        settings, pending = None, ()
        if snapshot.preview is not None:
            changes = snapshot.preview.changes
            settings = unflatten(apply_changes(dict(snapshot.live), changes), strip=1)
            pending = [c.key for c in changes]
        the_plan, _ = self.reconciler.decide(snapshot, settings, pending)
        files = the_plan.files
        result: dict[str, Any] = {
            "generation": the_plan.generation,
            "files": [
                {"name": a.name, "path": a.path, "reason": a.reason, "diff": a.diff()}
                for a in files.files
            ],
            "services": [
                {
                    "name": s.service,
                    "reason": s.reason,
                    "skipped": s.skipped,
                    "changed_settings": list(s.changed_settings),
                }
                for s in files.services
            ],
            "errors": dict(files.errors),
        }
        if self.updates is not None:
            result["updates"] = (
                self.updates.dry_run(the_plan.update) if the_plan.update is not None else []
            )
        if self.containers is not None:
            result["containers"] = (
                self.containers.dry_run(the_plan.containers)
                if the_plan.containers is not None else []
            )
        if self.reconciler.boot is not None and the_plan.boot is not None:
            result["boot"] = self.reconciler.boot.dry_run(the_plan.boot)
        for name, error in the_plan.broken.items():
            result[name] = [{"name": "", "action": "unknown", "reason": error}]
        if snapshot.preview is not None:
            result["settings"] = [
                {"key": c.key, "old": c.old, "new": c.new} for c in snapshot.preview.changes
            ]
            result["tx"] = tx
        shown = shown_settings(settings, snapshot)
        return redact_plan(self.schema, result, self.secret_values(shown))

    def secret_values(self, settings: dict[str, Any] | None = None) -> set[str]:
        """Secret values a plan may show: of ``settings``, the live settings and those applied
        (what the files on disk were rendered from)."""
        values = secret_values(self.schema, settings) | secret_values(
            self.schema, self.store.live_document()
        )
        applied = self.store.applied_generation()
        if 0 < applied <= self.store.generation():
            values |= flat_secret_values(self.schema, self.store.values_at(applied))
        return values


def shown_settings(settings: dict[str, Any] | None, snapshot: Any) -> dict[str, Any]:
    """The settings a dry run shows: those it previews, else the snapshot's live ones."""
    return settings if settings is not None else snapshot.settings


def open_host(
    state_dir: Path,
    root: Path | None = None,
    variant: str | None = None,
    renderers: Path | None = None,
    disk: str | None = None,
    *,
    exclusive: bool = False,
    create: bool = True,
    store_reserve: int | None = None,
    container_quota: int | None = None,
) -> Host:
    """Open (or create) a host's state dir; ``renderers`` replaces the built-in catalog.

    ``exclusive``: take the state dir's lock first (a daemon; ``HostError`` naming the holder's
    pid when another has it). ``create=False``: refuse a state dir without a store (read-only
    commands never create one).

    With ``disk`` (the OS disk or a disk image with the A/B sets), the booted set's version is
    the OS version, the store is migrated to it before it is opened, and updates are managed.

    ``store_reserve``: bytes kept for the store on the state disk (``reconciler.reserve``; a
    daemon's). ``container_quota``: each host container's persistent storage is a file system
    of its own of that many bytes (``reconciler.containers.storage``).
    """
    state_dir = Path(state_dir)
    if variant:
        try:
            variant_family(variant)  # a bad flag is named before the state dir is looked at
        except UnknownVariant as error:
            raise HostError(str(error)) from None
    if not create and not (state_dir / "store.db").is_file():
        raise HostError(f"{state_dir} holds no host (no store.db); nothing to read")
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = None
    if exclusive:
        try:
            lock = StateDirLock(state_dir).acquire()
        except StateDirBusy as error:
            raise HostError(str(error)) from None
    try:
        root = Path(root) if root else state_dir / "root"
        root.mkdir(parents=True, exist_ok=True)
        boot_info = _prepare_boot(state_dir, root, disk) if disk else None
        store = _open_store(state_dir / "store.db")
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    try:
        recorded = store.get_meta(VARIANT_META)
        if variant and recorded and variant != recorded:
            raise HostError(f"{state_dir} holds a {recorded} host, not {variant}")
        variant = variant or recorded or DEFAULT_VARIANT
        try:
            variant_family(variant)  # a one-line error for a name that is no variant
        except UnknownVariant as error:
            raise HostError(str(error)) from None
        if not recorded:
            store.set_meta(VARIANT_META, variant)
        schema = Schema.load(variant)
        catalog = _catalog(schema, renderers, os_release_ids(root))
    except BaseException:
        store.close()
        if lock is not None:
            lock.release()
        raise
    version = boot_info.version if boot_info else None
    reconciler = Reconciler(store, catalog, root, os_info(variant, version))
    if disk and version:
        from reconciler.updates_executor import UpdatesExecutor

        reconciler.updates = UpdatesExecutor.for_host(
            store, root, disk, os_env={"OS_VERSION_ID": version, "OS_VARIANT_ID": variant}
        )
    # Host containers: podman is only run once a host container is enabled (a missing podman is
    # then a failed step of that container, never a start-up error).
    def rendered(name: str) -> Path | None:  # where the catalog renders a registry file
        spec = catalog.files.get(name)
        return root / spec.path.lstrip("/") if spec else None

    engine = PodmanEngine(
        state_dir / "containers",
        registries_conf=rendered("registries-conf"),
        auth_file=rendered("containers-auth"),
        proxy_env=rendered("proxy-env"),
        ca_bundle=rendered("ca-bundle"),
    )
    host_containers = HostContainers(state_dir, engine=engine, storage_quota=container_quota)
    reconciler.containers = host_containers
    # Bootstrap containers run at boot, before the first pass; then they only report.
    reconciler.bootstrap = BootstrapContainers(
        state_dir, engine, store, schema, tools=host_containers)
    if "boot" in schema.sections:
        reconciler.boot = BootParameters(root)
    reserve = StoreReserve(state_dir, store_reserve) if store_reserve else None
    host_containers.reserve = reserve
    return Host(state_dir, root, store, schema, catalog, reconciler, lock=lock, reserve=reserve)


def _open_store(path: Path) -> Store:
    """The store, or a one-line HostError (a full disk cannot create the WAL: no traceback, and
    the store is intact once there is room)."""
    try:
        return Store(path)
    except sqlite3.Error as error:
        raise HostError(f"cannot open the store {path}: {error}{_disk_hint(path)}") from None


def _disk_hint(path: Path) -> str:
    try:
        usage = shutil.disk_usage(path.parent)
    except OSError:
        return ""
    if usage.free < 1024 * 1024:
        return f" (the file system of {path.parent} is full: {usage.free} bytes free)"
    return ""


def _prepare_boot(state_dir: Path, root: Path, disk: str) -> BootInfo:
    from reconciler.migrator import prepare_boot  # only a host with an OS disk needs it

    try:  # before the store is opened: the migrator switches it atomically
        return prepare_boot(state_dir, root, disk)
    except Exception as error:  # the boot does not count: the bootloader will fall back
        raise HostError(f"boot preparation on {disk} failed: {error}") from error


def _catalog(schema: Schema, renderers: Path | None, distributions: Sequence[str]) -> Catalog:
    """The built-in renderers, or a directory with metadata.toml and templates/ (and its own
    distributions/), checked against the variant's schema (every affected-by prefix must name
    one of its settings), with the facts of the root's distribution applied."""
    metadata, templates = (None, None) if renderers is None else (
        renderers / "metadata.toml", renderers / "templates")
    try:
        return Catalog.load(
            schema.family, metadata, templates, known_variants=VARIANTS, defines=schema.defines,
            distributions=distributions,
        )
    except CatalogError as error:
        raise HostError(f"renderer metadata: {error}") from None
