"""A bounded in-memory event journal (``GET /events``): what happened, newest last.

Each event is a CloudEvents 1.0 event in its JSON form: ``specversion``, ``id``, ``source``,
``type``, ``time`` (RFC 3339), ``subject`` (what it is about: a file, a container, a commit),
``datacontenttype`` and ``data`` (the human ``message`` and the event's fields). ``seq`` is an
extension attribute: the journal's order, which ``GET /events?since=SEQ`` pages on. Every event
is logged too, at the level its emitter gives: failures at ``warning`` or ``error``, so that
``--log-level warning`` (or ``journalctl -p warning``) shows every one of them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from reconciler.logs import get_logger
from reconciler.redact import SCRUBBER

log = get_logger("events")
SPECVERSION = "1.0"
LEVELS = ("debug", "info", "warning", "error")
# the field that names what an event is about, in order of preference
_SUBJECT_FIELDS = (("file", "{}"), ("container", "host-containers/{}"), ("key", "{}"),
                   ("commit", "git/{}"), ("generation", "generations/{}"))


def subject_of(fields: dict[str, Any]) -> str | None:
    """CloudEvents' ``subject`` from the event's own fields (None when it names nothing)."""
    for name, pattern in _SUBJECT_FIELDS:
        if fields.get(name) not in (None, ""):
            return pattern.format(fields[name])
    return None


class Events:
    """``source`` is the CloudEvents source of this daemon's events (a URI reference)."""

    def __init__(self, capacity: int = 1000, source: str = "/host-reconciler"):
        self._items: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._seq = 0
        self._lock = threading.Lock()
        self.source = source
        # ids stay unique for the source across restarts: this journal's start, then its seq
        self._instance = uuid.uuid4().hex[:12]

    def emit(self, kind: str, message: str, *, level: str = "info", subject: str | None = None,
             **fields: Any) -> dict[str, Any]:
        """Record and log one event; ``level`` is its log level (``warning`` for a failure)."""
        message, fields = SCRUBBER.scrub((message, fields))  # no secret in the journal
        now = time.time()
        with self._lock:
            self._seq += 1
            event = {
                "specversion": SPECVERSION,
                "id": f"{self._instance}-{self._seq}",
                "source": self.source,
                "type": kind,
                "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "datacontenttype": "application/json",
                "seq": self._seq,
                "data": {"message": message, **fields},
            }
            found = subject or subject_of(fields)
            if found is not None:
                event["subject"] = found
            self._items.append(event)
        getattr(log, level if level in LEVELS else "warning")(message, kind=kind, **fields)
        return event

    def since(self, seq: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._items if e["seq"] > seq][-limit:]
