"""One applier for every layered source (a fleet repository, local desired-state files).

Both sources hand it their layers in order and get the same semantics:

* **merge**: each layer is an RFC 7386 merge patch over the previous ones; a ``null`` deletes
  what an *earlier layer of the same source* set. It never reaches past the source: a key
  another source set (the API, user data) keeps its value.
* **ownership**: the keys a layered source applies carry its source (``git:<commit>``,
  ``file:<path>``) and belong to it. A layer declaring a key another *layered* source owns is
  refused whole (two sources taking a key from each other would flip it on every sync); keys
  the API, user data or a default set are taken over (``Applied.taken_over`` names them).
* **pruning**: keys the source owns that its layers no longer declare are deleted, so they
  return to their defaults.
* **whole or nothing**: the merged settings are validated against the schema first, then
  committed in one transaction; any refusal changes nothing and raises a typed
  ``LayerError`` naming the layer and the dotted key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hostcore.keys import flatten, is_under, unflatten
from reconciler.schema import InvalidSettings, Schema
from reconciler.sources.layers import Layer, declaring_layer, merge_layers
from reconciler.store import NothingToCommit, Store

GIT_SOURCE_PREFIX = "git:"
FILE_SOURCE_PREFIX = "file:"
# Sources whose keys are owned: nobody else writes them without being refused (or forced).
LAYERED_PREFIXES = (GIT_SOURCE_PREFIX, FILE_SOURCE_PREFIX)
# Sources a layered source takes a key from silently: nobody chose those values.
UNOWNED_SOURCES = ("default", "generator")
GIT_APPLIED_META = "gitops-applied"  # the git source's last applied commit, url and path


class LayerError(Exception):
    """The layers were not applied; nothing changed. The message names the layer and key."""


class InvalidLayers(LayerError):
    """A layer does not parse, or the merged settings do not satisfy the schema."""


class OwnedElsewhere(LayerError):
    """A layer declares a key another layered source owns."""

    def __init__(self, message: str, keys: Sequence[str]):
        super().__init__(message)
        self.keys = list(keys)


@dataclass(frozen=True)
class Applied:
    changed: list[str]  # keys whose values changed
    # changed keys that another, unowned-by-layers source had set (the API, user data): their
    # previous source, for a drift report
    taken_over: dict[str, str] = field(default_factory=dict)
    committed: bool = True  # False: the store already held these values (nothing committed)


def owner_of(source: str) -> str | None:
    """The layered source prefix owning a key of ``source`` (None: not a layered source)."""
    return next((p for p in LAYERED_PREFIXES if source.startswith(p)), None)


def owned_keys(
    patch: Mapping[str, Any], sources_under: Callable[[str], Mapping[str, str]]
) -> dict[str, str]:
    """Live keys owned by a layered source that an API patch would change or delete, with their
    source. ``sources_under(key)`` gives the sources of the live keys at or under ``key``."""
    owned: dict[str, str] = {}
    for touched in flatten({"settings": patch}):
        owned.update(
            (k, s) for k, s in sources_under(touched).items() if owner_of(s) is not None
        )
    return dict(sorted(owned.items()))


def owner_message(store: Store, owned: Mapping[str, str]) -> str:
    """Why a PATCH of keys a layered source owns is refused, naming what owns them."""
    lines = []
    git = sorted(k for k, s in owned.items() if s.startswith(GIT_SOURCE_PREFIX))
    if git:
        applied = store.get_meta(GIT_APPLIED_META) or {}
        where = f"{applied.get('url', 'the fleet repository')}"
        if applied.get("path"):
            where += f" (path {applied['path']})"
        lines.append(
            f"{_shown(git)}: managed by git, {where}; change it in the repository, or PATCH "
            "with force=true (git puts its value back at the next sync)"
        )
    files: dict[str, list[str]] = {}
    for key, source in sorted(owned.items()):
        if source.startswith(FILE_SOURCE_PREFIX):
            files.setdefault(source.removeprefix(FILE_SOURCE_PREFIX), []).append(key)
    for path, keys in files.items():
        lines.append(
            f"{_shown(keys)}: managed by the desired-state file {path}; change it there, or "
            "PATCH with force=true (the file's value comes back when it is applied again)"
        )
    return "; ".join(lines)


def _shown(keys: Sequence[str]) -> str:
    return ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")


class LayeredApplier:
    """Applies one layered source's layers to the store (see the module docstring).

    ``owner`` is the source prefix (``git:``, ``file:``); ``tx`` the transaction it commits
    through; ``source_of(layer)`` the source recorded on the keys a layer declares.
    """

    def __init__(self, store: Store, schema: Schema, owner: str, tx: str,
                 source_of: Callable[[Layer], str]):
        if owner not in LAYERED_PREFIXES:
            raise ValueError(f"{owner!r} is not a layered source prefix {LAYERED_PREFIXES}")
        self.store = store
        self.schema = schema
        self.owner = owner
        self.tx = tx
        self.source_of = source_of

    def apply(self, layers: Sequence[Layer], meta: Mapping[str, Any] | None = None,
              context: str = "") -> Applied:
        """Apply ``layers`` whole (``meta`` is written in the same commit). ``context`` starts
        every error message (e.g. the commit)."""
        prefix = f"{context}: " if context else ""
        desired = merge_layers(layers)
        problems = self.schema.validate(desired)
        if problems:
            raise InvalidLayers(describe(InvalidSettings(problems), layers, prefix))
        sources = self.store.sources()
        wanted = flatten({"settings": desired})
        rivals = {
            key: sources[key] for key in wanted
            if key in sources and owner_of(sources[key]) not in (None, self.owner)
        }
        if rivals:
            raise OwnedElsewhere(
                "; ".join(f"{prefix}{declaring_layer(k, layers) or 'layers'}: {k} is owned by "
                          f"{s}; remove it from one of the two sources" for k, s in rivals.items()),
                list(rivals),
            )
        store = self.store
        store.discard(self.tx)
        pruned = {k: None for k, s in sources.items()
                  if s.startswith(self.owner) and k not in wanted}
        if pruned:
            store.add_patch(self.tx, unflatten(pruned, strip=1), self.owner)
        for source, keys in _by_source(wanted, layers, self.source_of).items():
            store.add_patch(self.tx, unflatten(keys, strip=1), source)
        try:
            changed = list(store.commit(self.tx, self.schema, meta=meta).changed)
        except InvalidSettings as error:
            store.discard(self.tx)
            raise InvalidLayers(describe(error, layers, prefix)) from None
        except NothingToCommit:
            return Applied([], {}, committed=False)
        taken_over = {
            k: sources[k] for k in changed
            if k in sources and owner_of(sources[k]) is None
            and not sources[k].startswith(UNOWNED_SOURCES)
        }
        return Applied(changed, taken_over)


def _by_source(wanted: Mapping[str, Any], layers: Sequence[Layer],
               source_of: Callable[[Layer], str]) -> dict[str, dict[str, Any]]:
    """The wanted flat keys grouped by the source of the last layer declaring each one."""
    declared = [(layer, flatten({"settings": layer.settings})) for layer in layers]
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in wanted.items():
        layer = next(
            (layer for layer, keys in reversed(declared)
             if key in keys or any(is_under(key, k) for k in keys)),
            layers[-1],
        )
        grouped.setdefault(source_of(layer), {})[key] = value
    return grouped


def describe(error: InvalidSettings, layers: Sequence[Layer], prefix: str = "") -> str:
    """Each schema problem with the layer that declares its key."""
    return "; ".join(
        f"{prefix}{declaring_layer(p.key, layers) or 'merged layers'}: {p}" for p in error.problems
    )
