"""Declarative datastore migrations: documents, their pure semantics, and the offline verifier.

A migration is a JSON document shipped as a TUF target (named in the manifest's `migrations`
map, e.g. `migrate_v1.1.0_rename-admin.json`):

    {"migration": 1, "name": "rename-admin", "version": "1.1.0",
     "steps": [
       {"op": "add",    "key": "settings.a.b", "value": 5},
       {"op": "remove", "key": "settings.old", "value": "restored when going back"},
       {"op": "rename", "from": "settings.x", "to": "settings.y"},
       {"op": "replace", "key": "settings.motd", "old": "hi", "new": "hello"},
       {"op": "set-metadata", "name": "some-meta", "value": 1, "old": null}]}

Each step runs forward on the way up and its inverse, in reverse order, on the way down
(after a rollback). Semantics, following Bottlerocket's common migrations:

* add: forward sets `value` only when nothing is at or under `key`; backward removes the subtree.
* remove: forward removes the subtree; backward puts `value` back when given and absent.
* rename: moves the subtree at `from` to `to` (only when `from` exists and `to` does not).
* replace: changes `key` to `new` only while it still equals `old` (a user's value is kept).
* set-metadata: sets store metadata `name` to `value` while it still equals `old`
  (null: absent); backward restores `old`.

`apply_migrations()` is pure (flat settings and metadata in, new ones out); `verify_offline()`
checks cached targets against cached TUF metadata with expiry ignored but signatures, versions,
lengths and hashes enforced (the migrator runs long after the download).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from hostcore.keys import InvalidKeyError, flatten, is_under, join_key, split_key, unflatten
from updates.errors import SignatureError, TamperedTargetError, UpdateError

FORMAT = 1
OPS = ("add", "remove", "rename", "replace", "set-metadata")
_ABSENT = object()


class MigrationError(UpdateError):
    kind = "migration error"


@dataclass(frozen=True)
class Step:
    op: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class Migration:
    name: str
    version: str
    steps: tuple[Step, ...]

    def to_json(self) -> dict[str, Any]:
        return {"migration": FORMAT, "name": self.name, "version": self.version,
                "steps": [{"op": s.op, **s.args} for s in self.steps]}


def _key(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise MigrationError(f"{where}: expected a dotted key")
    try:
        segments = split_key(value)
    except InvalidKeyError as e:
        raise MigrationError(f"{where}: {e}") from None
    if len(segments) < 2 or segments[0] != "settings":
        raise MigrationError(f"{where}: {value!r} is not a key under 'settings'")
    return join_key(segments)


_REQUIRED = {"add": ("key",), "remove": ("key",), "rename": ("from", "to"),
             "replace": ("key", "old", "new"), "set-metadata": ("name", "value")}
_OPTIONAL = {"add": ("value",), "remove": ("value",), "rename": (), "replace": (),
             "set-metadata": ("old",)}


def parse_migration(data: bytes | str, origin: str = "migration") -> Migration:
    """A migration document, checked; raises MigrationError naming the bad field."""
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MigrationError(f"{origin}: not valid JSON: {e}") from None
    if not isinstance(obj, dict) or obj.get("migration") != FORMAT:
        raise MigrationError(f"{origin}: expected an object with \"migration\": {FORMAT}")
    name, version, steps = obj.get("name"), obj.get("version"), obj.get("steps")
    if not isinstance(name, str) or not isinstance(version, str) or not isinstance(steps, list):
        raise MigrationError(f"{origin}: needs string 'name' and 'version' and a 'steps' list")
    parsed = []
    for i, raw in enumerate(steps):
        where = f"{origin}: steps[{i}]"
        if not isinstance(raw, dict) or raw.get("op") not in OPS:
            raise MigrationError(f"{where}: 'op' must be one of {', '.join(OPS)}")
        op = raw["op"]
        args = {k: v for k, v in raw.items() if k != "op"}
        missing = [k for k in _REQUIRED[op] if k not in args]
        unknown = set(args) - set(_REQUIRED[op]) - set(_OPTIONAL[op])
        if missing or unknown:
            raise MigrationError(f"{where}: {op} needs {', '.join(_REQUIRED[op])}"
                                 + (f"; unknown {', '.join(sorted(unknown))}" if unknown else ""))
        for field in ("key", "from", "to"):
            if field in args:
                args[field] = _key(args[field], f"{where}.{field}")
        if op == "set-metadata" and not isinstance(args["name"], str):
            raise MigrationError(f"{where}.name: expected a string")
        parsed.append(Step(op, args))
    return Migration(name, version, tuple(parsed))


# ---------------------------------------------------------------------------- semantics


def _subtree(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if is_under(k, key)}


def _set_value(data: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        data.update(flatten(value, split_key(key)))
    else:
        data[key] = value


def _move(data: dict[str, Any], src: str, dst: str) -> None:
    moving = _subtree(data, src)
    if not moving or _subtree(data, dst):
        return
    for k, v in moving.items():
        del data[k]
        data[dst + k[len(src):]] = v


def _meta_swap(meta: dict[str, Any], name: str, expect: Any, value: Any) -> None:
    if meta.get(name) == expect:
        if value is None:
            meta.pop(name, None)
        else:
            meta[name] = value


def _run_step(step: Step, data: dict[str, Any], meta: dict[str, Any], forward: bool,
              pending: bool) -> None:
    a = step.args
    if step.op == "add":
        if forward:
            if "value" in a and not pending and not _subtree(data, a["key"]):
                _set_value(data, a["key"], a["value"])
        else:
            for k in _subtree(data, a["key"]):
                del data[k]
    elif step.op == "remove":
        if forward:
            for k in _subtree(data, a["key"]):
                del data[k]
        elif "value" in a and not pending and not _subtree(data, a["key"]):
            _set_value(data, a["key"], a["value"])
    elif step.op == "rename":
        src, dst = (a["from"], a["to"]) if forward else (a["to"], a["from"])
        _move(data, src, dst)
    elif step.op == "replace":
        old, new = (a["old"], a["new"]) if forward else (a["new"], a["old"])
        if data.get(a["key"], _ABSENT) == old:
            data[a["key"]] = new
    elif step.op == "set-metadata":
        old = a.get("old")
        if forward:
            _meta_swap(meta, a["name"], old, a["value"])
        else:
            _meta_swap(meta, a["name"], a["value"], old)


def apply_migrations(data: Mapping[str, Any], meta: Mapping[str, Any],
                     migrations: Sequence[Migration], forward: bool, *, pending: bool = False
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `migrations` (already in run order) over flat settings and metadata.

    `pending`: `data` is a pending change, not live settings. Its keys (values and null
    deletions alike) move with renames, go with removes and follow replaces, but nothing is
    added to it: restoring or adding values is for the live settings, where it lands once.
    """
    out, out_meta = dict(data), dict(meta)
    for migration in migrations:
        steps = migration.steps if forward else tuple(reversed(migration.steps))
        for step in steps:
            _run_step(step, out, out_meta, forward, pending)
    return out, out_meta


def migrate_patch(body: Mapping[str, Any], migrations: Sequence[Migration],
                  forward: bool) -> dict[str, Any]:
    """A pending merge patch (the inside of `settings`) carried across `migrations`."""
    flat, _ = apply_migrations(flatten(body, ("settings",)), {}, migrations, forward,
                               pending=True)
    return unflatten(flat, strip=1)


# ---------------------------------------------------------------------------- offline TUF


class OfflineTargets:
    """Cached targets, verified against cached metadata with expiry ignored.

    The metadata chain (root versions, timestamp, snapshot, targets) is verified once, when
    constructed; `read(name)` then checks one target's length and hashes.
    """

    def __init__(self, trusted_root: bytes, metadata_dir: Path, targets_dir: Path) -> None:
        self.targets_dir = Path(targets_dir)
        with _verification_errors("update metadata"):
            self.targets = _verified_targets(trusted_root, Path(metadata_dir))

    def read(self, name: str) -> bytes:
        with _verification_errors(name):
            info = self.targets.targets.get(name)
            if info is None:
                raise MigrationError(f"{name!r} is not a signed target in the cached metadata")
            data = (self.targets_dir / f"{info.hashes['sha256']}.{name.replace('/', '_')}"
                    ).read_bytes()
            info.verify_length_and_hashes(data)
            return data


def verify_offline(trusted_root: bytes, metadata_dir: Path, targets_dir: Path,
                   name: str) -> bytes:
    """Bytes of cached target `name`, verified against cached metadata; expiry ignored."""
    return OfflineTargets(trusted_root, metadata_dir, targets_dir).read(name)


@contextlib.contextmanager
def _verification_errors(what: str) -> Iterator[None]:
    """Verification failures as the update errors they are (signature, tampering, missing)."""
    try:
        yield
    except UpdateError:
        raise
    except FileNotFoundError as e:
        raise MigrationError(f"cached update metadata is incomplete: {e.filename}") from None
    except Exception as e:
        from tuf.api import exceptions as tuf_exc

        if isinstance(e, tuf_exc.UnsignedMetadataError):
            raise SignatureError(f"cached metadata for {what}: {e}") from None
        if isinstance(e, tuf_exc.LengthOrHashMismatchError):
            raise TamperedTargetError(f"cached {what}: {e}") from None
        raise MigrationError(f"cannot verify cached {what}: {type(e).__name__}: {e}") from None


def _verified_targets(trusted_root: bytes, meta: Path) -> Targets:
    root_md = Metadata[Root].from_bytes(trusted_root)
    root = root_md.signed
    root.verify_delegate("root", root_md.signed_bytes, root_md.signatures)
    while (p := meta / f"{root.version + 1}.root.json").exists():
        new = Metadata[Root].from_bytes(p.read_bytes())
        root.verify_delegate("root", new.signed_bytes, new.signatures)
        new.signed.verify_delegate("root", new.signed_bytes, new.signatures)
        if new.signed.version != root.version + 1:
            raise MigrationError(f"{p.name} has version {new.signed.version}")
        root = new.signed
    ts = Metadata[Timestamp].from_bytes((meta / "timestamp.json").read_bytes())
    root.verify_delegate("timestamp", ts.signed_bytes, ts.signatures)
    sv = ts.signed.snapshot_meta.version
    sn_raw = (meta / f"{sv}.snapshot.json").read_bytes()
    ts.signed.snapshot_meta.verify_length_and_hashes(sn_raw)
    sn = Metadata[Snapshot].from_bytes(sn_raw)
    root.verify_delegate("snapshot", sn.signed_bytes, sn.signatures)
    if sn.signed.version != sv:
        raise MigrationError(f"snapshot version {sn.signed.version}, timestamp says {sv}")
    tm = sn.signed.meta["targets.json"]
    tg_raw = (meta / f"{tm.version}.targets.json").read_bytes()
    tm.verify_length_and_hashes(tg_raw)
    tg = Metadata[Targets].from_bytes(tg_raw)
    root.verify_delegate("targets", tg.signed_bytes, tg.signatures)
    if tg.signed.version != tm.version:
        raise MigrationError(f"targets version {tg.signed.version}, snapshot says {tm.version}")
    return tg.signed
