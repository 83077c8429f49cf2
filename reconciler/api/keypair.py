"""``PATCH /settings/keypair``: ``key=value`` pairs, types guessed server-side (Bottlerocket)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from typing import Any

from hostcore.keys import InvalidKeyError, join_key, split_key, unflatten

# JSON's number grammar: what Bottlerocket's serde guessing takes as a number. Python's int() and
# float() also take '1_000', 'nan', 'infinity', ' 1', '+1' and '01': those stay strings.
_JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_JSON_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def guess_value(text: str) -> Any:
    """JSON bool -> bool, JSON integer -> int, other JSON number -> float, else a string."""
    if text in ("true", "false"):
        return text == "true"
    if _JSON_INTEGER.fullmatch(text):
        return int(text)
    if _JSON_FLOAT.fullmatch(text):
        value = float(text)
        return value if value not in (float("inf"), float("-inf")) else text
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
