"""Declarative migrations: semantics both ways, parsing, offline checks, atomic switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.migrator import DATASTORE_VERSION, datastore_version, migrate_at_boot, migrate_store
from reconciler.store import Store
from tests.updates.conftest import run_updata
from updates.apply import MigrationCache
from updates.errors import SignatureError, TamperedTargetError
from updates.migrations import (
    MigrationError,
    apply_migrations,
    migrate_patch,
    parse_migration,
    verify_offline,
)
from updates.repo import Repository


def mig(*steps: dict) -> object:
    return parse_migration(json.dumps({"migration": 1, "name": "t", "version": "1.1.0",
                                       "steps": list(steps)}))


DATA = {"settings.motd": "hi", "settings.a.x": 1, "settings.a.y": 2, "settings.keep": True}


def test_rename_moves_subtree_and_back() -> None:
    m = mig({"op": "rename", "from": "settings.a", "to": "settings.b"})
    fwd, _ = apply_migrations(DATA, {}, [m], True)
    assert fwd == {"settings.motd": "hi", "settings.b.x": 1, "settings.b.y": 2,
                   "settings.keep": True}
    assert apply_migrations(fwd, {}, [m], False)[0] == DATA


def test_replace_only_when_value_is_still_the_old_one() -> None:
    m = mig({"op": "replace", "key": "settings.motd", "old": "hi", "new": "hello"})
    assert apply_migrations(DATA, {}, [m], True)[0]["settings.motd"] == "hello"
    custom = {**DATA, "settings.motd": "mine"}
    assert apply_migrations(custom, {}, [m], True)[0] == custom
    assert apply_migrations({"settings.motd": "hello"}, {}, [m], False)[0] == {
        "settings.motd": "hi"}


def test_add_remove_and_metadata() -> None:
    m = mig({"op": "add", "key": "settings.n", "value": {"p": 1, "q.r": 2}},
            {"op": "remove", "key": "settings.keep", "value": True},
            {"op": "set-metadata", "name": "flag", "value": "on"})
    fwd, meta = apply_migrations(DATA, {"variant": "aws-dev"}, [m], True)
    assert fwd["settings.n.p"] == 1 and fwd['settings.n."q.r"'] == 2
    assert "settings.keep" not in fwd and meta == {"variant": "aws-dev", "flag": "on"}
    back, meta = apply_migrations(fwd, meta, [m], False)
    assert back == DATA and meta == {"variant": "aws-dev"}
    # add never overwrites what is there
    assert apply_migrations({"settings.n.z": 0}, {}, [m], True)[0] == {"settings.n.z": 0}


keys = st.sampled_from(["settings.a", "settings.b", "settings.a.x", "settings.c"])
values = st.one_of(st.integers(), st.text(max_size=3))


@given(st.dictionaries(keys, values, max_size=3))
def test_rename_roundtrips_when_target_is_free(data: dict) -> None:
    m = mig({"op": "rename", "from": "settings.a", "to": "settings.z"})
    fwd, _ = apply_migrations(data, {}, [m], True)
    assert apply_migrations(fwd, {}, [m], False)[0] == data


@pytest.mark.parametrize("doc, message", [
    ({"migration": 2}, "migration"),
    ({"migration": 1, "name": "n", "version": "1", "steps": [{"op": "explode"}]}, "'op'"),
    ({"migration": 1, "name": "n", "version": "1", "steps": [{"op": "rename", "from":
                                                               "settings.a"}]}, "needs from, to"),
    ({"migration": 1, "name": "n", "version": "1", "steps": [{"op": "add", "key": "os.x"}]},
     "not a key under 'settings'"),
    ({"migration": 1, "name": "n", "version": "1", "steps": [{"op": "add", "key":
                                                               "settings.a", "bogus": 1}]},
     "unknown bogus"),
])
def test_parse_errors_name_the_field(doc: dict, message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        parse_migration(json.dumps(doc))


# ---------------------------------------------------------------- offline verification


def cached_repo(tmp_path: Path, expired: bool = False) -> tuple[bytes, MigrationCache]:
    """A repository's metadata and one migration copied the way updog caches them."""
    repo_path = tmp_path / "repo"
    run_updata("create", repo_path)
    repo = Repository.open(repo_path)
    doc = json.dumps({"migration": 1, "name": "m", "version": "1.1.0", "steps": []}).encode()
    info = repo.add_target("migrate_v1.1.0_m.json", doc)
    minus = timedelta(days=-1)
    repo.publish(expires={"targets": minus, "snapshot": minus, "timestamp": minus}
                 if expired else None)
    cache = MigrationCache.under(tmp_path / "updog")
    cache.targets.mkdir(parents=True)
    cache.metadata.mkdir(parents=True)
    meta = repo_path / "metadata"
    for p in meta.glob("*.json"):
        if p.name != "root.json":
            (cache.metadata / p.name).write_bytes(p.read_bytes())
    (cache.targets / f"{info.hashes['sha256']}.migrate_v1.1.0_m.json").write_bytes(doc)
    return (meta / "1.root.json").read_bytes(), cache


def test_offline_verify_ignores_expiry(tmp_path: Path) -> None:
    root, cache = cached_repo(tmp_path, expired=True)
    data = verify_offline(root, cache.metadata, cache.targets, "migrate_v1.1.0_m.json")
    assert parse_migration(data).name == "m"


def test_offline_verify_rejects_tampering_and_foreign_roots(tmp_path: Path) -> None:
    root, cache = cached_repo(tmp_path)
    target = next(cache.targets.iterdir())
    target.write_bytes(target.read_bytes().replace(b'"m"', b'"x"'))
    with pytest.raises(TamperedTargetError):
        verify_offline(root, cache.metadata, cache.targets, "migrate_v1.1.0_m.json")
    other_root, _ = cached_repo(tmp_path / "other")
    with pytest.raises(SignatureError):
        verify_offline(other_root, cache.metadata, cache.targets, "migrate_v1.1.0_m.json")
    with pytest.raises(MigrationError, match="not a signed target"):
        verify_offline(root, cache.metadata, cache.targets, "unknown.json")


# ---------------------------------------------------------------- the store switch


def make_store(path: Path) -> None:
    with Store(path) as store:
        with store._write() as db:  # raw live values, as a daemon would have committed them
            for k, v in DATA.items():
                db.execute("INSERT INTO settings VALUES (?, ?, 'api:x', 1, 0)",
                           (k, json.dumps(v)))
        store.set_meta(DATASTORE_VERSION, "1.0.0")


def test_migrate_store_switches_atomically(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    make_store(db)
    m = mig({"op": "rename", "from": "settings.a", "to": "settings.b"})
    changed = migrate_store(db, [m], forward=True, from_version="1.0.0", to_version="1.1.0")
    assert set(changed) == {"settings.a.x", "settings.a.y", "settings.b.x", "settings.b.y"}
    with Store(db) as store:
        assert store.live()["settings.b.x"] == 1
        assert store.get_meta(DATASTORE_VERSION) == "1.1.0"
        assert store.generations()[0].source == "migration:1.0.0->1.1.0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]


def test_pending_patches_follow_renames_removes_and_replaces_but_gain_nothing() -> None:
    m = mig({"op": "rename", "from": "settings.a", "to": "settings.b"},
            {"op": "replace", "key": "settings.motd", "old": "hi", "new": "hello"},
            {"op": "add", "key": "settings.n", "value": 5},
            {"op": "remove", "key": "settings.gone", "value": "restored on the way back"})
    body = {"a": {"x": 3, "y": None}, "motd": "hi", "gone": 1, "keep": True}
    up = migrate_patch(body, [m], True)
    assert up == {"b": {"x": 3, "y": None}, "motd": "hello", "keep": True}  # no settings.n
    assert migrate_patch(up, [m], False) == {"a": {"x": 3, "y": None}, "motd": "hi",
                                             "keep": True}  # nothing restored into a patch


def test_migrate_store_carries_pending_transactions(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    make_store(db)
    with Store(db) as store:
        store.add_patch("default", {"a": {"x": 7}}, "api:1")
        store.add_patch("default", {"motd": "still hi"}, "api:1")
        store.add_patch("other", {"a": None}, "api:2")
    m = mig({"op": "rename", "from": "settings.a", "to": "settings.b"})
    migrate_store(db, [m], forward=True, from_version="1.0.0", to_version="1.1.0")
    with Store(db) as store:
        assert [p.body for p in store.pending("default")] == [{"b": {"x": 7}},
                                                              {"motd": "still hi"}]
        assert [p.body for p in store.pending("other")] == [{"b": None}]
        assert [p.source for p in store.pending("default")] == ["api:1", "api:1"]
    migrate_store(db, [m], forward=False, from_version="1.1.0", to_version="1.0.0")
    with Store(db) as store:
        assert [p.body for p in store.pending("default")][0] == {"a": {"x": 7}}


def test_failed_migration_leaves_the_store_untouched(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "store.db"
    make_store(db)
    before = db.read_bytes()
    root, cache = cached_repo(tmp_path)
    with pytest.raises(MigrationError, match="manifest.json"):
        migrate_at_boot(tmp_path, "1.1.0", root, cache)  # cached manifest is missing
    assert db.read_bytes() == before

    def explode(*args: object) -> None:
        raise RuntimeError("migration crashed half-way")

    monkeypatch.setattr("reconciler.migrator.apply_migrations", explode)
    with pytest.raises(RuntimeError, match="half-way"):
        migrate_store(db, [], forward=True, from_version="1.0.0", to_version="1.1.0")
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("store")) == [
        "store.db"]
    assert datastore_version(db) == "1.0.0"


def test_first_boot_records_the_version(tmp_path: Path) -> None:
    result = migrate_at_boot(tmp_path / "state", "1.0.0", None, MigrationCache.under(tmp_path))
    assert result.direction == "none"
    assert datastore_version(tmp_path / "state" / "store.db") == "1.0.0"


def test_store_in_use_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    make_store(db)
    holder = Store(db)
    try:
        holder._db.execute("BEGIN IMMEDIATE")
        holder._db.execute("INSERT INTO meta VALUES ('x', '1')")
        with pytest.raises(Exception):  # noqa: B017 - busy or locked, either way refused
            migrate_store(db, [], forward=True, from_version="1.0.0", to_version="1.1.0")
        holder._db.execute("ROLLBACK")
    finally:
        holder.close()
    assert datastore_version(db) == "1.0.0"
    assert not any(p.name.startswith(".store") for p in tmp_path.iterdir())
    os.sync()


def test_migrator_cli_records_then_refuses_an_unverifiable_migration(tmp_path: Path) -> None:
    """``python -m reconciler.migrator``: first boot records the version; a later version with
    no trusted root to verify migrations against exits 1 with one line and changes nothing."""
    state = tmp_path / "state"

    def migrator(version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler.migrator", "--state-dir", str(state),
             "--root", str(tmp_path / "root"), "--version", version],
            capture_output=True, text=True, timeout=60,
        )

    first = migrator("1.0.0")
    assert (first.returncode, first.stdout, first.stderr) == (
        0, "migrator: store already at 1.0.0\n", "")
    before = (state / "store.db").read_bytes()
    refused = migrator("1.1.0")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "migrator: migration error: no trusted root.json to verify the cached migrations with\n")
    assert (state / "store.db").read_bytes() == before
    assert datastore_version(state / "store.db") == "1.0.0"
