"""Watch rendered files for hand edits (watchdog's inotify reader); an event only wakes the worker.

Only the directories that hold managed files are watched (never the whole root, which may be
``/``). Directories that do not exist yet are picked up by ``refresh`` after a pass creates them.

One thread: watchdog's ``InotifyFD`` reads the kernel's events and hands each to the directory's
callback here, which compares the event's name with the names managed in that directory. A pass
writes each file through a temporary sibling (create, write, chmod, close, rename: six events,
one of them about a managed name); watchdog's ``Observer`` would route every one of them through
two more threads and a rename-pairing queue, about 0.5 ms of CPU a written file, on every pass.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.observers.inotify_c import InotifyConstants as In
from watchdog.observers.inotify_c import InotifyEvent, InotifyFD, WatchDescriptor

from reconciler.supervise import LoopHealth

# What a hand edit can do to a file. Opens, reads and closes without a write are left out of
# the mask itself: every pass reads every managed file. The directory's own removal or move
# (``*_SELF``) ends its watch; ``refresh`` watches it again where it is expected.
MASK = (In.IN_CREATE | In.IN_DELETE | In.IN_MODIFY | In.IN_ATTRIB | In.IN_CLOSE_WRITE
        | In.IN_MOVED_FROM | In.IN_MOVED_TO | In.IN_DELETE_SELF | In.IN_MOVE_SELF)


class _Directory:
    """The callback of one watched directory: its managed names, by the bytes inotify gives."""

    def __init__(self, watch: FileWatch, directory: str, names: set[str]):
        self.watch = watch
        self.directory = directory
        self.names = {os.fsencode(n): os.path.join(directory, n) for n in names}
        self.wd: WatchDescriptor | None = None
        # The reader it belonged to is closed (stopped, or ended and replaced): the removal of
        # its watches that closing does is no change to any file.
        self.retired = False

    def on_event(self, event: InotifyEvent) -> None:
        if self.retired:
            return
        path = self.names.get(event.name)
        if path is not None:
            self.watch.notify_safely(path)
        elif event.is_move_self:  # the watch would follow the directory to its new name
            self.watch.lost(self, remove=True)

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:  # removed, or on its file system
        if not self.retired:
            self.watch.lost(self, remove=False)

    def on_queue_overflow(self) -> None:  # events were lost: look at every file
        for path in self.names.values() if not self.retired else ():
            self.watch.notify_safely(path)


class FileWatch:
    """Calls ``notify`` with the path of a managed file that changed, on the reader's thread.

    No failure ends the watch silently: one raised by ``notify`` (or by handling an event) is
    reported to ``health`` and the reader goes on with the next event; a reader thread that
    ended anyway (watchdog's own read failed) is reported and started again by the next
    ``refresh``, which then reports every file (its events may have been lost)."""

    def __init__(self, root: Path, paths: Iterable[str], notify: Callable[[str], None],
                 health: LoopHealth | None = None):
        self.health = health or LoopHealth("file-watch")
        self.files = {str(Path(root) / p.lstrip("/")) for p in paths}
        by_directory: dict[str, set[str]] = {}
        for file in self.files:
            directory, name = os.path.split(file)
            by_directory.setdefault(directory, set()).add(name)
        self.directories = set(by_directory)
        self.notify = notify
        self._by_directory = sorted(by_directory.items())
        self._callbacks = self._directories()
        self._inotify: InotifyFD | None = None
        self._lock = threading.Lock()

    def _directories(self) -> list[_Directory]:
        """A callback per directory, none watched yet: one set per reader."""
        return [_Directory(self, d, names) for d, names in self._by_directory]

    @staticmethod
    def _reader() -> InotifyFD:
        reader = InotifyFD()
        reader.daemon = True
        reader.start()
        return reader

    def start(self) -> None:
        self._inotify = self._reader()
        self.refresh()

    def notify_safely(self, path: str) -> None:
        try:
            self.notify(path)
        except Exception as error:  # noqa: BLE001 - reported; the reader must go on
            self.health.failed(error)

    def refresh(self) -> None:
        """Watch directories that appeared (or came back) since the last call; start the
        reader again if it ended."""
        ended: InotifyFD | None = None
        with self._lock:
            if self._inotify is None:
                return
            if not self._inotify.is_alive():
                self.health.failed(RuntimeError("the inotify reader thread ended; restarted"))
                ended = self._inotify
                for callback in self._callbacks:
                    callback.retired = True
                self._inotify, self._callbacks = self._reader(), self._directories()
            for n, callback in enumerate(self._callbacks):
                if callback.wd is None and os.path.isdir(callback.directory):
                    try:
                        callback.wd = self._inotify.add_callback(
                            os.fsencode(callback.directory), MASK, callback, n)
                    except OSError:  # gone again, or not ours to read: the next refresh
                        continue
        if ended is not None:
            try:
                ended.close()  # its watches and descriptors, not left open by every restart
            except OSError as error:
                self.health.failed(error)
            for file in sorted(self.files):
                self.notify_safely(file)

    def lost(self, callback: _Directory, *, remove: bool) -> None:
        """The directory was removed or moved away: every file in it changed; the directory
        at that path (a new one) is watched on the next ``refresh``."""
        with self._lock:
            wd, callback.wd = callback.wd, None
            if remove and wd is not None and self._inotify is not None:
                try:
                    self._inotify.remove_callbacks([(wd, self._callbacks.index(callback))])
                except OSError as error:  # reported; the next refresh watches it again
                    self.health.failed(error)
        for path in callback.names.values():
            self.notify_safely(path)

    def stop(self) -> None:
        with self._lock:
            inotify, self._inotify = self._inotify, None
            for callback in self._callbacks:  # closing removes every watch: no file changed
                callback.retired = True
        if inotify is not None:
            inotify.stop()
            inotify.join(timeout=5)
