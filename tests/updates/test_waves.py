"""Wave expansion and readiness: upstream's unit-test vectors and the fixed placement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from updates.waves import (
    MAX_SEED,
    POLICY_TEXT,
    WaveError,
    WaveSpec,
    expand_policy,
    load_policy,
    parse_offset,
    parse_policy,
    place,
    ready_time,
    update_ready,
)

T0 = datetime(2000, 1, 1, tzinfo=UTC)
ms = lambda n: timedelta(milliseconds=n)  # noqa: E731


quirk = update_ready  # Bottlerocket's rule (absolute seed) is the only one


# -- upstream update_metadata vectors (Bottlerocket's test_update_ready_* functions)

def test_no_waves_is_ready() -> None:
    assert update_ready({}, 100, T0)


def test_single_wave_spreads_seeds_one_ms_apart() -> None:
    waves = {0: T0, MAX_SEED: T0 + ms(MAX_SEED)}
    for seed in range(100, 500, 100):  # test_update_ready_single_wave
        assert not update_ready(waves, seed, T0 + ms(seed - 1))
        assert update_ready(waves, seed, T0 + ms(seed))


TEST_WAVES = {0: T0, 50: T0 + ms(200), 100: T0 + ms(1024), 1024: T0 + ms(4096)}


def test_update_ready_second_wave() -> None:
    seed = 60
    for d in range(0, 200, 10):
        assert not quirk(TEST_WAVES, seed, T0 + ms(d))
    position = (1024 - 200) // (100 - 50) * seed
    for d in range(200, position, 2):
        assert not quirk(TEST_WAVES, seed, T0 + ms(d))
    for d in range(position, 1024, 4):
        assert quirk(TEST_WAVES, seed, T0 + ms(200) + ms(d))
    for d in range(1024, 4096, 8):
        assert quirk(TEST_WAVES, seed, T0 + ms(d))


def test_update_ready_third_wave() -> None:
    seed = 148
    for d in list(range(0, 200, 10)) + list(range(200, 1024, 4)):
        assert not quirk(TEST_WAVES, seed, T0 + ms(d))
    position = (4096 - 1024) // (1024 - 100) * seed
    for d in range(1024, position, 4):
        assert not quirk(TEST_WAVES, seed, T0 + ms(200) + ms(d))
    for d in range(position, 4096, 4):
        assert quirk(TEST_WAVES, seed, T0 + ms(1024 + 200) + ms(d))


def test_update_ready_final_wave() -> None:
    waves = {0: T0 - timedelta(hours=3), 256: T0 - timedelta(hours=2),
             512: T0 - timedelta(hours=1)}
    assert quirk(waves, 1024, T0)
    assert update_ready(waves, 1024, T0)


def test_first_wave_and_later_wave_like_updog() -> None:
    now = datetime.now(UTC)
    waves = {0: now, 1024: now + timedelta(hours=1), 2048: now + timedelta(hours=1)}
    assert update_ready(waves, 0, now)
    assert not update_ready(waves, 2000, now)


def test_initial_wave_ready_before_its_time() -> None:
    waves = {0: T0 + timedelta(days=1), 20: T0 + timedelta(days=2)}
    assert update_ready(waves, 0, T0)


def test_bounds_above_max_seed_never_end_a_wave() -> None:
    waves = {0: T0, 858993459: T0 + timedelta(days=1)}
    assert ready_time(waves, 123) == T0  # last wave: ready at its start


# -- the reference's measurements with the default policy (absolute seed)

START = datetime(2020, 9, 1, tzinfo=UTC)
DEFAULT = expand_policy(load_policy("default"), START)


@pytest.mark.parametrize(("seed", "ready_at"), [
    (1, "2020-09-01T01:09"), (21, "2020-09-01T09:08"), (100, "2020-09-02T00:00"),
    (308, "2020-09-04T04:53"), (500, "2020-09-04T22:53"), (800, "2020-09-05T00:00"),
    (820, "2020-09-06T00:00"), (1228, "2020-09-06T00:00"), (1229, "2020-09-07T00:00"),
    (2047, "2020-09-07T00:00"),
])
def test_default_policy_absolute_seed_measurements(seed: int, ready_at: str) -> None:
    at = ready_time(DEFAULT, seed)
    ceil_minute = (at + timedelta(seconds=59, microseconds=999999)).replace(second=0,
                                                                           microsecond=0)
    assert ceil_minute.strftime("%Y-%m-%dT%H:%M") == ready_at


# -- where a seed falls, and when its wave opens (the "no update" reason)

def test_issue_waves_seed_1000_waits_for_its_position() -> None:
    now = T0
    waves = {0: now - timedelta(hours=2), 512: now - timedelta(hours=1),
             1536: now + timedelta(hours=1)}
    where = place(waves, 1000)
    assert (where.start_seed, where.end_seed) == (512, 1536)
    assert where.starts == now - timedelta(hours=1)
    # absolute seed: 1 h before now + 1000 * (2 h / 1024 seeds)
    assert where.ready_at == now - timedelta(hours=1) + timedelta(
        microseconds=-(-(7200 * 10**9 // 1024) * 1000 // 1000))
    assert now < where.ready_at < now + timedelta(hours=1)
    assert not update_ready(waves, 1000, now)
    assert update_ready(waves, 1000, where.ready_at)


def test_place_initial_and_last_waves() -> None:
    assert place({}, 5).ready_at is None
    assert place(TEST_WAVES, 0).start_seed is None and place(TEST_WAVES, 0).ready_at is None
    last = place(TEST_WAVES, 2000)
    assert (last.start_seed, last.end_seed, last.ready_at) == (1024, None, T0 + ms(4096))


# -- policies and their expansion

def test_default_policy_bounds() -> None:
    assert {k: v.isoformat() for k, v in DEFAULT.items()} == {
        0: "2020-09-01T01:00:00+00:00", 20: "2020-09-01T04:00:00+00:00",
        102: "2020-09-02T00:00:00+00:00", 307: "2020-09-03T00:00:00+00:00",
        819: "2020-09-05T00:00:00+00:00", 1228: "2020-09-06T00:00:00+00:00",
        1843: "2020-09-07T00:00:00+00:00",
    }


def test_accelerated_and_ohno_bounds() -> None:
    acc = expand_policy(load_policy("accelerated"), START)
    assert {k: (v - START) for k, v in acc.items()} == {
        0: timedelta(hours=1), 61: timedelta(hours=4), 245: timedelta(hours=8),
        819: timedelta(hours=16), 1638: timedelta(days=1)}
    ohno = expand_policy(load_policy("ohno"), START)
    assert {k: (v - START) for k, v in ohno.items()} == {
        0: timedelta(minutes=30), 102: timedelta(minutes=60), 512: timedelta(minutes=120),
        1024: timedelta(minutes=150), 1843: timedelta(minutes=180)}


def test_policy_names_are_the_shipped_ones() -> None:
    assert set(POLICY_TEXT) == {"default", "accelerated", "ohno"}


def test_unordered_waves_rejected() -> None:
    policy = [WaveSpec("1 day", 50), WaveSpec("1 hour", 100)]
    with pytest.raises(WaveError, match="not ordered"):
        expand_policy(policy, START)


@pytest.mark.parametrize("pct", [0, 101])
def test_invalid_fleet_percentage(pct: int) -> None:
    with pytest.raises(WaveError, match="Invalid fleet percentage"):
        expand_policy([WaveSpec("1 hour", pct)], START)


def test_absolute_start_after_and_offsets() -> None:
    waves = expand_policy([WaveSpec("2020-09-01T05:00:00Z", 10), WaveSpec("1 week", 100)],
                          START)
    assert waves == {0: START + timedelta(hours=5), 204: START + timedelta(weeks=1)}
    assert parse_offset("30 minutes") == timedelta(minutes=30)
    with pytest.raises(WaveError):
        parse_offset("soon")


def test_policy_file_errors(tmp_path) -> None:
    with pytest.raises(WaveError, match="waves"):
        parse_policy("x = 1")
    with pytest.raises(WaveError, match="unknown wave policy"):
        load_policy(tmp_path / "missing.toml")
