"""The boot pipeline: defaults -> user data (first boot only) -> generators -> one commit.

Like Bottlerocket's storewolf, early-boot-config and sundog, but in one atomic commit: invalid
user data fails the boot naming the file and key, and nothing of it is applied.

User data comes from providers tried in Bottlerocket's order (:mod:`reconciler.platform.providers`),
each applied over the earlier ones. A provider that could not answer (a metadata service that
did not answer within its deadline) does not stop the boot: the others are applied, the boot
says so, and that provider alone is tried again at the next boot, until it answers once. Each
key's provenance names the provider and where it read the value (``user-data:<provider>:<origin>``),
each generated key its generator (``generator:<name>``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostcore.documents import DocumentError
from hostcore.keys import flatten, unflatten
from reconciler.generators import generate, needs_platform, setting_generators
from reconciler.platform.facts import PlatformFacts
from reconciler.platform.imds import ImdsUnavailable
from reconciler.platform.providers import LocalFile, Provider, Unavailable
from reconciler.schema import InvalidSettings, Schema
from reconciler.store import CommitResult, NothingToCommit, Store
from reconciler.transaction import DEFAULT_SOURCE, ROOT, apply_changes

BOOT_TX = "boot"
USER_DATA_MARKER = "user-data-applied"
USER_DATA_SOURCE = "user-data"
GENERATOR_SOURCE = "generator"


@dataclass(frozen=True)
class ProviderReport:
    """What one user-data provider did at this boot (``GET /status``: ``user_data``)."""

    provider: str
    where: str
    result: str  # applied | none | unavailable | done (applied at an earlier boot)
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"provider": self.provider, "where": self.where, "result": self.result,
                "detail": self.detail}


@dataclass(frozen=True)
class BootResult:
    commit: CommitResult | None
    user_data: tuple[str, ...]  # origins applied in this boot
    user_data_ignored: tuple[str, ...]  # files given but not applied (not the first boot)
    providers: tuple[ProviderReport, ...] = ()
    platform: str | None = None  # why no instance metadata was read, when it was wanted
    generated: dict[str, str] = field(default_factory=dict)  # key -> generator

    @property
    def unavailable(self) -> list[str]:
        """One line per source the boot could not read."""
        lines = [f"{r.provider} ({r.where}): {r.detail}" for r in self.providers
                 if r.result == "unavailable"]
        return lines + ([f"instance metadata: {self.platform}"] if self.platform else [])


def missing_defaults(schema: Schema, live: dict[str, Any]) -> dict[str, Any]:
    """Defaults whose key is absent from live (new defaults reach existing hosts)."""
    defaults = flatten({ROOT: schema.defaults()})
    return unflatten({k: v for k, v in defaults.items() if k not in live}, strip=1)


def _pending(marker: Any) -> set[str] | None:
    """Providers still to read: None on the first boot (all of them)."""
    if marker is None:
        return None
    if isinstance(marker, dict):
        return set(marker.get("pending", ()))
    return set()  # written before providers existed: every source was read


def boot(
    store: Store,
    schema: Schema,
    user_data: Sequence[str | Path] = (),
    *,
    providers: Sequence[Provider] | None = None,
    platform_facts: Callable[[], PlatformFacts] | None = None,
) -> BootResult:
    """``providers`` default to the ``user_data`` files alone; ``platform_facts`` reads the
    instance metadata (raising ImdsUnavailable), asked only when a platform generator's key is
    unset."""
    if providers is None:
        providers = [LocalFile("20-local-file", tuple(Path(p) for p in user_data), True)]
    store.discard_all()  # transactions do not survive a reboot, as in Bottlerocket
    live = store.live()
    defaults = missing_defaults(schema, live)
    if defaults:
        store.add_patch(BOOT_TX, defaults, DEFAULT_SOURCE)

    marker = store.get_meta(USER_DATA_MARKER)
    pending = _pending(marker)
    first_boot = marker is None
    applied: list[str] = []
    reports: list[ProviderReport] = []
    still_pending: list[str] = []
    for provider in providers:
        if pending is not None and provider.name not in pending:
            reports.append(ProviderReport(provider.name, provider.describe(), "done"))
            continue
        try:
            found = provider.read()
        except Unavailable as error:
            still_pending.append(provider.name)
            reports.append(
                ProviderReport(provider.name, provider.describe(), "unavailable", str(error))
            )
            continue
        except DocumentError:
            store.discard(BOOT_TX)
            raise
        for document in found:
            try:
                store.add_patch(
                    BOOT_TX,
                    document.settings,
                    f"{USER_DATA_SOURCE}:{provider.name}:{document.origin}",
                    schema,
                )
            except InvalidSettings as error:
                store.discard(BOOT_TX)
                raise InvalidSettings(error.problems, origin=document.origin) from None
            applied.append(document.origin)
        reports.append(
            ProviderReport(
                provider.name,
                provider.describe(),
                "applied" if found else "none",
                ", ".join(d.origin for d in found),
            )
        )

    preview = store.preview(BOOT_TX, schema) if store.pending(BOOT_TX) else None
    after = apply_changes(live, preview.changes) if preview else dict(live)
    facts, why_not = None, None
    if platform_facts is not None and needs_platform(schema.variant, after):
        try:
            facts = platform_facts()
        except ImdsUnavailable as error:
            why_not = str(error)
    generated = generate(schema.variant, after, facts=facts)
    names = setting_generators(schema.variant)
    for key, value in generated.items():
        store.add_patch(
            BOOT_TX, unflatten({key: value}, strip=1), f"{GENERATOR_SOURCE}:{names[key]}", schema
        )

    meta = None
    if pending is None or pending:  # something was (to be) read at this boot: record it
        before = marker.get("applied", []) if isinstance(marker, dict) else []
        meta = {USER_DATA_MARKER: {"applied": [*before, *applied], "pending": still_pending}}
    try:
        result = store.commit(BOOT_TX, schema, meta=meta)
    except NothingToCommit:
        result = None
        if meta:
            store.set_meta(USER_DATA_MARKER, meta[USER_DATA_MARKER])
    ignored = () if first_boot else tuple(str(p) for p in user_data)
    return BootResult(
        result,
        tuple(applied),
        ignored,
        tuple(reports),
        why_not,
        {key: names[key] for key in generated},
    )

