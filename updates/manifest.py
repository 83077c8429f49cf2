"""`manifest.json`: the signed list of updates and of migrations between versions.

Parsed and written as Bottlerocket's `update_metadata` crate does: unknown fields are
ignored, wave bounds must be u32 and unique, dates are parsed leniently, migration keys
are `"(X, Y)"`. All editing helpers (used by `updata`) are pure: they return a new Manifest.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from updates.semver import Version, VersionError
from updates.timefmt import TimeFormatError, format_time, parse_time
from updates.waves import WaveSpec, check_ordered, expand_policy

U32_MAX = 2**32 - 1
_MIGRATION_KEY = re.compile(r"\(([^ ,]+),[ ]*([^ ,]+)\)")


class ManifestError(ValueError):
    """The manifest (or a release file) is malformed, or an edit is impossible."""


@dataclass(frozen=True)
class Images:
    """Target names of the three images of one release."""

    boot: str
    root: str
    hash: str


@dataclass(frozen=True)
class Update:
    """One release of one variant for one architecture."""

    variant: str
    arch: str
    version: Version
    max_version: Version
    images: Images
    waves: Mapping[int, datetime] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object, fields in upstream's order, wave bounds in numeric order."""
        return {
            "variant": self.variant,
            "arch": self.arch,
            "version": str(self.version),
            "max_version": str(self.max_version),
            "waves": {str(k): format_time(self.waves[k]) for k in sorted(self.waves)},
            "images": {"boot": self.images.boot, "root": self.images.root,
                       "hash": self.images.hash},
        }


Migrations = Mapping[tuple[Version, Version], tuple[str, ...]]


@dataclass(frozen=True)
class Manifest:
    """The whole manifest: updates in file order and the migration map."""

    updates: tuple[Update, ...] = ()
    migrations: Migrations = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        keys = sorted(self.migrations, key=_migration_key_text)
        return {
            "updates": [u.to_json() for u in self.updates],
            "migrations": {_migration_key_text(k): list(self.migrations[k]) for k in keys},
        }


def _migration_key_text(key: tuple[Version, Version]) -> str:
    return f"({key[0]}, {key[1]})"


# ---------------------------------------------------------------------------- parsing


class _Obj(dict):
    """A JSON object that remembers which keys appeared more than once."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    obj.duplicates = []
    for k, v in pairs:
        if k in obj:
            obj.duplicates.append(k)
        obj[k] = v
    return obj


def _require(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected an object")
    if isinstance(obj, _Obj) and key in obj.duplicates:
        raise ManifestError(f"{where}: duplicate field `{key}`")
    if key not in obj:
        raise ManifestError(f"{where}: missing field `{key}`")
    return obj[key]


def _string(obj: Any, key: str, where: str) -> str:
    value = _require(obj, key, where)
    if not isinstance(value, str):
        raise ManifestError(f"{where}.{key}: expected a string")
    return value


def _version(obj: Any, key: str, where: str) -> Version:
    try:
        return Version.parse(_string(obj, key, where))
    except VersionError as e:
        raise ManifestError(f"{where}.{key}: {e}") from None


def parse_waves(obj: Any, where: str) -> dict[int, datetime]:
    """Wave bounds: u32 keys (as strings), unique, RFC 3339 values; order not checked."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected an object")
    if isinstance(obj, _Obj) and obj.duplicates:
        raise ManifestError(f"{where}: Duplicate key ID {obj.duplicates[0]!r}")
    waves: dict[int, datetime] = {}
    for key, value in obj.items():
        if not key.isascii() or not key.isdigit() or int(key) > U32_MAX:
            raise ManifestError(f"{where}: Bad bound field {key!r}: not a u32")
        if int(key) in waves:
            raise ManifestError(f"{where}: Duplicate key ID {key!r}")
        if not isinstance(value, str):
            raise ManifestError(f"{where}[{key}]: expected an RFC 3339 string")
        try:
            waves[int(key)] = parse_time(value)
        except TimeFormatError as e:
            raise ManifestError(f"{where}[{key}]: {e}") from None
    return waves


def parse_migrations(obj: Any, where: str) -> dict[tuple[Version, Version], tuple[str, ...]]:
    """Migration map: keys `"(X, Y)"` (regex search, both semver), values lists of names."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected an object")
    if isinstance(obj, _Obj) and obj.duplicates:
        raise ManifestError(f"{where}: duplicate migration key {obj.duplicates[0]!r}")
    out: dict[tuple[Version, Version], tuple[str, ...]] = {}
    for key, value in obj.items():
        m = _MIGRATION_KEY.search(key)
        if m is None:
            raise ManifestError(f"{where}: bad migration key {key!r}: expected '(X, Y)'")
        try:
            pair = (Version.parse(m[1]), Version.parse(m[2]))
        except VersionError as e:
            raise ManifestError(f"{where}: bad migration key {key!r}: {e}") from None
        if pair in out:
            raise ManifestError(f"{where}: duplicate migration key {key!r}")
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise ManifestError(f"{where}[{key!r}]: expected a list of target names")
        out[pair] = tuple(value)
    return out


def _parse_update(obj: Any, where: str) -> Update:
    images = _require(obj, "images", where)
    return Update(
        variant=_string(obj, "variant", where),
        arch=_string(obj, "arch", where),
        version=_version(obj, "version", where),
        max_version=_version(obj, "max_version", where),
        waves=parse_waves(_require(obj, "waves", where), f"{where}.waves"),
        images=Images(
            boot=_string(images, "boot", f"{where}.images"),
            root=_string(images, "root", f"{where}.images"),
            hash=_string(images, "hash", f"{where}.images"),
        ),
    )


def parse_manifest(data: bytes | str) -> Manifest:
    """Parse manifest JSON; raises ManifestError naming the offending field."""
    try:
        obj = json.loads(data, object_pairs_hook=_pairs_hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest is not valid JSON: {e}") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise ManifestError(f"manifest is not usable JSON: {e}") from None
    except RecursionError:
        raise ManifestError("manifest is not usable JSON: nested too deeply") from None
    updates = _require(obj, "updates", "manifest")
    if not isinstance(updates, list):
        raise ManifestError("manifest.updates: expected a list")
    return Manifest(
        updates=tuple(_parse_update(u, f"updates[{i}]") for i, u in enumerate(updates)),
        migrations=parse_migrations(_require(obj, "migrations", "manifest"),
                                    "manifest.migrations"),
    )


def dump_manifest(manifest: Manifest) -> str:
    """Pretty JSON as serde_json writes it (two-space indent)."""
    return json.dumps(manifest.to_json(), indent=2, ensure_ascii=False)


def parse_release(text: str) -> tuple[Version, dict[tuple[Version, Version], tuple[str, ...]]]:
    """A `Release.toml`: `version = "X.Y.Z"` and a `[migrations]` table."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"release file is not valid TOML: {e}") from None
    version = _version(data, "version", "release")
    return version, parse_migrations(data.get("migrations", {}), "release.migrations")


# ---------------------------------------------------------------------------- editing


def _matches(u: Update, variant: str, arch: str, version: Version) -> bool:
    return u.variant == variant and u.arch == arch and u.version == version


def add_update(
    manifest: Manifest, *, variant: str, arch: str, version: Version, images: Images,
    max_version: Version | None = None,
) -> Manifest:
    """Append an update with no waves; every update of that arch+variant gets the ceiling.

    Without `max_version`, the ceiling is max(version, the FIRST update's max_version).
    """
    if max_version is None:
        first = manifest.updates[0].max_version if manifest.updates else version
        max_version = max(version, first)
    updated = tuple(
        replace(u, max_version=max_version) if (u.arch, u.variant) == (arch, variant) else u
        for u in manifest.updates
    )
    new = Update(variant, arch, version, max_version, images, {})
    return replace(manifest, updates=(*updated, new))


def remove_update(manifest: Manifest, *, variant: str, arch: str, version: Version) -> Manifest:
    """Drop exact matches; max_version of the others is left alone."""
    kept = tuple(u for u in manifest.updates if not _matches(u, variant, arch, version))
    return replace(manifest, updates=kept)


def set_max_version(manifest: Manifest, max_version: Version) -> Manifest:
    """The regret lever: set max_version on every update."""
    return replace(
        manifest, updates=tuple(replace(u, max_version=max_version) for u in manifest.updates)
    )


def set_waves(
    manifest: Manifest, *, variant: str, arch: str, version: Version,
    policy: Iterable[WaveSpec], start_at: datetime,
) -> tuple[Manifest, int]:
    """Replace the waves of matching updates; returns the new manifest and the match count."""
    waves = expand_policy(list(policy), start_at)
    count = 0
    updates = []
    for u in manifest.updates:
        if _matches(u, variant, arch, version):
            count += 1
            u = replace(u, waves=dict(waves))
        updates.append(u)
    for u in updates:
        check_ordered(dict(u.waves))
    return replace(manifest, updates=tuple(updates)), count


def set_migrations(manifest: Manifest, migrations: Migrations) -> Manifest:
    """Replace the whole migration map."""
    return replace(manifest, migrations=dict(migrations))


def find_migrations(manifest: Manifest, from_: Version, to: Version) -> list[str]:
    """Migration target names to go from `from_` to `to`, in the order to run them.

    Walks upward from the lower version, always taking the longest step (shortcut) that
    does not pass the higher one; going down reverses the whole list. Where no step starts at
    the current version, the releases up to the next step (or the target) have no migrations:
    unlike Bottlerocket, a release without migrations needs no `"(A, B)" = []` entry.
    """
    if from_ == to:
        return []
    lo, hi = sorted((from_, to))
    names: list[str] = []
    v = lo
    while v != hi:
        steps = [k for k in manifest.migrations if k[0] == v and v < k[1] <= hi]
        if not steps:  # a gap: nothing to migrate until the next step that fits
            later = [k[0] for k in manifest.migrations if v < k[0] < hi and k[1] <= hi]
            v = min(later) if later else hi
            continue
        step = max(steps, key=lambda k: k[1])
        names.extend(manifest.migrations[step])
        v = step[1]
    return names[::-1] if from_ > to else names
