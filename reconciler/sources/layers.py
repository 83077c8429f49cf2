"""Layered desired-state documents of a fleet repository, merged and turned into one patch (pure).

Layout under the pointer's ``path`` (see examples/fleet-repo/README.md):
``common.{toml,yaml,yml,json}``, then ``groups/<group>.*`` for each group in order, then
``hosts/<host-id>.*``. Each layer is a user-data document (a top-level ``settings`` table), merged
in that order with RFC 7386 merge patch (``null`` deletes what an earlier layer set).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hostcore.keys import flatten, is_under, merge_patch, strip_nulls, unflatten

EXTENSIONS = (".toml", ".yaml", ".yml", ".json")
GIT_SOURCE_PREFIX = "git:"


@dataclass(frozen=True)
class Layer:
    origin: str  # path inside the repository
    settings: Mapping[str, Any]  # the inside of `settings`, may hold nulls


def layer_candidates(path: str, groups: Sequence[str], host_id: str | None) -> list[list[str]]:
    """For each layer in order, the file names that may hold it (first found wins)."""
    base = posixpath.normpath(path or ".")
    stems = [posixpath.join(base, "common")]
    stems += [posixpath.join(base, "groups", group) for group in groups]
    if host_id:
        stems.append(posixpath.join(base, "hosts", host_id))
    return [[posixpath.normpath(stem + ext) for ext in EXTENSIONS] for stem in stems]


def merge_layers(layers: Iterable[Layer]) -> dict[str, Any]:
    """The desired settings: every layer merged over the previous ones."""
    desired: Any = {}
    for layer in layers:
        desired = merge_patch(desired, layer.settings)
    return strip_nulls(desired) if isinstance(desired, dict) else {}


def declaring_layer(key: str, layers: Sequence[Layer]) -> str | None:
    """The last layer that sets ``key`` or a table above it (to name the file in errors)."""
    for layer in reversed(layers):
        for declared in flatten({"settings": layer.settings}):
            if is_under(key, declared) or is_under(declared, key):
                return layer.origin
    return None


def sync_patch(
    desired: Mapping[str, Any], sources: Mapping[str, str], owner: str = GIT_SOURCE_PREFIX
) -> dict[str, Any]:
    """Patch putting ``desired`` in place and pruning what the source declared before but no
    longer does.

    ``sources`` maps live keys to their source; keys owned by this source (their source starts
    with ``owner``, e.g. ``git:``) that ``desired`` does not declare are deleted, so they return
    to their defaults.
    """
    wanted = flatten({"settings": desired})
    patch = dict(wanted)
    for key, source in sources.items():
        if source.startswith(owner) and key not in wanted:
            patch[key] = None
    return unflatten(patch, strip=1)


def owned_keys(
    patch: Mapping[str, Any], sources_under: Callable[[str], Mapping[str, str]]
) -> list[str]:
    """Live keys owned by git that an API patch would change or delete.

    ``sources_under(key)`` gives the sources of the live keys at or under ``key``.
    """
    owned: set[str] = set()
    for touched in flatten({"settings": patch}):
        owned.update(
            k for k, s in sources_under(touched).items() if s.startswith(GIT_SOURCE_PREFIX)
        )
    return sorted(owned)
