"""Choosing an update: updog's unit-test vectors, version lock, --image, waves, regret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from updates.manifest import Images, Manifest, Update
from updates.selection import HostPolicy, applicable_updates, choose_update
from updates.semver import Version

V = Version.parse
NOW = datetime(2020, 9, 10, tzinfo=UTC)
PAST_WAVES = {0: datetime(2019, 10, 6, 15, tzinfo=UTC),
              858993459: datetime(2019, 10, 7, 15, tzinfo=UTC)}
IMG = Images("boot", "root", "hash")


def upd(version: str, max_version: str, *, arch: str = "x86_64",
        variant: str = "bottlerocket-aws-eks", waves: dict | None = None) -> Update:
    return Update(variant, arch, V(version), V(max_version), IMG,
                  PAST_WAVES if waves is None else waves)


def host(version: str, *, seed: int = 123, lock: str | None = None, ignore: bool = False,
         variant: str = "bottlerocket-aws-eks") -> HostPolicy:
    return HostPolicy(variant, "x86_64", V(version), seed, V(lock) if lock else None, ignore)


MULTIPLE = Manifest((upd("1.13.0", "1.20.0"), upd("1.25.0", "1.20.0"), upd("1.15.0", "1.20.0"),
                     upd("1.16.0", "1.20.0", arch="aarch64")))


def test_multiple_picks_highest_valid() -> None:
    assert choose_update(MULTIPLE, host("1.10.0"), NOW).version == V("1.15.0")


def test_force_image_version() -> None:
    assert choose_update(MULTIPLE, host("1.10.0"), NOW, V("1.13.0")).version == V("1.13.0")


def test_max_version_not_exceeded() -> None:
    regret = Manifest((upd("1.25.0", "1.20.0"),))
    assert choose_update(regret, host("1.18.0"), NOW) is None


def test_older_versions_regret_path() -> None:
    m = Manifest((upd("0.1.1", "0.1.2", variant="aws-k8s-1.15"),
                  upd("0.1.2", "0.1.2", variant="aws-k8s-1.15")))
    chosen = choose_update(m, host("0.1.3", seed=1487, variant="aws-k8s-1.15"), NOW)
    assert chosen.version == V("0.1.2")


def test_check_update_waves() -> None:
    now = datetime.now(UTC)
    waves = {0: now, 1024: now + timedelta(hours=1), 2048: now + timedelta(hours=1)}
    m = Manifest((upd("1.1.1", "1.1.1", variant="aws-k8s-1.15", waves=waves),))
    assert choose_update(m, host("1.0.0", seed=0, variant="aws-k8s-1.15"), now) is not None
    assert choose_update(m, host("1.0.0", seed=2000, variant="aws-k8s-1.15"), now) is None
    assert choose_update(m, host("1.0.0", seed=2000, variant="aws-k8s-1.15", ignore=True),
                         now) is not None


def test_version_lock() -> None:
    m = Manifest((upd("1.13.0", "1.20.0"), upd("1.15.0", "1.20.0")))
    assert choose_update(m, host("1.10.0", lock="1.13.0"), NOW).version == V("1.13.0")
    assert choose_update(m, host("1.15.0", lock="1.13.0"), NOW).version == V("1.13.0")  # down
    assert choose_update(m, host("1.13.0", lock="1.13.0"), NOW) is None  # already there
    assert choose_update(m, host("1.10.0", lock="1.14.0"), NOW) is None  # not offered


def test_image_with_wave_not_arrived() -> None:
    future = {0: NOW - timedelta(days=1), 20: NOW + timedelta(days=1)}
    m = Manifest((upd("1.15.0", "1.20.0", waves=future),))
    assert choose_update(m, host("1.10.0", seed=1000), NOW, V("1.15.0")) is None
    assert choose_update(m, host("1.10.0", seed=1000, ignore=True), NOW,
                         V("1.15.0")).version == V("1.15.0")


def test_image_may_equal_running_version() -> None:
    m = Manifest((upd("1.15.0", "1.20.0"),))
    assert choose_update(m, host("1.15.0"), NOW, V("1.15.0")).version == V("1.15.0")
    assert choose_update(m, host("1.15.0"), NOW) is None


def test_all_lists_applicable_including_older() -> None:
    listed = applicable_updates(MULTIPLE, host("1.14.0"), NOW)
    assert [str(u.version) for u in listed] == ["1.15.0", "1.13.0"]


versions = st.builds(lambda a, b, c: f"{a}.{b}.{c}", *(st.integers(0, 3),) * 3)


@given(st.lists(versions, min_size=1, max_size=6), versions, versions)
def test_latest_choice_properties(offered: list[str], running: str, ceiling: str) -> None:
    m = Manifest(tuple(upd(v, ceiling) for v in offered))
    h = host(running)
    chosen = choose_update(m, h, NOW)
    candidates = applicable_updates(m, h, NOW)
    assert all(u.version <= u.max_version for u in candidates)
    if chosen is None:
        assert all(h.version >= u.version and h.version <= u.max_version for u in candidates)
    else:
        assert chosen in candidates
        assert chosen.version == max(u.version for u in candidates)
        assert chosen.version != h.version or h.version > chosen.max_version
