"""Hand the heap a pass freed back to the kernel once the daemon goes quiet.

CPython frees its objects into glibc's malloc, which keeps the pages: the small blocks of a
pass (the boot pass's schema loading, user-data parsing and rendering, a commit's diff) rarely
add up to its trim threshold, so an idle daemon kept about 1.3 MiB resident for nothing
(``bench/bench_idle_rss.py``). ``malloc_trim(0)`` returns them. It runs once no pass has run for
``IdleTrim.delay`` seconds, never inside a burst of changes: it walks the whole heap, a cost a
PATCH should not pay. Without glibc (musl, say) there is nothing to call and nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Callable


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is not glibc."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL(None).malloc_trim  # the C library the interpreter is linked with
    except (ValueError, OSError, AttributeError):
        return None


class IdleTrim:
    """``poke()`` after each pass (on the event loop); the trim runs ``delay`` s after the last."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float = 2.0) -> None:
        self.loop = loop
        self.delay = delay
        self._trim = malloc_trim()
        self._pending: asyncio.TimerHandle | None = None

    def poke(self) -> None:
        if self._trim is None:
            return
        if self._pending is not None:
            self._pending.cancel()
        self._pending = self.loop.call_later(self.delay, self._trim, 0)

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
