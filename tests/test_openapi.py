"""The server is held to its OpenAPI spec: schemathesis against a live app, no 5xx, conforming."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings

from reconciler.api.server import make_app
from reconciler.boot import boot
from reconciler.events import Events
from reconciler.host import open_host
from reconciler.metrics import Metrics
from reconciler.worker import Worker
from tests.daemon import REPO

SPEC = REPO / "reconciler/api/openapi.yaml"
EXAMPLES_PER_OPERATION = 25
# Bodies of these are settings documents, validated by schemas/ (the one source of truth), and
# commits answer 422 when nothing is pending: a schema-valid request may be refused by design.
STATE_OR_SETTINGS_DEPENDENT = {
    "PATCH /settings", "PATCH /settings/keypair", "POST /tx/commit", "POST /tx/commit_and_apply",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    """The real app (store, worker, renderers) served on loopback TCP for schemathesis."""
    state = tmp_path_factory.mktemp("openapi")
    host = open_host(Path(state), variant="aws-dev")
    boot(host.store, host.schema, [REPO / "examples/user-data/aws-dev.toml"])
    port = _free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        worker = Worker(host, Events(), Metrics(), interval=3600)
        app = make_app(host, worker, Events(), Metrics())
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        task = asyncio.create_task(worker.run())
        started.set()
        await stop.wait()
        worker.stop()
        await task
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    host.store.close()


def _operations() -> list:
    schema = schemathesis.openapi.from_path(SPEC)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", _operations(), ids=lambda op: op.label)
def test_operation_conforms(operation, base_url):
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        case.call_and_validate(base_url=base_url, excluded_checks=excluded)

    excluded = []
    if operation.label in STATE_OR_SETTINGS_DEPENDENT:
        excluded.append(schemathesis.checks.positive_data_acceptance)

    check()
