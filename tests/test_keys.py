"""Dotted keys, flat <-> nested documents and RFC 7386 merge patch (hostcore.keys)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostcore.keys import (
    MAX_KEY_BYTES,
    InvalidKeyError,
    check_segment,
    flatten,
    is_under,
    join_key,
    merge_patch,
    normalize_key,
    quote_segment,
    split_key,
    strip_nulls,
    unflatten,
)

SEGMENT_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-/."
segments = st.text(alphabet=SEGMENT_CHARS, min_size=1, max_size=20)
plain_segments = st.text(alphabet=SEGMENT_CHARS.replace(".", ""), min_size=1, max_size=12)
segment_lists = st.lists(segments, min_size=1, max_size=8)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=2), children, max_size=3)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=2), json_values)

leaves = st.one_of(
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
)
# Nested documents as the settings store holds them: no nulls, no empty tables.
documents = st.recursive(
    st.dictionaries(segments, leaves, min_size=1, max_size=3),
    lambda children: st.dictionaries(segments, st.one_of(leaves, children), min_size=1, max_size=3),
    max_leaves=10,
)


# --- keys -------------------------------------------------------------------------------------


@given(segment_lists)
def test_join_then_split_round_trips(segs):
    assert split_key(join_key(segs)) == tuple(segs)


@given(segment_lists)
def test_join_quotes_exactly_the_segments_with_dots(segs):
    key = join_key(segs)
    assert key.count('"') == 2 * sum("." in s for s in segs)
    assert normalize_key(key) == key


@given(st.lists(plain_segments, min_size=1, max_size=6))
def test_redundant_quotes_do_not_change_identity(segs):
    quoted = ".".join(f'"{s}"' for s in segs)
    assert split_key(quoted) == tuple(segs)
    assert normalize_key(quoted) == ".".join(segs)


@given(segment_lists, segment_lists)
def test_is_under_follows_segments(a, b):
    key_a, key_b = join_key(a), join_key(b)
    expected = tuple(b[: len(a)]) == tuple(a)
    # string-prefix look-alikes (``a.b`` vs ``a.bc``) never count
    assert is_under(key_b, key_a) == expected


def test_examples_of_keys():
    assert split_key('settings.kubernetes.node-labels."a.b/c"') == (
        "settings",
        "kubernetes",
        "node-labels",
        "a.b/c",
    )
    assert join_key(["settings", "kubernetes", "node-labels", "a.b/c"]) == (
        'settings.kubernetes.node-labels."a.b/c"'
    )
    assert quote_segment("plain/name_-1") == "plain/name_-1"
    assert quote_segment("a.b") == '"a.b"'
    assert normalize_key('a."b".c') == "a.b.c"
    assert is_under("settings.ntp.time-servers", "settings.ntp")
    assert is_under("settings.ntp", "settings.ntp")
    assert not is_under("settings.ntpd", "settings.ntp")


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", "empty key"),
        ("a..b", "empty segment"),
        (".a", "empty segment"),
        ("a.", "empty segment"),
        ('a."b', "unbalanced quote"),
        ('a.b"c"', "quote in the middle"),
        ('a."b"c', "text after a closing quote"),
        ("a b", "contains ' '"),
        ("settings.motd;rm", "contains ';'"),
        ("a.$x", "contains '$'"),
        ("x" * (MAX_KEY_BYTES + 1), f"longer than {MAX_KEY_BYTES} bytes"),
    ],
)
def test_invalid_keys_are_rejected_with_a_reason(key, words):
    with pytest.raises(InvalidKeyError) as caught:
        split_key(key)
    assert words in str(caught.value)


@pytest.mark.parametrize("segment", ["", "a b", "é", "a\nb", 'a"b', "a\\b"])
def test_invalid_segments_are_rejected(segment):
    with pytest.raises(InvalidKeyError):
        check_segment(segment)
    with pytest.raises(InvalidKeyError):
        join_key(["settings", segment])


@given(st.text(alphabet=SEGMENT_CHARS + '"é ', max_size=40))
def test_the_plain_key_shortcut_agrees_with_the_full_parser(key):
    """split_key splits a key of plain segments with str.split; any text, valid or not,
    gets the full parser's answer (the same segments, or the same error)."""
    from hostcore.keys import _parse_key

    def outcome(parse):
        try:
            return parse(key)
        except InvalidKeyError as error:
            return str(error)

    assert outcome(split_key) == outcome(_parse_key)


def test_join_rejects_empty_and_long_keys():
    with pytest.raises(InvalidKeyError, match="empty key"):
        join_key([])
    with pytest.raises(InvalidKeyError, match="longer than"):
        join_key(["a" * 200, "b" * 60])
    assert split_key("a" * MAX_KEY_BYTES) == ("a" * MAX_KEY_BYTES,)


# --- flatten / unflatten ----------------------------------------------------------------------


@given(documents)
def test_unflatten_inverts_flatten(document):
    assert unflatten(flatten(document)) == document


@given(documents)
def test_prefix_and_strip_round_trip(document):
    flat = flatten(document, prefix=("settings",))
    assert all(key.startswith("settings.") for key in flat)
    assert unflatten(flat, strip=1) == document
    assert unflatten(flat) == {"settings": document}


@given(documents)
def test_flatten_inverts_unflatten(document):
    flat = flatten(document)
    assert flatten(unflatten(flat)) == flat
    for key in flat:
        assert normalize_key(key) == key


def test_flatten_examples():
    document = {"kubernetes": {"node-labels": {"a.b/c": "x"}, "max-pods": 3}, "ntp": {}}
    assert flatten(document, prefix=("settings",)) == {
        'settings.kubernetes.node-labels."a.b/c"': "x",
        "settings.kubernetes.max-pods": 3,
    }
    assert flatten({"l": [1, {"a": 1}]}) == {"l": [1, {"a": 1}]}  # lists are leaves


def test_unflatten_rejects_conflicts():
    with pytest.raises(InvalidKeyError, match="below a leaf"):
        unflatten({"a": 1, "a.b": 2})
    with pytest.raises(InvalidKeyError, match="both a leaf and a table"):
        unflatten({"a.b": 2, "a": 1})
    with pytest.raises(InvalidKeyError, match="nothing below"):
        unflatten({"settings": 1}, strip=1)


# --- merge patch (RFC 7386) -------------------------------------------------------------------

# RFC 7386, Appendix A: (original, patch, result)
RFC7386_VECTORS = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC7386_VECTORS)
def test_rfc7386_appendix_a(original, patch, result):
    assert merge_patch(original, patch) == result


@given(json_values, json_values)
def test_merge_patch_is_idempotent(target, patch):
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@given(json_objects, json_objects)
def test_merge_patch_never_mutates_its_inputs(target, patch):
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    merge_patch(target, patch)
    assert target == target_before
    assert patch == patch_before


@given(json_objects, json_objects)
def test_null_deletes_and_others_set(target, patch):
    result = merge_patch(target, patch)
    for name, value in patch.items():
        if value is None:
            assert name not in result
        elif isinstance(value, dict):
            assert isinstance(result[name], dict)
        else:
            assert result[name] == value
    for name in target:
        if name not in patch:
            assert result[name] == target[name]


@given(json_objects)
def test_empty_patch_and_self_patch(target):
    assert merge_patch(target, {}) == target
    clean = strip_nulls(target)
    assert merge_patch(clean, clean) == clean


@given(json_values)
def test_patch_applied_to_nothing_is_the_patch_without_nulls(patch):
    assert merge_patch(None, patch) == strip_nulls(patch)
    result = merge_patch({}, patch)
    if isinstance(patch, dict):
        assert result == strip_nulls(patch)


@given(json_values)
def test_strip_nulls_leaves_no_null_member(value):
    def members(node):
        if isinstance(node, dict):
            for child in node.values():
                yield child
                yield from members(child)

    assert None not in list(members(strip_nulls(value)))
