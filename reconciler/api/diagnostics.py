"""``GET /diagnostics``: everything ``logdog`` archives, gathered by the daemon, secrets redacted.

The daemon gathers it (not logdog) because only the daemon knows which settings are secret (the
schema's ``x-secret``) and every secret value (the process-wide scrubber): the settings are
redacted by key, then the whole answer by value, so neither a user-data blob nor a registry
password found in a log line, an event or a container's output gets out. The answer maps file
names of the archive to their content (text, or JSON to write).
"""

from __future__ import annotations

import asyncio
import hashlib
import platform
import sys
import time
from typing import Any

from aiohttp import web

from reconciler.containers import HostContainers
from reconciler.containers.engine import EngineError
from reconciler.effects import read_observed
from reconciler.logs import recent_lines
from reconciler.osinfo import package_version
from reconciler.redact import SCRUBBER, redact_change, redact_value

CONTAINER_LOG_LINES = 500


def collect(host: Any, worker: Any, events: Any,
            status: dict[str, Any] | None = None) -> dict[str, Any]:
    """``status``: the daemon's ``GET /status`` (every part); else the host's own view."""
    from reconciler.api.server import services_view, status_view

    store, schema = host.store, host.schema
    files: dict[str, Any] = {
        "reconciler.log": "\n".join(recent_lines()) + "\n",
        "status.json": status if status is not None else status_view(host, worker),
        "events.json": events.since(0, limit=10_000),
        "settings.json": redact_value(schema, "settings", store.live_document()),
        "services.json": services_view(host),
        "receipts.json": {"last": store.last_receipt(), "last_ok": store.last_receipt(True)},
        "generations.json": [
            {"generation": g.number, "time": g.time, "tx": g.tx, "source": g.source,
             "changes": [redact_change(schema, {"key": c.key, "old": c.old, "new": c.new,
                                                "source": c.source}) for c in g.changes]}
            for g in store.generations(1000)
        ],
        "configuration-files.json": _rendered_files(host),
        "versions.json": {
            "host-reconciler": package_version(), "python": sys.version.split()[0],
            "platform": platform.platform(), "os": host.reconciler.os_info,
            "variant": host.variant, "collected": time.time(),
        },
    }
    if host.containers is not None:
        files.update(_containers(host.containers))
    if host.updates is not None:
        files["updates.json"] = _updates(host.updates)
    return SCRUBBER.scrub(files)


def _rendered_files(host: Any) -> dict[str, Any]:
    paths = {spec.name: spec.path for spec in host.catalog.files.values()}
    observed = read_observed(host.root, paths.values())
    answer = {}
    for name, path in sorted(paths.items()):
        found = observed.get(path)
        answer[name] = {
            "path": path,
            "sha256": hashlib.sha256(found.content).hexdigest() if found else None,
            "mode": f"{found.mode:04o}" if found else None,
        }
    return answer


def _containers(executor: HostContainers) -> dict[str, Any]:
    files: dict[str, Any] = {"host-containers.json": executor.status()}
    engine = executor.engine
    if not engine.initialized():
        return files
    try:
        listed = engine.list()
    except EngineError as error:
        files["host-containers.errors"] = str(error)
        return files
    files["host-containers-engine.json"] = [
        {"name": c.name, "state": c.state, "managed": c.managed, "image": c.image_id,
         "exit_code": c.exit_code, "labels": dict(c.labels)} for c in listed
    ]
    for container in listed:
        if container.managed:
            files[f"host-containers/{container.name}.log"] = engine.logs(
                container.name, CONTAINER_LOG_LINES) + "\n"
    return files


def _updates(executor: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {"executor": executor.status()}
    try:
        current = executor.manager.peek()
        answer["status"] = current.to_json() if current else None
    except Exception as error:  # a broken status file is itself worth reporting
        answer["error"] = f"{type(error).__name__}: {error}"
    disk = getattr(executor.manager, "disk", None)
    if disk:
        answer["disk"] = str(disk)
        try:
            from updates.partitions import open_os_disk

            with open_os_disk(str(disk), writable=False) as opened:
                answer["partitions"] = opened.status_text()  # signpost status: GPT flags
        except Exception as error:
            answer["partitions_error"] = f"{type(error).__name__}: {error}"
    return answer


async def diagnostics(request: web.Request) -> web.Response:
    from reconciler.api.server import EVENTS, HOST, WORKER, _json

    app = request.app
    from reconciler.api.server import app_status

    return _json(await asyncio.to_thread(collect, app[HOST], app[WORKER], app[EVENTS],
                                         app_status(app)))


def register(app: web.Application) -> None:
    app.router.add_get("/diagnostics", diagnostics)
