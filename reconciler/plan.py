"""Pure planning: what to write and what to restart, from rendered files and what is on disk.

Why pure: the same function answers the dry run (``POST /tx/plan``) and drives the real pass, and
its properties (idempotence above all) are tested without touching a disk. No I/O here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from renderers.catalog import Catalog
from renderers.render import RenderResult

MISSING = "missing"
CONTENT_DIFFERS = "content differs"
MODE_DIFFERS = "mode differs"


@dataclass(frozen=True)
class ObservedFile:
    """A regular file found at a configuration file's path under the root."""

    content: bytes
    mode: int


@dataclass(frozen=True)
class FileAction:
    """Write ``content`` with ``mode`` to ``path`` because of ``reason``.

    ``old`` is what was on disk when planned (the dry run's diff); ``drift`` is true when the
    last pass rendered this very content, so what is on disk was changed by hand.
    """

    name: str
    path: str
    content: bytes
    mode: int
    reason: str
    old: bytes | None = field(default=None, compare=False, repr=False)
    drift: bool = False

    def diff(self, old: bytes | None = None) -> str:
        return unified_diff(self.path, self.old if old is None else old, self.content)


@dataclass(frozen=True)
class ServiceAction:
    """Run ``commands`` for ``service``; ``skipped`` when the sandbox must not run them."""

    service: str
    commands: tuple[tuple[str, ...], ...]
    reason: str
    changed_settings: tuple[str, ...]
    skipped: bool

    @property
    def environment(self) -> dict[str, str]:
        """The environment the commands get (Bottlerocket's ``CHANGED_SETTINGS``)."""
        return {"CHANGED_SETTINGS": " ".join(self.changed_settings)}


@dataclass(frozen=True)
class Plan:
    """Actions for generation ``generation``, in execution order (files, then services).

    ``held`` names services that are neither written nor restarted because one of their files
    failed to render (its reason is in ``errors``): a service's files change together or not at
    all, so the next pass after the fix writes them and restarts it. A restart owed by a held
    service should stay owed.
    """

    generation: int
    files: tuple[FileAction, ...]
    services: tuple[ServiceAction, ...]
    unchanged: tuple[str, ...]
    errors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    held: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to write and nothing to run (render errors are reported, not actions)."""
        return not self.files and not self.services


def unified_diff(path: str, old: bytes | None, new: bytes) -> str:
    """The dry run's diff of one file; binary content is summarized, not dumped."""
    try:
        old_text = "" if old is None else old.decode("utf-8")
        new_text = new.decode("utf-8")
    except UnicodeDecodeError:
        return f"Binary files a{path} and b{path} differ\n"
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile="/dev/null" if old is None else f"a{path}",
        tofile=f"b{path}",
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


def _file_reason(content: bytes, mode: int, observed: ObservedFile | None) -> str | None:
    if observed is None:
        return MISSING
    if observed.content != content:
        return CONTENT_DIFFERS
    if observed.mode != mode:
        return MODE_DIFFERS
    return None


def _settled_filter(
    catalog: Catalog, settled: Mapping[str, int], changed_after: Mapping[int, Collection[str]]
) -> Callable[[str], bool]:
    """``wanted(service)``: False when ``service`` settled at a generation after which no key
    concerning it changed."""
    affected: dict[int, set[str]] = {}

    def wanted(service: str) -> bool:
        since = settled.get(service)
        if since is None:
            return True
        if since not in affected:  # services settled at the same generation share the work
            by_key = catalog.affected_services(sorted(changed_after.get(since, ())))
            affected[since] = {name for names in by_key.values() for name in names}
        return service in affected[since]

    return wanted


def plan(
    generation: int,
    rendered: RenderResult,
    observed: Mapping[str, ObservedFile | None],
    catalog: Catalog,
    changed_keys: Iterable[str],
    owed: Iterable[str] = (),
    sandbox: bool = True,
    settled: Mapping[str, int] | None = None,
    changed_after: Mapping[int, Collection[str]] | None = None,
    last_rendered: Mapping[str, bytes] | None = None,
) -> Plan:
    """Compute the actions that converge the host on ``rendered`` (observed is keyed by path).

    A service runs its commands when one of its files is written, when a changed key concerns it
    (even with no files), or when a restart is ``owed`` from an interrupted pass. Order is sorted
    by name so receipts and dry runs are deterministic.

    ``changed_keys`` count from the last *successful* receipt, so a pass that restarted (and
    settled) a service but died or failed before its receipt would restart it again for the
    same keys: a service ``settled`` at generation S is restarted for settings only when a key
    changed after S (``changed_after[S]``) concerns it. A file to write or an owed restart
    always restarts it. ``last_rendered`` (file name -> content the previous pass rendered)
    tells drift (a hand edit) from a settings change.
    """
    held = sorted(
        s.name for s in catalog.services.values()
        if any(f in rendered.errors for f in s.configuration_files)
    )
    held_files = {f for name in held for f in catalog.services[name].configuration_files}

    writes: list[FileAction] = []
    unchanged: list[str] = []
    for name in sorted(rendered.files):
        if name in held_files:
            continue
        item = rendered.files[name]
        on_disk = observed.get(item.path)
        reason = _file_reason(item.content, item.mode, on_disk)
        if reason is None:
            unchanged.append(name)
        else:
            drift = (last_rendered or {}).get(name) == item.content
            old = on_disk.content if on_disk else None
            writes.append(FileAction(name, item.path, item.content, item.mode, reason, old, drift))

    by_key = catalog.affected_services(sorted(set(changed_keys)))
    reasons: dict[str, list[str]] = {}
    changed_for: dict[str, list[str]] = {}
    written = [w.name for w in writes]
    for service in sorted(catalog.services_for_files(written)):
        files = [f for f in catalog.services[service].configuration_files if f in written]
        reasons.setdefault(service, []).append("files changed: " + ", ".join(sorted(files)))
    for key, services in by_key.items():
        for service in services:
            changed_for.setdefault(service, []).append(key)
    owed = set(owed)
    since_settled = _settled_filter(catalog, settled or {}, changed_after or {})
    for service in sorted(changed_for):
        if service not in reasons and service not in owed and not since_settled(service):
            continue  # already restarted for these keys by a pass that left no receipt
        reasons.setdefault(service, []).append("settings changed")
    for service in sorted(owed):
        if service in catalog.services:
            reasons.setdefault(service, []).append("owed by an earlier pass")

    actions = []
    for name in sorted(reasons):
        if name in held:
            continue
        service = catalog.services[name]
        commands = service.commands
        actions.append(ServiceAction(
            service=name,
            commands=commands,
            reason="; ".join(reasons[name]),
            changed_settings=tuple(changed_for.get(name, ())),
            skipped=bool(commands) and sandbox and not service.sandbox_safe,
        ))
    return Plan(
        generation=generation,
        files=tuple(writes),
        services=tuple(actions),
        unchanged=tuple(unchanged),
        errors=MappingProxyType(dict(sorted(rendered.errors.items()))),
        held=tuple(held),
    )
