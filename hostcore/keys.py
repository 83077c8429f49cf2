"""Dotted settings keys, flat <-> nested documents, and RFC 7386 merge patch.

Keys follow Bottlerocket's rules: segments of ``[A-Za-z0-9_/-]``; a segment that must contain
a dot is written quoted (``settings.kubernetes.node-labels."a.b/c"``); the quotes are not part of
the segment; the whole key is at most 255 bytes. Everything here is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at apiclient's start-up; annotations are strings
    from typing import Any

MAX_KEY_BYTES = 255
_SEGMENT = re.compile(r"[A-Za-z0-9_/.-]+")
_PLAIN = re.compile(r"[A-Za-z0-9_/-]+")
# A key of plain segments only (no quotes, no empty segment), ASCII so its length is its size:
# the common case, split with ``str.split`` instead of the character-by-character parser.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_/-]+(?:\.[A-Za-z0-9_/-]+)*")


class InvalidKeyError(ValueError):
    """A key or segment breaks the naming rules; the message says which and why."""


def check_segment(segment: str) -> str:
    """Return the segment if it is a valid key segment (dots allowed: they get quoted)."""
    if not isinstance(segment, str) or not segment:
        raise InvalidKeyError(f"empty key segment {segment!r}")
    if not _SEGMENT.fullmatch(segment):
        bad = sorted({c for c in segment if not _SEGMENT.fullmatch(c)})
        raise InvalidKeyError(
            f"key segment {segment!r} contains {''.join(bad)!r}: "
            "only letters, digits, '_', '-', '/' and (quoted) '.' are allowed"
        )
    return segment


def quote_segment(segment: str) -> str:
    check_segment(segment)
    return segment if _PLAIN.fullmatch(segment) else f'"{segment}"'


def display_segment(segment: Any) -> str:
    """A segment for a message: quoted like a key when it can be one, else as JSON."""
    try:
        return quote_segment(segment)
    except InvalidKeyError:
        return json.dumps(segment if isinstance(segment, str) else str(segment))


def join_key(segments: Iterable[str]) -> str:
    """Build a dotted key from segments, quoting those that contain a dot."""
    key = ".".join(quote_segment(s) for s in segments)
    if not key:
        raise InvalidKeyError("empty key")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key {key[:40]}... is longer than {MAX_KEY_BYTES} bytes")
    return key


def split_key(key: str) -> tuple[str, ...]:
    """Parse a dotted key into its segments; raise InvalidKeyError naming the problem."""
    if isinstance(key, str) and len(key) <= MAX_KEY_BYTES and _PLAIN_KEY.fullmatch(key):
        return tuple(key.split("."))
    return _parse_key(key)


def _parse_key(key: str) -> tuple[str, ...]:
    """The full parser (quotes, and the message for each mistake)."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("empty key")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key {key[:40]}... is longer than {MAX_KEY_BYTES} bytes")
    segments: list[str] = []
    current: list[str] = []
    quoted = False
    closed_quote = False
    for char in key:
        if char == '"':
            if quoted:
                quoted, closed_quote = False, True
            elif current or closed_quote:
                raise InvalidKeyError(f"key {key!r}: quote in the middle of a segment")
            else:
                quoted = True
        elif char == "." and not quoted:
            if not current:
                raise InvalidKeyError(f"key {key!r} has an empty segment")
            segments.append(check_segment("".join(current)))
            current, closed_quote = [], False
        else:
            if closed_quote:
                raise InvalidKeyError(f"key {key!r}: text after a closing quote")
            current.append(char)
    if quoted:
        raise InvalidKeyError(f"key {key!r} has an unbalanced quote")
    if not current:
        raise InvalidKeyError(f"key {key!r} has an empty segment")
    segments.append(check_segment("".join(current)))
    return tuple(segments)


def normalize_key(key: str) -> str:
    """Canonical spelling of a key (``a."b"`` -> ``a.b``)."""
    return join_key(split_key(key))


def is_under(key: str, prefix: str) -> bool:
    """True when ``key`` is ``prefix`` or lies in its subtree (segment-wise)."""
    return key == prefix or key.startswith(prefix + ".")


def flatten(document: Mapping[str, Any], prefix: Iterable[str] = ()) -> dict[str, Any]:
    """Nested document -> ``{dotted key: leaf}``; lists, scalars are leaves; {} vanishes."""
    flat: dict[str, Any] = {}
    base = tuple(prefix)

    def walk(node: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for name, value in node.items():
            here = (*path, name)
            if isinstance(value, Mapping):
                walk(value, here)
            else:
                flat[join_key(here)] = value

    walk(document, base)
    return flat


def unflatten(flat: Mapping[str, Any], strip: int = 0) -> dict[str, Any]:
    """``{dotted key: leaf}`` -> nested document, dropping the first ``strip`` segments."""
    document: dict[str, Any] = {}
    for key, value in flat.items():
        segments = split_key(key)[strip:]
        if not segments:
            raise InvalidKeyError(f"key {key!r} has nothing below the stripped prefix")
        node = document
        for name in segments[:-1]:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise InvalidKeyError(f"key {key!r} lies below a leaf value")
            node = child
        if isinstance(node.get(segments[-1]), dict):
            raise InvalidKeyError(f"key {key!r} is both a leaf and a table")
        node[segments[-1]] = value
    return document


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value and never mutates its inputs."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def strip_nulls(value: Any) -> Any:
    """A patch applied to nothing: the same document with every null member removed."""
    if not isinstance(value, Mapping):
        return value
    return {k: strip_nulls(v) for k, v in value.items() if v is not None}
