"""Commit planning at the flat-key level agrees with RFC 7386 merge patch on nested documents."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hostcore.keys import flatten, is_under, merge_patch, unflatten
from reconciler.transaction import Patch, apply_changes, plan_commit


class DictView:
    def __init__(self, flat: dict[str, Any]):
        self.flat = flat

    def value(self, key: str) -> Any:
        return self.flat.get(key)

    def below(self, key: str, limit: int | None = None) -> dict[str, Any]:
        found = {k: v for k, v in sorted(self.flat.items()) if is_under(k, key) and k != key}
        return dict(list(found.items())[:limit]) if limit is not None else found


names = st.sampled_from(["a", "b", "c", "d.e", "f/g"])
leaves = st.one_of(st.integers(-3, 3), st.text("xy", max_size=2), st.booleans(),
                   st.lists(st.integers(0, 2), max_size=2))
documents = st.recursive(leaves, lambda inner: st.dictionaries(names, inner, max_size=3),
                         max_leaves=8)
patch_values = st.recursive(st.one_of(leaves, st.none()),
                            lambda inner: st.dictionaries(names, inner, max_size=3), max_leaves=8)
sections = st.dictionaries(st.sampled_from(["motd", "ntp", "kubernetes"]), documents, max_size=3)
patches = st.dictionaries(st.sampled_from(["motd", "ntp", "kubernetes"]), patch_values,
                          min_size=1, max_size=3)


def _clean(document: Any) -> Any:
    """Merge patch may leave empty tables behind; flat keys cannot hold them."""
    return unflatten(flatten({"settings": document}), strip=1) if document else {}


@settings(max_examples=400, deadline=None)
@given(live=sections, patch_list=st.lists(patches, min_size=1, max_size=3))
def test_flat_commit_equals_nested_merge_patch(live, patch_list):
    live_flat = flatten({"settings": live})
    plan = plan_commit(DictView(live_flat), [Patch("api", p) for p in patch_list], {})
    expected: Any = live
    for body in patch_list:
        expected = merge_patch(expected, body)
    assert apply_changes(live_flat, plan.changes) == flatten({"settings": _clean(expected)})


def test_deleted_key_gets_its_default_back_with_default_source():
    live = {"settings.motd": "mine", "settings.ntp.time-servers": ["a"]}
    defaults = {"motd": "welcome", "ntp": {"time-servers": ["pool"]}}
    plan = plan_commit(DictView(live), [Patch("api", {"motd": None, "ntp": None})], defaults)
    changes = {c.key: (c.new, c.source) for c in plan.changes}
    assert changes == {"settings.motd": ("welcome", "default"),
                       "settings.ntp.time-servers": (["pool"], "default")}


def test_small_tables_are_validated_whole_and_big_maps_by_entry():
    live = {f"settings.kubernetes.node-labels.k{i}": "v" for i in range(100)}
    live["settings.host-containers.admin.source"] = "a/b:1"
    plan = plan_commit(
        DictView(live),
        [Patch("api", {"kubernetes": {"node-labels": {"new": "x"}},
                       "host-containers": {"admin": {"enabled": True}}})],
        {},
    )
    assert plan.to_validate == {
        "kubernetes": {"node-labels": {"new": "x"}},
        "host-containers": {"admin": {"enabled": True, "source": "a/b:1"}},
    }


def test_a_patch_planned_over_a_replayed_transaction_is_the_same_plan():
    """A PATCH builds on the transaction replayed once (Store caches it); replaying again from
    scratch gives the same commit, and the PATCH alone is what gets validated."""
    from reconciler.transaction import plan_replay, replay

    live = DictView({"settings.motd": "live", "settings.ntp.time-servers": ["a"]})
    patches = [Patch("api", {"motd": f"m{n}"}) for n in range(50)]
    patches.append(Patch("api", {"ntp": None, "host-containers": {"x": {"enabled": True}}}))
    cached = replay(live, patches[:-1]).copy(live)
    whole = plan_commit(live, patches, {})
    last_only = plan_replay(live, replay(live, patches[-1:], cached.copy(live)), {},
                            only_last=True)
    assert {c.key for c in last_only.changes} == {
        "settings.ntp.time-servers", "settings.host-containers.x.enabled"}
    assert all(c in whole.changes for c in last_only.changes)
    assert "motd" not in last_only.to_validate
    assert last_only.to_validate["host-containers"] == {"x": {"enabled": True}}
    full = plan_replay(live, replay(live, patches[-1:], cached), {})
    assert full.changes == whole.changes and full.to_validate == whole.to_validate
