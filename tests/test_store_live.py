"""The snapshot's live settings are kept between snapshots and advanced by the keys changed
since (``store.LiveSettings``): after any sequence of commits, deletions, rollbacks and
migrations (which may turn a leaf into a table and back), from this process or another
connection, a snapshot's flat and nested settings are exactly what a fresh read gives."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostcore.keys import unflatten
from reconciler.schema import InvalidSettings, Schema
from reconciler.store import Store

SCHEMA = Schema.load("aws-k8s")
LABELS = st.dictionaries(st.sampled_from(["a", "b", "c.d", "e/f"]),
                         st.one_of(st.none(), st.sampled_from(["x", "y"])), max_size=3)
PATCH = st.fixed_dictionaries({}, optional={
    "motd": st.one_of(st.none(), st.sampled_from(["one", "two"])),
    "kubernetes": st.fixed_dictionaries({}, optional={"node-labels": LABELS}),
    "ntp": st.fixed_dictionaries({}, optional={
        "time-servers": st.one_of(st.none(), st.lists(st.sampled_from(["a.x", "b.x"]), unique=True,
                                                      max_size=2))}),
})
# migrations write any flat settings: here one key turns from a leaf into a table and back
MIGRATED = st.sampled_from([
    {"settings.motd": "migrated", "settings.extra": "leaf"},
    {"settings.motd": "migrated", "settings.extra.inner": "table", "settings.extra.more": 1},
    {"settings.extra.inner.deep": True},
])
STEP = st.one_of(
    st.tuples(st.just("commit"), PATCH),
    st.tuples(st.just("other"), PATCH),  # committed by another connection to the same store
    st.tuples(st.just("rollback"), st.integers(1, 6)),
    st.tuples(st.just("migrate"), MIGRATED),
    st.tuples(st.just("snapshot"), st.none()),
)


def fresh(store: Store) -> tuple[dict, dict]:
    live = store.live()
    return live, unflatten(dict(live), strip=1)


@pytest.fixture
def stores(tmp_path: Path):
    created = []

    def make(name: str) -> tuple[Store, Store]:
        path = tmp_path / name / "store.db"
        pair = Store(path), Store(path)
        created.extend(pair)
        return pair

    yield make
    for store in created:
        store.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, max_size=12))
def test_a_snapshot_holds_what_a_fresh_read_gives(stores, steps) -> None:
    store, other = stores(f"s{id(steps)}")
    store.add_patch("boot", {"motd": "boot"}, "user-data", SCHEMA)
    store.commit("boot", SCHEMA)
    for kind, arg in steps:
        if kind in ("commit", "other"):
            writer = store if kind == "commit" else other
            if arg:
                writer.add_patch("t", arg, "api:t", SCHEMA)
                writer.commit("t", SCHEMA)
        elif kind == "rollback" and arg <= store.generation():
            with contextlib.suppress(InvalidSettings):  # to a migrated key: refused, no change
                store.rollback(arg, SCHEMA, floor_tx="boot")
        elif kind == "migrate":
            store.migrate(arg, store.meta(), tx="m", label="migration",
                          rewrite_pending=lambda body: body)
        snapshot = store.snapshot()
        live, nested = fresh(store)
        assert dict(snapshot.live) == live
        assert snapshot.settings == nested
        assert snapshot.generation == store.generation()
