"""Secrets (settings marked ``x-secret`` in the schema) kept out of everything but GET /settings.

Two complementary ways, as Bottlerocket's logdog does for its reports:

* **by key**, where the data is structured: the settings changes of a plan, ``GET /generations``
  and ``GET /provenance``. A value at a secret key (``settings.host-containers.*.user-data``) is
  replaced by ``"(redacted)"``; ``null`` (a deletion) stays ``null``.
* **by value**, where it is free text: log lines, events, the unified diffs of a plan. Every known
  secret value (and its base64-decoded text, and its escaped spellings) found in a string is
  replaced by ``"(redacted)"``. The process-wide :data:`SCRUBBER` learns the values of the store it
  :func:`track`s whenever the store's generation moves, so values that arrive through the API, git,
  local files or user data are all covered before anything mentions them.

Values shorter than :data:`MIN_SCRUB` characters are not searched for in free text (they would
match everywhere); a plan diff that holds such a value is replaced as a whole.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from hostcore.keys import InvalidKeyError, join_key, split_key, unflatten

REDACTED = "(redacted)"
MIN_SCRUB = 4
MAX_KNOWN = 4096  # distinct secret spellings remembered by the process-wide scrubber


class SchemaLike(Protocol):
    def secret_keys(self, settings: Mapping[str, Any]) -> set[str]: ...

    def secret_strings(self, settings: Mapping[str, Any]) -> set[str]: ...

    def secret_sections(self) -> tuple[str, ...]: ...


# --- by key ---------------------------------------------------------------------------------------


def is_secret_key(schema: SchemaLike, key: str) -> bool:
    """Whether the value at the full dotted ``key`` (or some value below it) is secret."""
    try:
        document = unflatten({key: 0}, strip=1)
    except InvalidKeyError:
        return False
    return bool(schema.secret_keys(document))


def redact_value(schema: SchemaLike, key: str, value: Any) -> Any:
    """``value`` as found at ``key``, with whatever the schema marks secret in it redacted."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {
            name: redact_value(schema, _child(key, name), child) for name, child in value.items()
        }
    return REDACTED if is_secret_key(schema, key) else value


def _child(key: str, name: str) -> str:
    try:
        return join_key((*split_key(key), name))
    except InvalidKeyError:
        return f"{key}.{name}"


def redact_change(schema: SchemaLike, change: Mapping[str, Any]) -> dict[str, Any]:
    """A ``{"key", "old", "new", ...}`` record with its old and new values redacted."""
    key = change["key"]
    result = dict(change)
    for field in ("old", "new", "value"):
        if field in result:
            result[field] = redact_value(schema, key, result[field])
    return result


# --- by value -------------------------------------------------------------------------------------


def secret_values(schema: SchemaLike, settings: Mapping[str, Any] | None) -> set[str]:
    """The string values at secret keys of ``settings`` (the inside of ``settings``)."""
    if not isinstance(settings, Mapping):
        return set()
    return schema.secret_strings(settings)


def flat_secret_values(schema: SchemaLike, flat: Mapping[str, Any]) -> set[str]:
    """The same for flat ``{dotted key: value}`` settings."""
    try:
        return secret_values(schema, unflatten(flat, strip=1))
    except InvalidKeyError:
        return set()


def spellings(value: str) -> set[str]:
    """The ways a secret may show up in text: as is, decoded from base64, escaped."""
    found = {value}
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        decoded = ""
    for text in (value, decoded):
        if not text:
            continue
        found.add(text)
        found.add(json.dumps(text)[1:-1])
        found.add(repr(text)[1:-1])
        found.update(line for line in text.splitlines() if len(line.strip()) >= MIN_SCRUB * 2)
    return found


def scrub(data: Any, secrets: Iterable[str]) -> Any:
    """A copy of ``data`` (JSON-like) where every string has the ``secrets`` replaced."""
    ordered = _ordered(secrets)
    return _scrub(data, ordered) if ordered else data


def _ordered(secrets: Iterable[str]) -> tuple[str, ...]:
    expanded: set[str] = set()
    for value in secrets:
        expanded.update(spellings(value))
    # longest first, so that a value containing another is replaced whole
    return tuple(
        sorted((s for s in expanded if len(s) >= MIN_SCRUB), key=lambda s: (-len(s), s))
    )


def _scrub(data: Any, ordered: tuple[str, ...]) -> Any:
    if isinstance(data, str):
        for secret in ordered:
            if secret in data:
                data = data.replace(secret, REDACTED)
        return data
    if isinstance(data, Mapping):
        return {key: _scrub(value, ordered) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(_scrub(item, ordered) for item in data)
    return data


def redact_plan(schema: SchemaLike, plan: dict[str, Any], secrets: Iterable[str]) -> dict[str, Any]:
    """A dry run's output without secrets: settings changes by key, everything else by value.

    A file diff holding a secret too short to be searched for is replaced as a whole.
    """
    secrets = {s for s in secrets if s}
    result = dict(plan)
    if isinstance(result.get("settings"), list):
        result["settings"] = [redact_change(schema, c) for c in result["settings"]]
    short = {s for s in secrets if len(s) < MIN_SCRUB}
    if short and isinstance(result.get("files"), list):
        result["files"] = [
            {**f, "diff": REDACTED}
            if isinstance(f.get("diff"), str) and _holds_short(f["diff"], short)
            else f
            for f in result["files"]
        ]
    return scrub(result, secrets)


def _holds_short(diff: str, short: set[str]) -> bool:
    lines = [line[1:] for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in
             ("+++", "---")]
    return any(s in line for s in short for line in lines)


# --- the process-wide scrubber (logs, events) ----------------------------------------------------


class StoreLike(Protocol):
    # The newest generation this process committed or read (``Store.last_generation``): a
    # scrub asks it, not the database, so a log line costs no store round trip.
    last_generation: int

    def live_under(self, prefixes: Iterable[str]) -> dict[str, Any]: ...

    def live_changed_after(self, generation: int, prefixes: Iterable[str]) -> dict[str, Any]: ...


class Scrubber:
    """Known secret values, kept current from a tracked store; replaces them in any data."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._ordered: tuple[str, ...] = ()
        self._source: Callable[[], tuple[int, set[str]]] | None = None
        self._generation: int | None = None

    def learn(self, values: Iterable[str]) -> None:
        new = {v for v in values if isinstance(v, str) and v} - self._known
        if not new:
            return
        with self._lock:
            self._known |= new
            if len(self._known) > MAX_KNOWN:  # bounded: the values just learnt are kept
                self._known = set(list(self._known - new)[: max(0, MAX_KNOWN - len(new))]) | new
            self._ordered = _ordered(self._known)

    def track(self, schema: SchemaLike, store: StoreLike) -> None:
        """Learn the secret values of ``store``'s live settings whenever its generation moves.

        Only the sections that can hold a secret are read, and after the first read only the
        keys that the generations since changed (values are only ever learnt, never
        forgotten), so a log line after a commit costs what that commit changed, not what the
        sections hold.
        """

        def read() -> tuple[int, set[str]]:
            generation, known = store.last_generation, self._generation
            if generation == known:
                return generation, set()
            sections = [join_key(("settings", s)) for s in schema.secret_sections()]
            if known is None or generation < known:
                return generation, flat_secret_values(schema, store.live_under(sections))
            return generation, flat_secret_values(
                schema, store.live_changed_after(known, sections))

        self._source = read
        self._generation = None
        self.refresh()

    def untrack(self) -> None:
        self._source = None

    def refresh(self) -> None:
        source = self._source
        if source is None:
            return
        try:  # the store lock is taken here, never while holding ours
            generation, values = source()
        except Exception:  # a closed store at shutdown: keep what is known
            return
        self.learn(values)
        self._generation = generation

    def scrub(self, data: Any) -> Any:
        self.refresh()
        ordered = self._ordered
        return _scrub(data, ordered) if ordered else data

    def processor(self, _logger: Any, _method: str, event_dict: Any) -> Any:
        """A structlog processor: the event dict with known secrets replaced."""
        return self.scrub(event_dict)


SCRUBBER = Scrubber()
track = SCRUBBER.track
untrack = SCRUBBER.untrack
learn = SCRUBBER.learn
