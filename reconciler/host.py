"""Wiring of one host's parts: state dir, store, schema, renderer catalog, reconciler."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostcore.documents import DocumentError
from reconciler.boot import BootResult, boot
from reconciler.bootparams import BootParameters
from reconciler.containers import HostContainers
from reconciler.containers.podman import PodmanEngine
from reconciler.effects import read_observed
from reconciler.logs import get_logger
from reconciler.osinfo import os_info, os_release_ids
from reconciler.platform.facts import read_facts
from reconciler.platform.providers import Platform, providers_for
from reconciler.reconcile import Reconciler
from reconciler.redact import SCRUBBER, flat_secret_values, redact_plan, secret_values
from reconciler.schema import DEFAULT_VARIANT, VARIANTS, InvalidSettings, Schema
from reconciler.store import Store
from renderers.catalog import Catalog, CatalogError

if TYPE_CHECKING:
    from reconciler.migrator import BootInfo

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

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()

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

    def after_pass(self, receipt: dict[str, Any]) -> None:
        """Executors that act on a pass's outcome (the updates boot gate) see its receipt."""
        for executor in self.reconciler.executors:
            hook = getattr(executor, "after_pass", None)
            if hook is not None:
                hook(receipt)

    def serve_once(self, user_data: Sequence[str], platform: Platform | None = None) -> int:
        """Boot pipeline and one pass; the receipt goes to stdout."""
        if not self.boot(user_data, platform):
            return 1
        receipt = self.reconciler.run_pass(reason="boot")
        self.after_pass(receipt)
        print(json.dumps(SCRUBBER.scrub(receipt), indent=2))
        return 0 if receipt["ok"] else 1

    def dry_run(
        self, settings: dict[str, Any] | None = None, changed: set[str] | None = None
    ) -> dict[str, Any]:
        """What a pass would do for ``settings`` (default: live), counting ``changed`` keys on
        top of those not applied yet; touches nothing."""
        generation = self.store.generation()
        if settings is None:
            settings = self.store.live_document()
        changed = self.store.changed_since(self.store.applied_generation()) | (changed or set())
        plan = self.reconciler.plan_for(settings, generation, changed)
        # Read as the pass reads: confined to the root, never through a symlink or a FIFO.
        observed = read_observed(self.root, [action.path for action in plan.files])
        files = []
        for action in plan.files:
            old = observed[action.path]
            files.append(
                {
                    "name": action.name,
                    "path": action.path,
                    "reason": action.reason,
                    "diff": action.diff(old.content if old else None),
                }
            )
        result = {
            "generation": generation,
            "files": files,
            "services": [
                {
                    "name": s.service,
                    "reason": s.reason,
                    "skipped": s.skipped,
                    "changed_settings": list(s.changed_settings),
                }
                for s in plan.services
            ],
            "errors": dict(plan.errors),
            **{e.name: e.plan(settings) for e in self.reconciler.executors},
        }
        return redact_plan(self.schema, result, self.secret_values(settings))

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


def open_host(
    state_dir: Path,
    root: Path | None = None,
    variant: str | None = None,
    renderers: Path | None = None,
    disk: str | None = None,
) -> Host:
    """Open (or create) a host's state dir; ``renderers`` replaces the built-in catalog.

    With ``disk`` (the OS disk or a disk image with the A/B sets), the booted set's version is
    the OS version, the store is migrated to it before it is opened, and updates are managed.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    root = Path(root) if root else state_dir / "root"
    root.mkdir(parents=True, exist_ok=True)
    boot_info = _prepare_boot(state_dir, root, disk) if disk else None
    store = Store(state_dir / "store.db")
    try:
        recorded = store.get_meta(VARIANT_META)
        if variant and recorded and variant != recorded:
            raise HostError(f"{state_dir} holds a {recorded} host, not {variant}")
        variant = variant or recorded or DEFAULT_VARIANT
        if variant not in VARIANTS:
            raise HostError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        if not recorded:
            store.set_meta(VARIANT_META, variant)
        schema = Schema.load(variant)
        catalog = _catalog(schema, renderers, os_release_ids(root))
    except BaseException:
        store.close()
        raise
    version = boot_info.version if boot_info else None
    reconciler = Reconciler(store, catalog, root, os_info(variant, version))
    if disk and version:
        from reconciler.updates_executor import UpdatesExecutor

        reconciler.executors.append(
            UpdatesExecutor.for_host(
                store, root, disk, os_env={"OS_VERSION_ID": version, "OS_VARIANT_ID": variant}
            )
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
    reconciler.executors.append(HostContainers(state_dir, engine=engine))
    if "boot" in schema.sections:
        reconciler.executors.append(BootParameters(root))
    return Host(state_dir, root, store, schema, catalog, reconciler)


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
            schema.variant, metadata, templates, known_variants=VARIANTS, defines=schema.defines,
            distributions=distributions,
        )
    except CatalogError as error:
        raise HostError(f"renderer metadata: {error}") from None
