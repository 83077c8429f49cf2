"""The SQLite store with the real schema: transactions, generations, provenance, rollback."""

from __future__ import annotations

import sqlite3

import pytest

from reconciler.schema import InvalidSettings, Schema
from reconciler.store import NothingToCommit, Store, UnknownGeneration


@pytest.fixture
def schema() -> Schema:
    return Schema.load("aws-k8s")


@pytest.fixture
def store(tmp_path) -> Store:
    with Store(tmp_path / "store.db") as opened:
        yield opened


def test_opens_in_wal_with_full_sync(tmp_path, store):
    db = sqlite3.connect(tmp_path / "store.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_pending_is_invisible_until_commit(store, schema):
    store.add_patch("default", {"motd": "hi"}, "api:default", schema)
    assert store.live() == {}
    assert store.transactions() == ["default"]
    result = store.commit("default", schema)
    assert result.changed == ("settings.motd",)
    assert result.generation == 1
    assert store.live() == {"settings.motd": "hi"}
    assert store.transactions() == []


def test_commit_returns_only_changed_keys(store, schema):
    store.add_patch("a", {"motd": "hi", "ntp": {"time-servers": ["a.example"]}}, "api:a", schema)
    store.commit("a", schema)
    store.add_patch("b", {"motd": "hi", "aws": {"region": "us-west-2"}}, "api:b", schema)
    result = store.commit("b", schema)
    assert result.changed == ("settings.aws.region",)
    assert result.generation == 2


def test_unchanged_values_make_no_generation(store, schema):
    store.add_patch("a", {"motd": "hi"}, "api:a", schema)
    store.commit("a", schema)
    store.add_patch("a", {"motd": "hi"}, "api:a", schema)
    result = store.commit("a", schema)
    assert result.changed == () and result.generation == 1


def test_empty_transaction_is_nothing_to_commit(store, schema):
    with pytest.raises(NothingToCommit):
        store.commit("nothing", schema)


def test_null_deletes_and_the_default_comes_back(store, schema):
    store.add_patch("boot", schema.defaults(), "default", schema)
    store.commit("boot", schema)
    default_motd = store.live("settings.motd")["settings.motd"]
    store.add_patch("t", {"motd": "mine", "kubernetes": {"node-labels": {"a.b/c": "x"}}},
                    "api:t", schema)
    store.commit("t", schema)
    store.add_patch("t", {"motd": None, "kubernetes": {"node-labels": None}}, "api:t", schema)
    result = store.commit("t", schema)
    assert set(result.changed) == {"settings.motd", 'settings.kubernetes.node-labels."a.b/c"'}
    assert store.live("settings.motd") == {"settings.motd": default_motd}
    assert store.provenance("settings.motd")[0].source == "default"
    assert store.live("settings.kubernetes.node-labels") == {}


def test_invalid_merged_result_changes_nothing(store, schema):
    with pytest.raises(InvalidSettings) as caught:
        store.add_patch("t", {"host-containers": {"custom": {"enabled": True}}}, "api:t", schema)
    assert "settings.host-containers.custom.source" in str(caught.value)
    assert store.pending("t") == [] and store.live() == {}
    # the same entry is valid once the source arrives in the same patch
    store.add_patch("t", {"host-containers": {"custom": {"enabled": True, "source": "a/b:1"}}},
                    "api:t", schema)


def test_provenance_and_history(store, schema):
    store.add_patch("boot", {"motd": "from user data"}, "user-data", schema)
    store.commit("boot", schema)
    store.add_patch("t", {"motd": "from the api"}, "api:t", schema)
    store.commit("t", schema)
    (prov,) = store.provenance("settings.motd")
    assert (prov.source, prov.generation, prov.value) == ("api:t", 2, "from the api")
    history = store.key_history("settings.motd")
    assert [(g, c.old, c.new) for g, _, c in history] == [
        (2, "from user data", "from the api"), (1, None, "from user data")]


def test_rollback_is_a_new_commit(store, schema):
    for text in ("one", "two", "three"):
        store.add_patch("t", {"motd": text, "aws": {"region": f"r-{text}"}}, "api:t", schema)
        store.commit("t", schema)
    store.add_patch("t", {"aws": None}, "api:t", schema)
    store.commit("t", schema)
    result = store.rollback(1, schema)
    assert result.generation == 5
    assert store.live() == {"settings.motd": "one", "settings.aws.region": "r-one"}
    assert store.provenance("settings.motd")[0].source == "rollback:1"
    with pytest.raises(UnknownGeneration):
        store.rollback(99, schema)


def test_sources_are_ordered_within_a_transaction(store, schema):
    store.add_patch("boot", {"motd": "d", "aws": {"region": "d"}}, "default", schema)
    store.add_patch("boot", {"motd": "u"}, "user-data", schema)
    store.commit("boot", schema)
    assert store.sources() == {"settings.motd": "user-data", "settings.aws.region": "default"}


def test_owed_restarts_and_receipts(store):
    store.owe({"chronyd": ["settings.ntp.time-servers"]}, 3, "boot")
    assert store.owed()["chronyd"].keys == ("settings.ntp.time-servers",)
    store.settle("chronyd")
    assert store.owed() == {}
    store.save_receipt(3, False, {"generation": 3})
    assert store.applied_generation() == 0
    store.save_receipt(3, True, {"generation": 3, "ok": True})
    assert store.applied_generation() == 3
    assert store.last_receipt() == {"generation": 3, "ok": True}


def test_meta_commits_with_the_transaction(store, schema):
    store.add_patch("boot", {"motd": "x"}, "user-data", schema)
    store.commit("boot", schema, meta={"user-data-applied": ["a.toml"]})
    assert store.get_meta("user-data-applied") == ["a.toml"]


def test_large_section_does_not_leak_into_others(store, schema):
    labels = {f"k{i}": "v" for i in range(500)}
    store.add_patch("t", {"kubernetes": {"node-labels": labels}}, "api:t", schema)
    store.commit("t", schema)
    assert len(store.live("settings.kubernetes.node-labels")) == 500
    store.add_patch("t", {"motd": "m"}, "api:t", schema)
    assert store.commit("t", schema).changed == ("settings.motd",)


def test_unwaited_holds_the_store_only_when_it_is_free_and_never_waits(tmp_path, store, schema):
    """The event loop's quick path: True when no other thread is in a store call, False
    (holding nothing) while one is; inside, a write another process's lock holds up fails at
    once, having written nothing, and writes wait again for everyone afterwards."""
    import threading

    from tests.faultutil import store_locked

    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with store.unwaited() as free:
            assert free
            inside.set()
            leave.wait(30)

    other = threading.Thread(target=hold)
    other.start()
    inside.wait(30)
    with store.unwaited() as free:
        assert not free  # another thread holds the store: the caller goes to a thread
    leave.set()
    other.join(30)

    store.add_patch("default", {"motd": "before"}, "test", schema)
    with store_locked(tmp_path / "store.db"), store.unwaited() as free:
        assert free
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.commit("default", schema)
    assert store.pending_size("default") > 0  # nothing was written
    assert store.commit("default", schema).changed == ("settings.motd",)
    assert store.pending_size("default") == 0


def test_a_write_waiting_for_another_processs_lock_holds_up_no_read(tmp_path, store, schema):
    """While one thread's write waits for a lock another process holds, the store is not
    held: other threads (the event loop among them) read meanwhile, and the write lands
    once the lock goes. Under SQLite's own busy wait the reads would wait behind the write
    until it gave up, 'database is locked'."""
    import threading

    from tests.faultutil import store_locked

    store.add_patch("default", {"motd": "waited"}, "test", schema)
    tries = threading.Semaphore(0)
    store.trace(lambda sql: tries.release() if sql == "BEGIN IMMEDIATE" else None)
    outcome: list[object] = []
    with store_locked(tmp_path / "store.db"):
        writer = threading.Thread(target=lambda: outcome.append(store.commit("default", schema)))
        writer.start()
        assert tries.acquire(timeout=30) and tries.acquire(timeout=30)  # tried, and waits
        store.trace(None)
        assert store.live("settings.motd") == {}  # answered while the write still waits
        assert store.generation() == 0 and writer.is_alive()
    writer.join(30)
    assert [result.changed for result in outcome] == [("settings.motd",)]
    assert store.live("settings.motd") == {"settings.motd": "waited"}


def test_version_moves_with_every_write_of_this_process_or_another(tmp_path, store, schema):
    """What ``GET /settings`` keeps is keyed by it: any write, ours or another connection's,
    gives a new version; reads do not."""
    first = store.version()
    store.live()
    assert store.version() == first
    store.add_patch("default", {"motd": "ours"}, "test", schema)
    second = store.version()
    assert second != first
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        other.execute("INSERT INTO meta (name, value) VALUES ('theirs', '1')")
    finally:
        other.close()
    assert store.version() != second
