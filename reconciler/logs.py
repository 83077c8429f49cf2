"""structlog set-up: JSON lines when stderr is not a terminal, readable lines when it is."""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque

import structlog

from reconciler.redact import SCRUBBER


class _Tee:
    """stderr, plus the last lines kept in memory for ``GET /diagnostics`` (logdog)."""

    def __init__(self, capacity: int = 2000):
        self.lines: deque[str] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self.lines.extend(line for line in text.splitlines() if line)
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


TAIL = _Tee()


def recent_lines() -> list[str]:
    """The daemon's last log lines (already scrubbed of secrets), oldest first."""
    with TAIL._lock:
        return list(TAIL.lines)


def configure(level: str = "info") -> None:
    renderer: structlog.types.Processor
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SCRUBBER.processor,  # secrets (x-secret settings) never reach a log line
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(TAIL),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
