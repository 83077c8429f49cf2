"""Update waves: policy files, their expansion into manifest seed bounds, and readiness.

Pure functions over plain data. A wave map (`dict[int, datetime]`) maps the *start seed
bound* of each wave to the time that wave begins; a host with seed `s` in `[0, MAX_SEED)`
belongs to the wave whose bounds surround `s`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from updates.timefmt import TimeFormatError, format_time, parse_time

MAX_SEED = 2048

# The shipped policies, in Bottlerocket's wave-file format (cumulative fleet percentages).
POLICY_TEXT: dict[str, str] = {
    "default": """
[[waves]]
start_after = "1 hour"
fleet_percentage = 1
[[waves]]
start_after = "4 hours"
fleet_percentage = 5
[[waves]]
start_after = "1 day"
fleet_percentage = 15
[[waves]]
start_after = "2 days"
fleet_percentage = 40
[[waves]]
start_after = "4 days"
fleet_percentage = 60
[[waves]]
start_after = "5 days"
fleet_percentage = 90
[[waves]]
start_after = "6 days"
fleet_percentage = 100
""",
    "accelerated": """
[[waves]]
start_after = "1 hour"
fleet_percentage = 3
[[waves]]
start_after = "4 hours"
fleet_percentage = 12
[[waves]]
start_after = "8 hours"
fleet_percentage = 40
[[waves]]
start_after = "16 hours"
fleet_percentage = 80
[[waves]]
start_after = "1 day"
fleet_percentage = 100
""",
    "ohno": """
[[waves]]
start_after = "30 minutes"
fleet_percentage = 5
[[waves]]
start_after = "60 minutes"
fleet_percentage = 25
[[waves]]
start_after = "120 minutes"
fleet_percentage = 50
[[waves]]
start_after = "150 minutes"
fleet_percentage = 90
[[waves]]
start_after = "180 minutes"
fleet_percentage = 100
""",
}


class WaveError(ValueError):
    """A wave policy or wave map is invalid."""


@dataclass(frozen=True)
class WaveSpec:
    """One `[[waves]]` entry: when it starts and the cumulative share of the fleet."""

    start_after: str
    fleet_percentage: int


_OFFSET = re.compile(r"^\s*(?:in\s+)?(?P<n>\d+)\s*(?P<unit>[A-Za-z]+)\s*$")
_UNITS = {
    "s": "seconds", "sec": "seconds", "secs": "seconds", "second": "seconds",
    "seconds": "seconds", "m": "minutes", "min": "minutes", "mins": "minutes",
    "minute": "minutes", "minutes": "minutes", "h": "hours", "hr": "hours", "hrs": "hours",
    "hour": "hours", "hours": "hours", "d": "days", "day": "days", "days": "days",
    "w": "weeks", "week": "weeks", "weeks": "weeks",
}


def parse_offset(text: str) -> timedelta:
    """Parse a relative time such as `"4 hours"` or `"2 days"`."""
    m = _OFFSET.match(text)
    unit = _UNITS.get(m["unit"].lower()) if m else None
    if m is None or unit is None:
        raise WaveError(f"bad offset {text!r}: expected e.g. '30 minutes', '4 hours', '2 days'")
    return timedelta(**{unit: int(m["n"])})


def wave_time(start_after: str, start_at: datetime) -> datetime:
    """Resolve a wave's `start_after`: an offset from `start_at`, or an absolute RFC 3339 time."""
    try:
        return start_at + parse_offset(start_after)
    except WaveError:
        try:
            return parse_time(start_after)
        except TimeFormatError:
            raise WaveError(
                f"bad start_after {start_after!r}: neither an offset nor an RFC 3339 time"
            ) from None


def parse_policy(text: str, source: str = "<policy>") -> list[WaveSpec]:
    """Parse a wave policy file (TOML with a `[[waves]]` array)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise WaveError(f"{source}: invalid TOML: {e}") from None
    waves = data.get("waves")
    if not isinstance(waves, list) or not waves:
        raise WaveError(f"{source}: expected a non-empty [[waves]] array")
    specs = []
    for i, w in enumerate(waves):
        if not isinstance(w, dict):
            raise WaveError(f"{source}: waves[{i}] is not a table")
        start, pct = w.get("start_after"), w.get("fleet_percentage")
        if not isinstance(start, str) or not isinstance(pct, int) or isinstance(pct, bool):
            raise WaveError(
                f"{source}: waves[{i}] needs start_after (string) and fleet_percentage (integer)"
            )
        specs.append(WaveSpec(start, pct))
    return specs


def load_policy(name_or_path: str | Path) -> list[WaveSpec]:
    """A shipped policy by name (`default`, `accelerated`, `ohno`) or a policy file path."""
    if str(name_or_path) in POLICY_TEXT:
        return parse_policy(POLICY_TEXT[str(name_or_path)], str(name_or_path))
    path = Path(name_or_path)
    try:
        text = path.read_text()
    except OSError as e:
        raise WaveError(
            f"unknown wave policy {str(name_or_path)!r} (shipped: {', '.join(POLICY_TEXT)}): {e}"
        ) from None
    return parse_policy(text, str(path))


def expand_policy(policy: list[WaveSpec], start_at: datetime) -> dict[int, datetime]:
    """Convert a policy into manifest bounds: `{start seed of wave: wave start time}`.

    The first wave starts at seed 0; each wave's cumulative percentage gives the next
    wave's start seed. The last wave's percentage is therefore never stored.
    """
    waves: dict[int, datetime] = {}
    seed = 0
    for spec in policy:
        if not 0 < spec.fleet_percentage <= 100:
            raise WaveError(
                f"Invalid fleet percentage {spec.fleet_percentage}: must be in 1..=100"
            )
        waves[seed] = wave_time(spec.start_after, start_at)
        seed = spec.fleet_percentage * MAX_SEED // 100
    check_ordered(waves)
    return waves


def check_ordered(waves: dict[int, datetime]) -> None:
    """Wave times must strictly increase with their seed bounds."""
    times = [waves[k] for k in sorted(waves)]
    if any(a >= b for a, b in zip(times, times[1:], strict=False)):
        raise WaveError("Waves are not ordered: bounds and times must both increase")


def _ns(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


@dataclass(frozen=True)
class WavePlace:
    """Where a seed falls in an update's waves, and when the update becomes ready for it."""

    start_seed: int | None  # None: the initial wave (below the first bound, or seed 0)
    end_seed: int | None  # None: the last wave (no rate limit)
    starts: datetime | None  # when the host's wave begins
    ready_at: datetime | None  # None: ready at once (no waves, or the initial wave)

    def describe(self) -> str:
        """E.g. `wave 512..1536 (started 2026-12-01T09:00:00Z)`."""
        end = self.end_seed if self.end_seed is not None else MAX_SEED
        began = f" (starts {format_time(self.starts)})" if self.starts else ""
        return f"wave {self.start_seed or 0}..{end}{began}"


def place(waves: dict[int, datetime], seed: int) -> WavePlace:
    """Bottlerocket's `update_wave` + `update_ready`, as one answer for `seed`.

    The start bound is the largest key below the seed, the end bound the smallest key from the
    seed up to `MAX_SEED`. In a wave with both, hosts are spread by `per_seed * seed` after the
    wave's start, where `per_seed = (end_time - start_time) / (end - start)` in integer
    nanoseconds: Bottlerocket multiplies by the *absolute* seed, not by `seed - start`, so in
    every wave but the first most hosts wait for the wave's end. That is the fleet's behaviour,
    reproduced exactly (there is no other rule).
    """
    keys = sorted(waves)
    lower = [k for k in keys if k < seed]
    upper = [k for k in keys if seed <= k <= MAX_SEED]
    if not keys or not lower:
        return WavePlace(None, upper[0] if upper else None, None, None)
    start = lower[-1]
    start_time = waves[start]
    if not upper:
        return WavePlace(start, None, start_time, start_time)  # the last wave has no rate limit
    end = upper[0]
    end_time = waves[end]
    if end_time <= start_time:
        return WavePlace(start, end, start_time, end_time)  # unordered: ready once end passed
    per_seed_ns = (_ns(end_time) - _ns(start_time)) // (end - start)
    target = start_time + timedelta(microseconds=-(-per_seed_ns * seed // 1000))
    return WavePlace(start, end, start_time, min(target, end_time))


def ready_time(waves: dict[int, datetime], seed: int) -> datetime | None:
    """When an update with these waves becomes ready for `seed` (None: ready now, always)."""
    return place(waves, seed).ready_at


def update_ready(waves: dict[int, datetime], seed: int, now: datetime) -> bool:
    """Whether a host with `seed` may take an update with these waves at time `now`."""
    when = ready_time(waves, seed)
    return when is None or now >= when
