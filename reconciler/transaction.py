"""Commit planning: pending merge patches + live settings + defaults -> changes to validate.

The store does the I/O; this module decides what a commit means. It reads live settings only
through a small ``LiveView`` (the keys a patch names, their ancestors and subtrees), so the cost of
a commit follows the change, not the size of the store or of the section it touches.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hostcore.keys import flatten, join_key, split_key, unflatten

ROOT = "settings"
DEFAULT_SOURCE = "default"
# A table with at most this many keys below it is validated whole when one of its members
# changes, so ``required`` members of small tables (a host container's ``source``) hold. Bigger
# tables are user maps (labels, attributes): only their changed entries are validated. The schema
# puts no constraint across a map's entries, and live data was valid when committed.
SMALL_TABLE = 64


class SchemaLike(Protocol):
    """What a commit needs from the schema (reconciler.schema.Schema satisfies it)."""

    def check(
        self,
        settings: Mapping[str, Any],
        sections: Iterable[str] | None = None,
        origin: str | None = None,
    ) -> None: ...

    def defaults(self) -> dict[str, Any]: ...


class LiveView(Protocol):
    """Read access to live settings (flat, full keys)."""

    def value(self, key: str) -> Any:
        """The value at ``key``, or None when absent."""

    def below(self, key: str, limit: int | None = None) -> dict[str, Any]:
        """Keys strictly below ``key`` (at most ``limit`` of them)."""


@dataclass(frozen=True)
class Patch:
    """One PATCH body (the inside of ``settings``) and who sent it."""

    source: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Change:
    """A key whose value changed; ``None`` stands for absent (JSON null is never a value)."""

    key: str
    old: Any
    new: Any
    source: str | None  # who set the new value; None when the key was removed


@dataclass(frozen=True)
class CommitPlan:
    changes: tuple[Change, ...]  # value changes, sorted by key
    sources: dict[str, str]  # every key (re)written -> its source, even if the value is unchanged
    to_validate: dict[str, Any]  # the part of the new settings the schema must check (nested)
    sections: tuple[str, ...]  # top-level sections touched


def same_value(a: Any, b: Any) -> bool:
    """JSON equality: ``1``, ``1.0`` and ``true`` are different values."""
    return a == b and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def touched_sections(patches: Iterable[Patch]) -> list[str]:
    return sorted({name for patch in patches for name in patch.body})


class _Overlay:
    """Live settings with the transaction's writes on top (None marks a removed key)."""

    def __init__(self, live: LiveView):
        self.live = live
        self.writes: dict[str, Any] = {}
        self._descendants: dict[str, set[str]] = {}  # ancestor -> written keys below it
        self.log: set[str] | None = None  # keys written while set (one patch's, for a PATCH)

    def value(self, key: str) -> Any:
        return self.writes[key] if key in self.writes else self.live.value(key)

    def below(self, key: str, limit: int | None = None) -> dict[str, Any]:
        found = {k: v for k, v in self.live.below(key, limit).items() if k not in self.writes}
        written = (k for k in self._descendants.get(key, ()) if self.writes[k] is not None)
        for k in itertools.islice(written, limit):
            found[k] = self.writes[k]
        return found if limit is None else dict(itertools.islice(found.items(), limit))

    def write(self, key: str, value: Any) -> None:
        if self.log is not None:
            self.log.add(key)
        if key not in self.writes:
            segments = split_key(key)
            for depth in range(1, len(segments)):
                self._descendants.setdefault(join_key(segments[:depth]), set()).add(key)
        self.writes[key] = value

    def remove_subtree(self, key: str) -> list[str]:
        removed = [key] if self.value(key) is not None else []
        removed += list(self.below(key))
        for gone in removed:
            self.write(gone, None)
        return removed

    def set(self, key: str, value: Any) -> list[str]:
        """Set a leaf; a table below it or a leaf above it gives way (merge-patch semantics)."""
        removed = list(self.below(key))
        segments = split_key(key)
        for depth in range(2, len(segments)):
            ancestor = join_key(segments[:depth])
            if self.value(ancestor) is not None:
                removed.append(ancestor)
        for gone in removed:
            self.write(gone, None)
        self.write(key, value)
        return removed


@dataclass
class Replay:
    """Pending patches applied in order over live settings, before defaults: what a commit (or
    the next PATCH of the transaction) builds on. ``last`` holds the keys the latest patch
    wrote, ``sections`` every section the patches touched."""

    overlay: _Overlay
    setters: dict[str, str]
    sections: set[str]
    last: set[str]
    last_sections: set[str] = field(default_factory=set)

    def copy(self, live: LiveView) -> Replay:
        """An independent copy reading ``live`` (the store's current snapshot)."""
        overlay = _Overlay(live)
        overlay.writes = dict(self.overlay.writes)
        overlay._descendants = {k: set(v) for k, v in self.overlay._descendants.items()}
        return Replay(overlay, dict(self.setters), set(self.sections), set())


def replay(live: LiveView, patches: Sequence[Patch], start: Replay | None = None) -> Replay:
    """Apply ``patches`` in order over ``live`` (or over ``start``, which is changed)."""
    state = start or Replay(_Overlay(live), {}, set(), set())
    overlay, setters = state.overlay, state.setters
    for patch in patches:
        overlay.log = state.last = set()
        state.sections.update(patch.body)
        state.last_sections = set(patch.body)
        for table in _tables(patch.body, (ROOT,)):  # a table in a patch replaces a leaf there
            if overlay.value(table) is not None:
                overlay.write(table, None)
                setters.pop(table, None)
        for key, leaf in flatten({ROOT: patch.body}).items():
            if leaf is None:
                gone = overlay.remove_subtree(key)
            else:
                gone = overlay.set(key, leaf)
                setters[key] = patch.source
            for removed in gone:
                setters.pop(removed, None)
    overlay.log = None
    return state


def plan_replay(
    live: LiveView, state: Replay, defaults: Mapping[str, Any], only_last: bool = False
) -> CommitPlan:
    """Defaults back where keys went missing, then the plan (``state`` is changed).

    ``only_last``: changes and validation cover only what the latest patch touched, and the
    defaults of its sections (a PATCH is checked at the cost of that PATCH, not of its whole
    transaction; the commit plans everything)."""
    overlay, setters = state.overlay, state.setters
    sections = sorted(state.sections)
    wanted: set[str] | None = None
    if only_last:
        wanted = set(state.last)
        sections = sorted(state.last_sections)
    for key, default in flatten(
        {ROOT: {s: defaults[s] for s in sections if s in defaults}}
    ).items():
        if (
            overlay.value(key) is None
            and not overlay.below(key, 1)
            and not _leaf_above(overlay, key)
        ):
            overlay.write(key, default)
            setters[key] = DEFAULT_SOURCE
            if wanted is not None:
                wanted.add(key)
    keys = overlay.writes if wanted is None else [k for k in overlay.writes if k in wanted]
    olds = {key: live.value(key) for key in keys}  # one query per written key
    changes = tuple(
        Change(key, olds[key], overlay.writes[key],
               setters.get(key) if overlay.writes[key] is not None else None)
        for key in sorted(keys)
        if not same_value(olds[key], overlay.writes[key])
    )
    touched = {c.key for c in changes} | (
        set(setters) if wanted is None else {k for k in setters if k in wanted}
    )
    return CommitPlan(changes, setters, _validation_view(overlay, touched), tuple(sections))


def plan_commit(
    live: LiveView, patches: Sequence[Patch], defaults: Mapping[str, Any]
) -> CommitPlan:
    """Apply ``patches`` in order over ``live``, put defaults back where keys went missing."""
    return plan_replay(live, replay(live, patches), defaults)


def _tables(node: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[str]:
    for name, value in node.items():
        if isinstance(value, Mapping):
            yield join_key((*path, name))
            yield from _tables(value, (*path, name))


def _leaf_above(view: _Overlay, key: str) -> bool:
    segments = split_key(key)
    return any(view.value(join_key(segments[:d])) is not None for d in range(2, len(segments)))


def _validation_view(view: _Overlay, keys: Iterable[str]) -> dict[str, Any]:
    """Each touched key's new value, with its whole table when that table is small."""
    flat: dict[str, Any] = {}
    small_tables: dict[str, dict[str, Any] | None] = {}
    for key in keys:
        segments = split_key(key)
        value = view.value(key)
        if value is not None:
            flat[key] = value
        if len(segments) > 2:
            parent = join_key(segments[:-1])
            if parent not in small_tables:
                members = view.below(parent, SMALL_TABLE + 1)
                small_tables[parent] = members if len(members) <= SMALL_TABLE else None
                flat.update(small_tables[parent] or {})
    return unflatten(flat, strip=1)


def diff(
    old_flat: Mapping[str, Any], new_flat: Mapping[str, Any], sources: Mapping[str, str]
) -> tuple[Change, ...]:
    return tuple(
        Change(key, old_flat.get(key), new_flat.get(key), sources.get(key))
        for key in sorted(old_flat.keys() | new_flat.keys())
        if not same_value(old_flat.get(key), new_flat.get(key))
    )


def rollback_plan(live: Mapping[str, Any], target: Mapping[str, Any], source: str) -> CommitPlan:
    """Make ``live`` (flat) equal ``target`` (flat values of a past generation)."""
    sources = {k: source for k, v in target.items() if not same_value(live.get(k), v)}
    changes = diff(live, target, sources)
    touched = sorted({split_key(c.key)[1] for c in changes})
    view = unflatten({k: v for k, v in target.items() if split_key(k)[1] in touched}, strip=1)
    return CommitPlan(changes, sources, view, tuple(touched))


def apply_changes(flat: Mapping[str, Any], changes: Iterable[Change]) -> dict[str, Any]:
    """``flat`` settings with ``changes`` applied (for dry runs)."""
    result = dict(flat)
    for change in changes:
        if change.new is None:
            result.pop(change.key, None)
        else:
            result[change.key] = change.new
    return result
