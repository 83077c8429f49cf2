"""Update endpoints: `POST /actions/{refresh-updates,prepare-update,activate-update,
deactivate-update}` and `GET /updates/status`, Bottlerocket's shapes and codes.

204 when the command started (poll the status for its outcome); 409 not allowed in this state;
404 no chosen update / no staged image / status uninitialized; 423 another update command runs
(also for `GET /updates/status`, as upstream: clients retry; its JSON body carries the running
command's `progress`, bytes done / total of the image being written). Without an OS disk the
endpoints answer 404 "updates are not configured".

Wiring: `updates_routes.register(app, host)` in `make_app`; it takes the manager of the
host's `UpdatesExecutor` (`host.updates`, None without a disk).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from updates import status as sm

if TYPE_CHECKING:  # the manager (and its disk code) loads only on a host with an OS disk
    from reconciler.host import Host
    from updates.manager import UpdateManager

MANAGER = web.AppKey("update_manager", object)
NOT_CONFIGURED = "Updates are not configured: start the daemon with --disk PATH"

routes = web.RouteTableDef()


def _manager(request: web.Request) -> UpdateManager:
    manager = request.app[MANAGER]
    if manager is NOT_CONFIGURED:
        raise web.HTTPNotFound(text=NOT_CONFIGURED)
    return manager  # type: ignore[return-value]


async def _start(request: web.Request, command: str) -> web.Response:
    manager = _manager(request)
    try:
        await asyncio.to_thread(manager.start, command)
    except sm.CommandRefused as e:
        return web.Response(status=e.status, text=str(e))
    except Exception as e:  # the disk cannot be read, say
        return web.Response(status=500, text=f"{type(e).__name__}: {e}")
    return web.Response(status=204)


@routes.post("/actions/refresh-updates")
async def refresh_updates(request: web.Request) -> web.Response:
    return await _start(request, "refresh")


@routes.post("/actions/prepare-update")
async def prepare_update(request: web.Request) -> web.Response:
    return await _start(request, "prepare")


@routes.post("/actions/activate-update")
async def activate_update(request: web.Request) -> web.Response:
    return await _start(request, "activate")


@routes.post("/actions/deactivate-update")
async def deactivate_update(request: web.Request) -> web.Response:
    return await _start(request, "deactivate")


@routes.get("/updates/status")
async def update_status(request: web.Request) -> web.Response:
    manager = _manager(request)
    try:
        current = manager.status()
    except sm.Busy as e:  # 423, as upstream; the body says how far the command got
        return web.json_response({"error": str(e), "progress": manager.progress()},
                                 status=e.status, dumps=_dumps)
    except (sm.CommandRefused, sm.Uninitialized) as e:
        return web.Response(status=e.status, text=str(e))
    return web.json_response(current.to_json(), dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2)


def register(app: web.Application, host: Host | None = None,
             manager: UpdateManager | None = None) -> None:
    """Add the update routes; the manager is `manager` or the host's updates executor's."""
    if manager is None and host is not None and host.updates is not None:
        manager = host.updates.manager
    app[MANAGER] = manager if manager is not None else NOT_CONFIGURED
    app.add_routes(routes)
