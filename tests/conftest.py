"""Fixtures shared by every test module, written once: the daemon, the update simulator (a
real TUF repository served on 127.0.0.1 and a GPT disk image), and scratch renderers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.daemon import Daemon, eventually
from tests.scratch import write_renderers
from tests.tufserver import Server, serving


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``start(args, env=None, ready=True, state=tmp_path/"state") -> Daemon``; with ``ready``
    it returns once ``GET /status`` says Ready. Every daemon started is stopped after the
    test."""
    started: list[Daemon] = []

    def start(args: Sequence[str] = (), env: Mapping[str, str] | None = None,
              ready: bool = False, state: Path | None = None, timeout: float = 30) -> Daemon:
        daemon = Daemon(state or tmp_path / "state", list(args), env=dict(env or {}) or None)
        started.append(daemon)
        if ready:
            eventually(lambda: daemon.ok("GET", "/status")["state"] == "Ready", timeout)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def serve() -> Iterator[Callable[[Path], Server]]:
    """``serve(directory)`` starts an HTTP server on 127.0.0.1 for the test's duration."""
    yield from serving()


@pytest.fixture
def sim(tmp_path: Path, serve):  # noqa: ANN201 - tests.updates.simhost.Sim
    """A simulated host with an OS disk at 1.0.0 and a repository publishing 1.1.0."""
    from tests.updates.simhost import make_sim

    simulated = make_sim(tmp_path, serve)
    simulated.publish("1.1.0")
    return simulated


@pytest.fixture
def scratch_renderers(tmp_path: Path) -> Callable[..., Path]:
    """``write(metadata, templates, **values) -> folder`` (tests.scratch.write_renderers) under
    ``tmp_path/renderers``."""

    def write(metadata: str, templates: Mapping[str, str], **values: object) -> Path:
        return write_renderers(tmp_path / "renderers", metadata, templates, **values)

    return write
