"""Pure commit planning: pending merge patches + live sections + defaults -> new sections, changes.

The store does the I/O; this module decides what a commit means. Work is scoped to the top-level
sections a transaction touches, so the cost of a commit follows the change, not the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.keys import flatten, is_under, merge_patch, split_key, unflatten

ROOT = "settings"
DEFAULT_SOURCE = "default"


class SchemaLike(Protocol):
    """What a commit needs from the schema (reconciler.schema.Schema satisfies it)."""

    def check(
        self,
        settings: Mapping[str, Any],
        sections: Iterable[str] | None = None,
        origin: str | None = None,
    ) -> None: ...

    def defaults(self) -> dict[str, Any]: ...


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
    sections: dict[str, Any]  # section -> new value (absent sections omitted)
    changes: tuple[Change, ...]  # value changes, sorted by key
    sources: dict[str, str]  # every key (re)written -> its source, even if the value is unchanged


def touched_sections(patches: Iterable[Patch]) -> list[str]:
    return sorted({name for patch in patches for name in patch.body})


def fill_defaults(value: Any, default: Any) -> Any:
    """Put back defaults missing from ``value`` (a deleted key brings its default back)."""
    if value is None:
        return default
    if isinstance(value, dict) and isinstance(default, dict):
        merged = dict(value)
        for name, fallback in default.items():
            merged[name] = fill_defaults(value.get(name), fallback)
        return merged
    return value


def _flat_section(section: str, value: Any) -> dict[str, Any]:
    return flatten({ROOT: {section: value}}) if value is not None else {}


def same_value(a: Any, b: Any) -> bool:
    """JSON equality: ``1``, ``1.0`` and ``true`` are different values."""
    return a == b and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def diff(
    old_flat: Mapping[str, Any], new_flat: Mapping[str, Any], sources: Mapping[str, str]
) -> tuple[Change, ...]:
    return tuple(
        Change(key, old_flat.get(key), new_flat.get(key), sources.get(key))
        for key in sorted(old_flat.keys() | new_flat.keys())
        if not same_value(old_flat.get(key), new_flat.get(key))
    )


def plan_commit(
    old_sections: Mapping[str, Any],
    patches: Sequence[Patch],
    defaults: Mapping[str, Any],
) -> CommitPlan:
    """Apply ``patches`` in order to the touched ``old_sections`` and fill defaults back in."""
    sections: dict[str, Any] = {}
    setters: dict[str, str] = {}
    old_flat: dict[str, Any] = {}
    for section in touched_sections(patches):
        value = old_sections.get(section)
        old_flat.update(_flat_section(section, value))
        for patch in patches:
            if section not in patch.body:
                continue
            value = merge_patch(value, patch.body[section])
            for key, leaf in flatten({ROOT: {section: patch.body[section]}}).items():
                if leaf is None:
                    for owned in [k for k in setters if is_under(k, key)]:
                        del setters[owned]
                else:
                    setters[key] = patch.source
        if isinstance(value, dict) and not value:
            value = None
        value = fill_defaults(value, defaults.get(section))
        if value is not None:
            sections[section] = value

    new_flat: dict[str, Any] = {}
    for section, value in sections.items():
        new_flat.update(_flat_section(section, value))
    sources: dict[str, str] = {}
    for key, value in new_flat.items():
        if key in setters:
            sources[key] = setters[key]
        elif key not in old_flat or not same_value(old_flat[key], value):
            sources[key] = DEFAULT_SOURCE
    return CommitPlan(sections, diff(old_flat, new_flat, sources), sources)


def rollback_plan(live: Mapping[str, Any], target: Mapping[str, Any], source: str) -> CommitPlan:
    """Make ``live`` (flat) equal ``target`` (flat values of a past generation)."""
    sources = {k: source for k, v in target.items() if not same_value(live.get(k), v)}
    changes = diff(live, target, sources)
    touched = {split_key(c.key)[1] for c in changes}
    nested = unflatten({k: v for k, v in target.items() if split_key(k)[1] in touched}, strip=1)
    return CommitPlan(nested, changes, sources)
