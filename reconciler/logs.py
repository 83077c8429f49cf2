"""structlog set-up: JSON lines when stderr is not a terminal, readable lines when it is."""

from __future__ import annotations

import logging
import sys
import threading
import time
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


LOG_EVERY = 30.0  # seconds between two log lines of the same repeated error
_repeats: dict[str, tuple[float, int]] = {}  # key -> (monotonic time last logged, suppressed)
_repeats_lock = threading.Lock()


def rate_limited(logger, key: str, message: str, **fields) -> bool:
    """Log ``message`` as an error unless the same ``key`` was logged less than ``LOG_EVERY``
    seconds ago; the next line that gets through says how many were suppressed. A flood (an
    fd-exhausted accept loop, a loop failing on a full disk) costs one line per period."""
    now = time.monotonic()
    with _repeats_lock:
        last, suppressed = _repeats.get(key, (None, 0))
        if last is not None and now - last < LOG_EVERY:
            _repeats[key] = (last, suppressed + 1)
            return False
        _repeats[key] = (now, 0)
    if suppressed:
        fields["suppressed_repeats"] = suppressed
    if len(_repeats) > 10_000:  # keys are few in practice; never let them grow without bound
        with _repeats_lock:
            _repeats.clear()
    logger.error(message, **fields)
    return True


def asyncio_exception_handler(loop, context: dict) -> None:
    """The event loop's handler: the same error (``accept`` out of file descriptors, say) is
    logged once per period, not once per attempt."""
    error = context.get("exception")
    key = f"asyncio:{context.get('message')}:{type(error).__name__ if error else ''}"
    rate_limited(get_logger("asyncio"), key, str(context.get("message", "event loop error")),
                 error=f"{type(error).__name__}: {error}" if error else None)
