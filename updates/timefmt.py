"""Lenient RFC 3339 parsing and chrono-style formatting of UTC times.

Manifests in the wild carry one-digit months (`2019-8-06T15:00:00Z`) and nanosecond
fractions, which `datetime.fromisoformat` rejects; this parser accepts what chrono did.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_RFC3339 = re.compile(
    r"^\s*(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})[Tt ]"
    r"(?P<h>\d{1,2}):(?P<mi>\d{1,2}):(?P<s>\d{1,2})(?:\.(?P<frac>\d+))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:?\d{2})\s*$"
)


class TimeFormatError(ValueError):
    """A string is not an RFC 3339 date-time."""


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 date-time leniently; the result is an aware UTC datetime.

    Sub-microsecond digits are truncated (Python datetimes hold microseconds).
    """
    m = _RFC3339.match(text) if isinstance(text, str) else None
    if m is None:
        raise TimeFormatError(f"invalid RFC 3339 date-time {text!r}")
    tz = m["tz"]
    if tz in ("Z", "z"):
        offset = UTC
    else:
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    micros = int((m["frac"] or "0")[:6].ljust(6, "0"))
    try:
        value = datetime(
            int(m["y"]), int(m["mo"]), int(m["d"]),
            int(m["h"]), int(m["mi"]), int(m["s"]), micros, tzinfo=offset,
        )
    except ValueError as e:
        raise TimeFormatError(f"invalid RFC 3339 date-time {text!r}: {e}") from None
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """Format as chrono's `AutoSi` RFC 3339 with `Z`: fraction only when non-zero."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        frac = f"{value.microsecond:06d}"
        text += "." + (frac[:3] if frac.endswith("000") else frac)
    return text + "Z"


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (one place to read the clock)."""
    return datetime.now(UTC)
