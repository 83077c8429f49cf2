"""Local desired-state files (``serve --desired``): applied at start and re-applied on change."""

from __future__ import annotations

import asyncio
import errno

import pytest

from reconciler.events import Events
from reconciler.schema import Schema
from reconciler.sources.localfiles import DesiredFiles, DesiredFilesLoop
from reconciler.store import Store
from reconciler.supervise import LoopHealth
from tests.daemon import Daemon, eventually


def motd(d: Daemon) -> str:
    path = d.root / "etc/motd"
    return path.read_text() if path.exists() else ""


def test_desired_file_is_applied_watched_and_pruned(tmp_path):
    desired = tmp_path / "desired.toml"
    desired.write_text('[settings]\nmotd = "from the file"\n[settings.aws]\nregion = "eu-west-1"\n')
    d = Daemon(tmp_path / "state", ["--desired", str(desired)])
    try:
        eventually(lambda: motd(d).startswith("from the file"))
        source = d.ok("GET", "/provenance?keys=settings.motd")["settings.motd"]["source"]
        assert source == f"file:{desired.resolve()}"

        desired.write_text('[settings]\nmotd = "edited"\n[settings.aws]\nregion = "eu-west-1"\n')
        eventually(lambda: motd(d).startswith("edited"))

        desired.write_text('[settings.aws]\nregion = "eu-west-1"\n')  # motd no longer declared
        eventually(lambda: d.ok("GET", "/provenance?keys=settings.motd")["settings.motd"]["source"]
                   == "default")

        desired.write_text('[settings.ntp]\ntime-server = ["x"]\n')  # a typo: nothing applied
        status = eventually(lambda: (s := d.ok("GET", "/status")["desired_files"])["condition"]
                            == "Invalid" and s)
        assert "settings.ntp.time-server" in status["reason"] and "desired.toml" in status["reason"]
        assert d.ok("GET", "/settings")["aws"]["region"] == "eu-west-1"
    finally:
        d.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_watch_reader_that_ended_is_restarted_while_no_file_changes(tmp_path):
    """The loop refreshes its watch when quiet, not only after an apply: a reader thread that
    ended is reported, started again, and every file re-read, before the next edit."""
    desired = tmp_path / "desired.toml"
    desired.write_text('[settings]\nmotd = "one"\n')
    store = Store(tmp_path / "store.sqlite")
    source = DesiredFiles(store, Schema.load("aws-dev"), Events(), [desired])
    health = LoopHealth("desired-files")
    woken: list[str] = []
    loop = DesiredFilesLoop(source, woken.append, health, refresh_seconds=0.2)

    def motd() -> object:
        return store.live_document().get("motd")

    async def scenario() -> None:
        task = asyncio.create_task(loop.run())
        try:
            await until(lambda: motd() == "one")
            reader = loop._watch._inotify

            def read_fails(**_options: object) -> None:
                raise OSError(errno.ENOMEM, "Cannot allocate memory")

            reader.read_events = read_fails  # its next read fails: the thread ends, unheard
            (tmp_path / "other").write_text("x")  # ends the read under way
            await asyncio.to_thread(reader.join, 5)
            assert not reader.is_alive()
            desired.write_text('[settings]\nmotd = "two"\n')  # unseen by the dead reader
            await until(lambda: motd() == "two")
            assert "reader thread ended" in (health.last_error or "")  # reported
            desired.write_text('[settings]\nmotd = "three"\n')  # the new reader sees it
            await until(lambda: motd() == "three")
        finally:
            loop.stop()
            await task

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    assert woken and set(woken) == {"desired files changed"}


async def until(condition, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)
