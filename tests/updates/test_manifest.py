"""manifest.json parsing, writing, editing (updata's rules) and migration paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from updates import manifest as mf
from updates.semver import Version, VersionError, parse_version_lock
from updates.timefmt import TimeFormatError, format_time, parse_time

V = Version.parse
IMAGES = {"boot": "b.lz4", "root": "r.lz4", "hash": "h.lz4"}


def update_json(version: str = "1.0.0", waves: dict | None = None, **extra) -> dict:
    return {"variant": "aws-k8s-1.17", "arch": "x86_64", "version": version,
            "max_version": "1.0.0", "waves": waves or {}, "images": IMAGES, **extra}


def doc(*updates: dict, migrations: dict | None = None) -> str:
    return json.dumps({"updates": list(updates), "migrations": migrations or {}})


REFERENCE = """{
  "updates": [
    { "variant": "aws-k8s-1.17", "arch": "x86_64", "version": "0.5.0", "max_version": "1.0.0",
      "waves": { "0": "2020-08-01T01:00:00Z", "20": "2020-08-01T04:00:00Z",
                 "1843": "2020-08-07T00:00:00Z" },
      "images": { "boot": "b0.lz4", "root": "r0.lz4", "hash": "h0.lz4" } },
    { "variant": "aws-k8s-1.17", "arch": "x86_64", "version": "1.0.0", "max_version": "1.0.0",
      "status": "Ready", "datastore_versions": ["1.0"],
      "waves": { "0": "2019-8-06T15:00:00Z", "20": "2020-09-01T04:00:00.123456789Z" },
      "images": { "boot": "b1.lz4", "root": "r1.lz4", "hash": "h1.lz4" } }
  ],
  "migrations": {
    "(0.4.1, 0.5.0)": ["migrate_v0.5.0_a.lz4", "migrate_v0.5.0_b.lz4"],
    "(0.5.0,1.0.0)": ["migrate_v1.0.0_c.lz4"],
    "(0.3.2, 0.3.3)": []
  }
}"""


def test_parse_reference_example_with_unknown_fields_and_lenient_dates() -> None:
    m = mf.parse_manifest(REFERENCE)
    assert [str(u.version) for u in m.updates] == ["0.5.0", "1.0.0"]
    u = m.updates[1]
    assert u.waves[0] == datetime(2019, 8, 6, 15, tzinfo=UTC)
    assert u.waves[20] == datetime(2020, 9, 1, 4, 0, 0, 123456, tzinfo=UTC)
    assert u.images == mf.Images("b1.lz4", "r1.lz4", "h1.lz4")
    assert m.migrations[(V("0.5.0"), V("1.0.0"))] == ("migrate_v1.0.0_c.lz4",)
    assert m.migrations[(V("0.3.2"), V("0.3.3"))] == ()


def test_round_trip_and_serde_style_output() -> None:
    m = mf.parse_manifest(REFERENCE)
    text = mf.dump_manifest(m)
    assert mf.parse_manifest(text) == m
    data = json.loads(text)
    assert list(data["migrations"]) == ["(0.3.2, 0.3.3)", "(0.4.1, 0.5.0)", "(0.5.0, 1.0.0)"]
    assert list(data["updates"][0]) == ["variant", "arch", "version", "max_version", "waves",
                                        "images"]
    assert data["updates"][1]["waves"] == {"0": "2019-08-06T15:00:00Z",
                                           "20": "2020-09-01T04:00:00.123456Z"}
    assert "status" not in data["updates"][1]
    assert text.startswith('{\n  "updates": [\n    {\n      "variant"')


def test_wave_keys_serialized_in_numeric_order() -> None:
    m = mf.parse_manifest(doc(update_json(waves={"100": "2020-01-03T00:00:00Z",
                                                   "20": "2020-01-02T00:00:00Z"})))
    assert list(m.updates[0].to_json()["waves"]) == ["20", "100"]


@pytest.mark.parametrize("key", ["234ab32", "-1", "4294967296", " 1", ""])
def test_bad_bound(key: str) -> None:
    with pytest.raises(mf.ManifestError, match="Bad bound field"):
        mf.parse_manifest(doc(update_json(waves={key: "2020-01-01T00:00:00Z"})))


def test_duplicate_bound() -> None:
    text = ('{"updates": [{"variant": "v", "arch": "x86_64", "version": "1.0.0", '
            '"max_version": "1.0.0", "waves": {"0": "2020-01-01T00:00:00Z", '
            '"0": "2020-01-02T00:00:00Z"}, "images": {"boot": "b", "root": "r", "hash": "h"}}],'
            ' "migrations": {}}')
    with pytest.raises(mf.ManifestError, match="Duplicate key ID"):
        mf.parse_manifest(text)


def test_numerically_duplicate_bound() -> None:
    with pytest.raises(mf.ManifestError, match="Duplicate key ID"):
        mf.parse_manifest(doc(update_json(waves={"1": "2020-01-01T00:00:00Z",
                                                   "01": "2020-01-02T00:00:00Z"})))


def test_bound_above_max_seed_parses() -> None:
    m = mf.parse_manifest(doc(update_json(waves={"0": "2019-10-06T15:00:00Z",
                                                   "858993459": "2019-10-07T15:00:00Z"})))
    assert 858993459 in m.updates[0].waves


@pytest.mark.parametrize(("text", "match"), [
    ('{"migrations": {}}', "missing field `updates`"),
    ('{"updates": []}', "missing field `migrations`"),
    (doc({k: v for k, v in update_json().items() if k != "max_version"}), "max_version"),
    (doc(update_json(version="v1.0.0")), "invalid semantic version"),
    (doc(update_json(waves={"0": "yesterday"})), "RFC 3339"),
    (doc(migrations={"(1.0.0, 1.1.0)": "x"}), "list of target names"),
    (doc(migrations={"1.0.0 -> 1.1.0": []}), "bad migration key"),
    (doc(migrations={"(1.0, 1.1.0)": []}), "bad migration key"),
    ('{"updates": [], "updates": [], "migrations": {}}', "duplicate field"),
    ("not json", "not valid JSON"),
])
def test_malformed_manifests(text: str, match: str) -> None:
    with pytest.raises(mf.ManifestError, match=match):
        mf.parse_manifest(text)


def test_duplicate_migration_after_parsing() -> None:
    with pytest.raises(mf.ManifestError, match="duplicate migration"):
        mf.parse_manifest(doc(migrations={"(1.0.0, 1.1.0)": [], "(1.0.0,1.1.0)": []}))


def test_migration_key_found_by_search() -> None:
    m = mf.parse_manifest(doc(migrations={"from (1.0.0,   1.1.0) on": ["a"]}))
    assert list(m.migrations) == [(V("1.0.0"), V("1.1.0"))]


# -- migrations path finding (upstream vectors)

CHAIN = mf.parse_manifest(doc(migrations={
    "(1.0.0, 1.1.0)": ["migration_1.1.0_a", "migration_1.1.0_b"],
    "(1.1.0, 1.2.0)": ["migration_1.2.0_a", "migration_1.2.0_b"],
    "(1.2.0, 1.3.0)": ["migration_1.3.0_a"],
    "(1.1.0, 1.5.0)": ["migration_1.5.0_shortcut"],
    "(1.2.0, 1.5.0)": ["migration_1.5.0_from_1.2"],
}))


def test_migrations_forward_takes_shortcut() -> None:
    assert mf.find_migrations(CHAIN, V("1.0.0"), V("1.5.0")) == [
        "migration_1.1.0_a", "migration_1.1.0_b", "migration_1.5.0_shortcut"]


def test_migrations_backward_reversed() -> None:
    assert mf.find_migrations(CHAIN, V("1.5.0"), V("1.0.0")) == [
        "migration_1.5.0_shortcut", "migration_1.1.0_b", "migration_1.1.0_a"]


def test_migrations_equal_and_missing_chain() -> None:
    assert mf.find_migrations(CHAIN, V("1.1.0"), V("1.1.0")) == []
    assert mf.find_migrations(CHAIN, V("1.1.0"), V("1.3.0")) == [
        "migration_1.2.0_a", "migration_1.2.0_b", "migration_1.3.0_a"]
    # 1.3.0 -> 1.4.0 has no entry: no migrations (no empty entry needed)
    assert mf.find_migrations(CHAIN, V("1.0.0"), V("1.4.0")) == [
        "migration_1.1.0_a", "migration_1.1.0_b", "migration_1.2.0_a", "migration_1.2.0_b",
        "migration_1.3.0_a"]
    assert mf.find_migrations(CHAIN, V("0.9.0"), V("1.1.0")) == [
        "migration_1.1.0_a", "migration_1.1.0_b"]  # 0.9.0 -> 1.0.0 had none
    assert mf.find_migrations(CHAIN, V("2.0.0"), V("2.1.0")) == []


# -- editing, as updata does it

def images(v: str) -> mf.Images:
    return mf.Images(f"boot-{v}", f"root-{v}", f"hash-{v}")


def test_add_update_max_version_rules() -> None:
    m = mf.Manifest()
    m = mf.add_update(m, variant="a", arch="x86_64", version=V("1.0.0"), images=images("1"))
    assert m.updates[0].max_version == V("1.0.0")
    m = mf.add_update(m, variant="a", arch="x86_64", version=V("1.1.0"), images=images("2"))
    assert [str(u.max_version) for u in m.updates] == ["1.1.0", "1.1.0"]
    m = mf.add_update(m, variant="a", arch="aarch64", version=V("1.0.5"), images=images("3"))
    # default ceiling comes from the FIRST update; only the same arch+variant is touched
    assert [str(u.max_version) for u in m.updates] == ["1.1.0", "1.1.0", "1.1.0"]
    m = mf.add_update(m, variant="a", arch="x86_64", version=V("1.2.0"), images=images("4"),
                      max_version=V("1.1.0"))
    assert [str(u.max_version) for u in m.updates] == ["1.1.0", "1.1.0", "1.1.0", "1.1.0"]
    assert m.updates[-1].waves == {}


def test_remove_update_and_set_max_version() -> None:
    m = mf.Manifest()
    for v in ("1.0.0", "1.1.0"):
        m = mf.add_update(m, variant="a", arch="x86_64", version=V(v), images=images(v))
    m = mf.remove_update(m, variant="a", arch="x86_64", version=V("1.1.0"))
    assert [str(u.version) for u in m.updates] == ["1.0.0"]
    assert m.updates[0].max_version == V("1.1.0")  # not reverted
    m = mf.set_max_version(m, V("0.9.0"))
    assert m.updates[0].max_version == V("0.9.0")


def test_set_waves_and_release_migrations() -> None:
    m = mf.add_update(mf.Manifest(), variant="a", arch="x86_64", version=V("1.0.0"),
                      images=images("1"))
    from updates.waves import load_policy
    start = datetime(2020, 9, 1, tzinfo=UTC)
    m2, n = mf.set_waves(m, variant="a", arch="x86_64", version=V("1.0.0"),
                         policy=load_policy("ohno"), start_at=start)
    assert n == 1 and sorted(m2.updates[0].waves) == [0, 102, 512, 1024, 1843]
    _, n = mf.set_waves(m, variant="b", arch="x86_64", version=V("1.0.0"),
                        policy=load_policy("ohno"), start_at=start)
    assert n == 0
    version, migrations = mf.parse_release(
        'version = "1.0.0"\n[migrations]\n"(0.9.0, 1.0.0)" = ["migrate_v1.0.0_x.lz4"]\n')
    assert version == V("1.0.0")
    m3 = mf.set_migrations(m2, migrations)
    assert mf.find_migrations(m3, V("0.9.0"), V("1.0.0")) == ["migrate_v1.0.0_x.lz4"]


# -- versions and times

def test_semver_precedence_and_strictness() -> None:
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
             "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2.0.0"]
    assert sorted(order, key=V) == order
    assert V("1.0.0+build.5") == V("1.0.0")
    assert str(V("1.2.3-rc.1+b7")) == "1.2.3-rc.1+b7"
    for bad in ("1.0", "01.0.0", "v1.0.0", "1.0.0-", "1.0.0-01"):
        with pytest.raises(VersionError):
            V(bad)
    assert parse_version_lock("latest") is None
    assert parse_version_lock("v1.2.3") == parse_version_lock("1.2.3") == V("1.2.3")


def test_lenient_times() -> None:
    assert parse_time("2019-8-06T15:00:00Z") == datetime(2019, 8, 6, 15, tzinfo=UTC)
    assert parse_time("2020-09-01T02:00:00+02:00") == datetime(2020, 9, 1, tzinfo=UTC)
    assert parse_time("2020-09-01T00:00:00.000000001Z") == datetime(2020, 9, 1, tzinfo=UTC)
    assert format_time(datetime(2020, 9, 1, 0, 0, 0, 500000, tzinfo=UTC)) \
        == "2020-09-01T00:00:00.500Z"
    for bad in ("2020-13-01T00:00:00Z", "2020-09-01", "2020-09-01T00:00:00"):
        with pytest.raises(TimeFormatError):
            parse_time(bad)
