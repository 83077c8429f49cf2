"""Layered desired-state documents of a fleet repository, merged and turned into one patch (pure).

Layout under the pointer's ``path`` (see examples/fleet-repo/README.md):
``common.{toml,yaml,yml,json}``, then ``groups/<group>.*`` for each group in order, then
``hosts/<host-id>.*``. Each layer is a user-data document (a top-level ``settings`` table), merged
in that order with RFC 7386 merge patch (``null`` deletes what an earlier layer set). What the
merged layers do to the store is ``reconciler.sources.applier``'s job.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hostcore.keys import flatten, is_under, merge_patch, strip_nulls

EXTENSIONS = (".toml", ".yaml", ".yml", ".json")


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
