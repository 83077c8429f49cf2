"""The file watch on real inotify: what a hand edit does to a managed file is seen, by the
file's path; what happens to other names in the same directory (the pass's temporary files
among them) is not; a directory that appears, or is removed and made again, is watched after
``refresh``."""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

import pytest

from reconciler.effects import write_atomic
from reconciler.supervise import LoopHealth
from reconciler.watch import FileWatch
from tests.daemon import eventually


class Seen:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, path: str) -> None:
        with self.lock:
            self.paths.append(path)

    def take(self) -> list[str]:
        with self.lock:
            taken, self.paths = self.paths, []
        return taken


@pytest.fixture
def watched(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/motd").write_text("hello\n")
    seen = Seen()
    watch = FileWatch(tmp_path, ["/etc/motd", "/etc/later/conf"], seen)
    watch.start()
    yield tmp_path, watch, seen
    watch.stop()


def _settled(seen: Seen, path: str) -> list[str]:
    """What was seen, once ``path`` was; a marker write after the action flushes the queue."""
    eventually(lambda: path in seen.paths)
    return seen.take()


def test_hand_edits_of_a_managed_file_are_seen_by_its_path(watched) -> None:
    root, _, seen = watched
    motd = str(root / "etc/motd")
    with open(motd, "a") as handle:  # an edit in place
        handle.write("edited\n")
    assert set(_settled(seen, motd)) == {motd}
    os.chmod(motd, 0o600)  # a mode change alone
    assert set(_settled(seen, motd)) == {motd}
    os.unlink(motd)
    assert set(_settled(seen, motd)) == {motd}
    (root / "etc/motd.new").write_text("replaced\n")
    os.rename(root / "etc/motd.new", motd)  # an editor's rename over it
    assert set(_settled(seen, motd)) == {motd}


def test_other_names_in_the_directory_are_not_reported(watched) -> None:
    root, _, seen = watched
    motd = str(root / "etc/motd")
    (root / "etc/other").write_text("x")
    os.unlink(root / "etc/other")
    write_atomic(root, "/etc/motd", b"written by a pass\n", 0o644)  # temp file, then rename
    assert _settled(seen, motd) == [motd]  # the rename, once; nothing for the temp name


def test_a_directory_made_later_or_made_again_is_watched_after_refresh(watched) -> None:
    root, watch, seen = watched
    later = root / "etc/later"
    later.mkdir()
    watch.refresh()
    (later / "conf").write_text("a")
    assert str(later / "conf") in _settled(seen, str(later / "conf"))
    shutil.rmtree(later)  # the directory goes: its file is reported
    eventually(lambda: str(later / "conf") in seen.paths)
    seen.take()
    later.mkdir()
    watch.refresh()
    (later / "conf").write_text("b")
    assert str(later / "conf") in _settled(seen, str(later / "conf"))


def test_a_directory_moved_away_is_reported_and_its_path_watched_again(watched) -> None:
    root, watch, seen = watched
    motd = str(root / "etc/motd")
    os.rename(root / "etc", root / "etc.old")
    eventually(lambda: motd in seen.paths)
    seen.take()
    (root / "etc").mkdir()
    watch.refresh()
    os.chmod(root / "etc.old/motd", 0o600)  # would be one event if the old watch followed it
    (root / "etc/motd.new").write_text("the new one")
    os.rename(root / "etc/motd.new", motd)  # one event: the new directory is watched
    assert _settled(seen, motd) == [motd]


def test_stop_ends_the_reader_thread(tmp_path: Path) -> None:
    before = threading.active_count()
    watch = FileWatch(tmp_path, ["/etc/motd"], lambda _path: None)
    watch.start()
    assert threading.active_count() == before + 1
    watch.stop()
    assert threading.active_count() == before


def test_a_failing_callback_is_reported_and_the_watch_goes_on(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    seen = Seen()
    calls = []

    def flaky(path: str) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise RuntimeError("callback broke")
        seen(path)

    health = LoopHealth("file-watch")
    watch = FileWatch(tmp_path, ["/etc/motd"], flaky, health)
    watch.start()
    try:
        motd = tmp_path / "etc/motd"
        motd.write_text("one")
        eventually(lambda: health.errors == 1)
        assert "callback broke" in health.last_error
        os.chmod(motd, 0o600)
        eventually(lambda: str(motd) in seen.paths)  # the reader is still running
    finally:
        watch.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_reader_that_ended_is_reported_and_restarted_by_refresh(watched) -> None:
    root, watch, seen = watched
    motd = str(root / "etc/motd")
    reader = watch._inotify

    def read_fails(**_options: object) -> None:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    reader.read_events = read_fails  # its next read fails: the thread ends, with no callback
    (root / "etc/other").write_text("x")  # ends the read under way
    reader.join(timeout=5)
    assert not reader.is_alive() and seen.take() == []
    watch.refresh()
    assert watch.health.errors == 1 and "reader thread ended" in watch.health.last_error
    assert motd in seen.take()  # every file reported: its events may have been lost
    os.chmod(motd, 0o600)
    assert set(_settled(seen, motd)) == {motd}  # watched again by the new reader


def test_stop_reports_no_file(tmp_path: Path) -> None:
    """Closing the reader removes every watch; that is no change to a managed file."""
    (tmp_path / "etc").mkdir()
    seen = Seen()
    watch = FileWatch(tmp_path, ["/etc/motd"], seen)
    watch.start()
    watch.stop()
    assert seen.paths == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_reader_that_ended_is_closed_when_it_is_replaced(watched) -> None:
    """Its inotify descriptor and wake-up pipe are closed, not left open by every restart, and
    the removal of its watches is not reported again."""
    root, watch, seen = watched
    descriptors = len(os.listdir("/proc/self/fd"))
    reader = watch._inotify

    def read_fails(**_options: object) -> None:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    reader.read_events = read_fails
    (root / "etc/other").write_text("x")  # ends the read under way
    reader.join(timeout=5)
    watch.refresh()
    assert sorted(seen.take()) == sorted(watch.files)  # once each, from the restart
    assert len(os.listdir("/proc/self/fd")) == descriptors
