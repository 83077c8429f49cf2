"""Watch rendered files for hand edits (watchdog); an event only wakes the worker.

Only the directories that hold managed files are watched (never the whole root, which may be
``/``). Directories that do not exist yet are picked up by ``refresh`` after a pass creates them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

# What a hand edit can do to a file. Opens and reads are left out of the inotify mask itself:
# every pass reads every managed file, and each read would otherwise wake watchdog's threads.
EDITS = [FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent]


class _Handler(FileSystemEventHandler):
    def __init__(self, paths: set[str], notify: Callable[[str], None]):
        self.paths = paths
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for candidate in (event.src_path, getattr(event, "dest_path", "")):
            if candidate in self.paths:
                self.notify(str(candidate))
                return


class FileWatch:
    def __init__(self, root: Path, paths: Iterable[str], notify: Callable[[str], None]):
        self.files = {str(Path(root) / p.lstrip("/")) for p in paths}
        self.directories = {str(Path(f).parent) for f in self.files}
        self._handler = _Handler(self.files, notify)
        self._observer = Observer()
        self._watched: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.refresh()
        self._observer.start()

    def refresh(self) -> None:
        """Watch directories that appeared since the last call."""
        with self._lock:
            for directory in sorted(self.directories - self._watched):
                if Path(directory).is_dir():
                    self._observer.schedule(
                        self._handler, directory, recursive=False, event_filter=EDITS
                    )
                    self._watched.add(directory)

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
