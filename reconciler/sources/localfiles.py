"""Local desired-state files (``serve --desired FILE``): applied at start and on every change.

The files are layers like a fleet repository's, applied by the same ``LayeredApplier``
(``reconciler.sources.applier``: later files win, a ``null`` deletes what an earlier file set,
whole or nothing, keys another layered source owns refused). Their keys carry the source
``file:<path>`` of the file declaring them; keys no file declares any more are pruned and return
to their defaults.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hostcore.documents import DocumentError, load_document, settings_of
from reconciler.events import Events
from reconciler.schema import Schema
from reconciler.sources.applier import FILE_SOURCE_PREFIX, LayeredApplier, LayerError
from reconciler.sources.layers import Layer
from reconciler.store import Store
from reconciler.supervise import LoopHealth, supervised
from reconciler.watch import FileWatch

TX = "desired-files"
SETTLE_SECONDS = 0.1
# How often the watch is refreshed when no file changes: a reader thread that ended is then
# reported and started again (and every file re-read) within this time, not at the next edit.
REFRESH_SECONDS = 60.0


class DesiredFiles:
    """The files as one source: the store it commits to and the schema they must satisfy."""

    def __init__(
        self, store: Store, schema: Schema, events: Events, paths: Sequence[str | Path]
    ):
        self.store = store
        self.schema = schema
        self.events = events
        self.paths = [Path(p).resolve() for p in paths]
        self.status: dict[str, Any] = {
            "files": [str(p) for p in self.paths],
            "condition": "Pending",
            "reason": "",
        }
        self._lock = threading.Lock()
        self.applier = LayeredApplier(store, schema, FILE_SOURCE_PREFIX, TX,
                                      lambda layer: f"{FILE_SOURCE_PREFIX}{layer.origin}")

    def apply(self) -> list[str]:
        """Apply the files as they are now; returns the keys whose values changed."""
        with self._lock:
            try:
                changed = self._apply()
            except (DocumentError, LayerError) as error:
                self.status.update(condition="Invalid", reason=str(error))
                self.events.emit("failure", f"desired-state files not applied: {error}",
                                 level="warning")
                return []
            except Exception as error:  # a full disk, a locked store: not applied, retried
                self.status.update(condition="Failed", reason=f"{type(error).__name__}: {error}")
                self.events.emit("failure", f"desired-state files not applied: {error}",
                                 level="error")
                raise
            self.status.update(condition="Applied", reason=f"{len(changed)} key(s) changed")
            return changed

    def _apply(self) -> list[str]:
        layers = [Layer(str(p), settings_of(load_document(p), str(p))) for p in self.paths]
        changed = self.applier.apply(layers).changed
        if changed:
            self.events.emit(
                "desired-files", f"applied {len(changed)} change(s) from files", changed=changed
            )
        return changed


class DesiredFilesLoop:
    """Re-applies the files when one changes (watchdog), then calls ``wake`` (with a reason)."""

    def __init__(self, source: DesiredFiles, wake: Callable[[str], None],
                 health: LoopHealth | None = None, refresh_seconds: float = REFRESH_SECONDS):
        self.source = source
        self.refresh_seconds = refresh_seconds
        self.wake = wake
        self.health = health or LoopHealth("desired-files")
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch = FileWatch(Path("/"), [str(p) for p in source.paths], self._changed,
                                self.health)

    def _changed(self, _path: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._watch.stop()

    async def run(self) -> None:
        """Supervised (``reconciler.supervise``): a failed apply is reported and retried with
        backoff, even when no file changes again (the disk that was full has room now)."""
        self._loop = asyncio.get_running_loop()
        self._watch.start()
        self._wake.set()  # apply once at start
        await supervised(self.health, self._run)

    async def _run(self) -> None:
        self._wake.set()  # (re)start: apply what the files say now
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.refresh_seconds)
            except TimeoutError:  # quiet: a reader that ended reports every file, waking us
                self._watch.refresh()
                continue
            while not self._stopping:  # let a burst of writes settle: never read a half file
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), SETTLE_SECONDS)
                except TimeoutError:
                    break
            if self._stopping:
                return
            changed = await asyncio.to_thread(self.source.apply)
            self._watch.refresh()  # a reader that ended is started again
            self.health.ok()
            if changed:
                self.wake("desired files changed")
