"""A bounded in-memory event journal (``GET /events``): what happened, newest last."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from reconciler.logs import get_logger
from reconciler.redact import SCRUBBER

log = get_logger("events")


class Events:
    def __init__(self, capacity: int = 1000):
        self._items: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._seq = 0
        self._lock = threading.Lock()

    def emit(self, kind: str, message: str, **fields: Any) -> dict[str, Any]:
        message, fields = SCRUBBER.scrub((message, fields))  # no secret in the journal
        with self._lock:
            self._seq += 1
            event = {
                "seq": self._seq,
                "time": time.time(),
                "type": kind,
                "message": message,
                **fields,
            }
            self._items.append(event)
        log.info(message, kind=kind, **fields)
        return event

    def since(self, seq: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._items if e["seq"] > seq][-limit:]
