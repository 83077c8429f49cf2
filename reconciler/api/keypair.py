"""``PATCH /settings/keypair``: ``key=value`` pairs, types guessed server-side (Bottlerocket)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

from hostcore.keys import InvalidKeyError, join_key, split_key, unflatten


def guess_value(text: str) -> Any:
    """JSON bool -> bool, integer -> int, float -> float, anything else stays a string."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def patch_from_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``["motd=hi", "settings.ntp.time-servers=[...]"]`` -> a patch body (inside ``settings``)."""
    flat: dict[str, Any] = {}
    for pair in pairs:
        if not isinstance(pair, str) or "=" not in pair:
            raise InvalidKeyError(f"invalid key=value pair {pair!r}: missing '='")
        raw_key, text = pair.split("=", 1)
        segments = split_key(raw_key.strip())
        if segments[0] != "settings":
            segments = ("settings", *segments)
        value = guess_value(text)
        if isinstance(value, str) and text[:1] in "[{":
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(text)
        flat[join_key(segments)] = value
    return unflatten(flat, strip=1)
