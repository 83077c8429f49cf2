"""The HTTP API on a Unix socket: Bottlerocket's endpoints, shapes and status codes, plus ours.

Handlers are thin: they parse the request, call the store or the host, and map errors to status
codes (400 invalid input naming the key, 404, 409, 413, 422 nothing to commit). Error bodies are
plain text, as in Bottlerocket. Writes are audited with the caller's uid and pid (SO_PEERCRED).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import sqlite3
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from hostcore.documents import DocumentError, parse_json
from hostcore.keys import InvalidKeyError, flatten, is_under, join_key, split_key, unflatten
from reconciler import confirm
from reconciler import status as status_rules
from reconciler.api import diagnostics, exec_route, limits, updates_routes
from reconciler.api.keypair import patch_from_pairs
from reconciler.events import Events
from reconciler.fleet.reboots import RebootSlots, reboot_host
from reconciler.generators import setting_generator_commands
from reconciler.host import Host
from reconciler.logs import get_logger
from reconciler.metrics import CONTENT_TYPE, Metrics
from reconciler.redact import SCRUBBER, redact_change, redact_value, secret_values
from reconciler.reserve import ReserveExhausted
from reconciler.schema import InvalidSettings
from reconciler.sources.applier import owned_keys, owner_message
from reconciler.sources.gitloop import GitLoop
from reconciler.sources.localfiles import DesiredFiles
from reconciler.store import (
    Actor,
    NothingToCommit,
    PendingLimit,
    RollbackRefused,
    Store,
    UnknownGeneration,
    sqlite_code,
    store_busy,
)
from reconciler.worker import Worker

MAX_BODY = 1024 * 1024
DEFAULT_TX = "default"
log = get_logger("api")
audit = get_logger("audit")

HOST = web.AppKey("host", Host)
WORKER = web.AppKey("worker", Worker)
EVENTS = web.AppKey("events", Events)
METRICS = web.AppKey("metrics", Metrics)
GIT = web.AppKey("git", object)  # GitLoop | None
DESIRED_FILES = web.AppKey("desired_files", object)  # DesiredFiles | None
ACCESS = web.AppKey("access", object)  # AccessPolicy | None
CONFIRM = web.AppKey("confirm", object)  # ConfirmWatch | None
REBOOTS = web.AppKey("reboots", object)  # RebootSlots | None
LOOPS = web.AppKey("loops", object)  # supervise.Loops | None
ROLLOUTS = web.AppKey("rollouts", object)  # fleet.rollout_watch.Rollouts | None
SETTINGS_BODY = web.AppKey("settings_body", object)  # SettingsBody

routes = web.RouteTableDef()
# domain errors -> status code; the body is the error's message (names the key and the rule)
ERROR_STATUS: dict[type[Exception], int] = {
    InvalidSettings: 400,
    InvalidKeyError: 400,
    NothingToCommit: 422,
    UnknownGeneration: 404,
    RollbackRefused: 400,
    PendingLimit: 429,
    ReserveExhausted: 507,
}


class BadRequest(web.HTTPBadRequest):
    def __init__(self, message: str):
        super().__init__(text=message)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, sort_keys=True))


def _list_param(request: web.Request, name: str, required: bool = False) -> list[str] | None:
    if name not in request.query:
        if required:
            raise BadRequest(f"Missing input '{name}'")
        return None
    value = request.query[name]
    if not value:
        raise BadRequest(f"Input '{name}' cannot be empty")
    return list(dict.fromkeys(part for part in value.split(",") if part))


def _tx(request: web.Request) -> str:
    return request.query.get("tx") or DEFAULT_TX


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def _settings_key(raw: str) -> str:
    segments = split_key(raw)
    if segments[0] != "settings":
        raise InvalidKeyError(f"key {raw!r} is not under 'settings'")
    return join_key(segments)


def _data_keys(raw: list[str]) -> list[str]:
    """Normalized keys of a ``keys=`` list; like Bottlerocket, a valid key outside ``settings``
    (``keys=motd``) names no setting and is skipped, while bad key syntax is still a 400."""
    return [join_key(s) for s in map(split_key, raw) if s[0] == "settings"]


def _prefixed(view: dict[str, Any], namespace: str, request: web.Request) -> dict[str, Any] | None:
    """``view`` filtered by ``?prefix=`` as Bottlerocket filters ``/os``, ``/services`` and
    ``/configuration-files``: ``namespace.`` is implied unless given; None without the param."""
    prefix = request.query.get("prefix")
    if prefix is None:
        return None
    if not prefix:
        raise BadRequest("Input 'prefix' cannot be empty")
    if not prefix.startswith(namespace):
        prefix = f"{namespace}.{prefix}"
    flat = flatten({namespace: view})
    return unflatten({k: v for k, v in flat.items() if k.startswith(prefix)}, strip=1)


def peer(request: web.Request) -> dict[str, int]:
    """Caller's pid/uid/gid from the Unix socket (SO_PEERCRED)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return {}
    pid, uid, gid = struct.unpack(
        "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    )
    return {"pid": pid, "uid": uid, "gid": gid}


def actor(request: web.Request) -> Actor | None:
    """Who is calling, to record with the generation it makes (``apiclient history``): the
    uid from SO_PEERCRED and its name in the daemon's passwd database, if it has one."""
    who = peer(request)
    if "uid" not in who:
        return None
    import pwd

    try:
        name: str | None = pwd.getpwuid(who["uid"]).pw_name
    except KeyError:
        name = None
    return Actor(who["uid"], name, who.get("pid"))


def actor_view(who: Actor | None) -> dict[str, Any] | None:
    return None if who is None else {"uid": who.uid, "user": who.user}


async def _body(request: web.Request) -> Any:
    """The JSON body, parsed as documents are: no NaN/Infinity, no duplicate key, bounded
    nesting; any of those is a 400 naming the problem."""
    raw = await limits.read_body(request)
    try:
        return parse_json(raw or b"null", "request body")
    except DocumentError as error:
        raise BadRequest(f"Request body is not valid JSON: {error.detail}") from None


@web.middleware
async def errors_and_audit(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    status = 500
    structlog.contextvars.bind_contextvars(
        tx=request.query.get("tx") or DEFAULT_TX,
        generation=request.app[HOST].store.last_generation,  # no store round trip per request
    )
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    except tuple(ERROR_STATUS) as error:
        status = next(code for kind, code in ERROR_STATUS.items() if isinstance(error, kind))
        return web.Response(status=status, text=str(error))
    except sqlite3.OperationalError as error:  # the store's file system, not the request
        answer = _store_trouble(error)
        if answer is None:
            raise
        status = answer.status
        return answer
    finally:
        request.app[METRICS].requests.labels(request.method, str(status)).inc()
        if request.method not in ("GET", "HEAD"):  # a refused write is a warning, ours an error
            level = "info" if status < 400 else "warning" if status < 500 else "error"
            getattr(audit, level)(
                "api write",  # one event name for the audit trail; the level says refused
                method=request.method,
                path=request.path_qs,
                status=status,
                generation=request.app[HOST].store.last_generation,  # the one a commit made
                **peer(request),
            )


def _store_trouble(error: sqlite3.OperationalError) -> web.Response | None:
    """A full disk is 507 and a store another process holds is 503, each saying so (not a
    bare 500); nothing was changed either way."""
    if sqlite_code(error) == sqlite3.SQLITE_FULL:
        return web.Response(status=507, text=f"The store's file system is full ({error}); "
                            "nothing was changed. Free space in the state dir and retry.")
    if store_busy(error):
        return web.Response(status=503, text=f"The store is busy ({error}); nothing was "
                            "changed. Retry.")
    return None


@dataclass(frozen=True)
class AccessPolicy:
    """Who may use the API beyond opening the socket: callers whose SO_PEERCRED uid or gid is
    listed. Root and the daemon's own uid are always allowed; a caller without credentials (not
    on a Unix socket) never is."""

    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()

    @classmethod
    def of(cls, uids: Iterable[int] | None, gids: Iterable[int] | None) -> AccessPolicy | None:
        """The policy for ``--allowed-uids``/``--allowed-gids``; None (anyone) when neither."""
        if uids is None and gids is None:
            return None
        return cls(frozenset(uids or ()), frozenset(gids or ()))

    def allows(self, who: dict[str, int]) -> bool:
        if "uid" not in who:
            return False
        return (
            who["uid"] in (0, os.getuid()) or who["uid"] in self.uids or who["gid"] in self.gids
        )


@web.middleware
async def access_policy(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    policy = request.app.get(ACCESS)
    if policy is not None:
        who = peer(request)
        if not policy.allows(who):
            log.warning("api access refused", method=request.method, path=request.path, **who)
            caller = f"uid {who['uid']}, gid {who['gid']}" if who else "an unidentified caller"
            raise web.HTTPForbidden(text=f"Access denied: {caller} is not allowed by the policy")
    return await handler(request)


# ---- Bottlerocket-compatible endpoints -------------------------------------------------------


def _model(host: Host) -> dict[str, Any]:
    return {
        "settings": host.store.live_document(),
        "services": services_view(host),
        "configuration-files": files_view(host),
        "os": host.reconciler.os_info,
    }


@routes.get("/")
async def get_model(request: web.Request) -> web.Response:
    host = request.app[HOST]
    model = _model(host)
    prefix = request.query.get("prefix")
    if prefix is not None:
        if not prefix:
            raise BadRequest("Input 'prefix' cannot be empty")
        model = _filter_model(model, prefix)
    if _flag(request, "redact") and "settings" in model:  # apiclient get (not Bottlerocket's)
        model["settings"] = redact_value(host.schema, "settings", model["settings"])
    return _json(model)


def _filter_model(model: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Keep what lies under a raw key prefix, like Bottlerocket's ``GET /?prefix=``."""
    return unflatten({k: v for k, v in flatten(model).items() if k.startswith(prefix)})


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    store = request.app[HOST].store
    keys = _list_param(request, "keys")
    if keys is not None:
        found = store.get(_data_keys(keys))
        return _json(unflatten(found, strip=1))
    prefix = request.query.get("prefix")
    if prefix is not None:
        if not prefix:
            raise BadRequest("Input 'prefix' cannot be empty")
        if not prefix.startswith("settings"):
            prefix = "settings." + prefix
        flat = {k: v for k, v in store.live().items() if k.startswith(prefix)}
        return _json(unflatten(flat, strip=1))
    cached = request.app[SETTINGS_BODY]
    version = store.version()  # read first: the body below is at least that new
    if cached.version != version:
        live = store.live()
        if not live:
            raise web.HTTPNotFound(text="Found no 'settings' in datastore")
        cached.body = json.dumps(unflatten(live, strip=1), sort_keys=True)
        cached.version = version
    return web.Response(text=cached.body, content_type="application/json")  # as _json


@dataclass
class SettingsBody:
    """The body of the last whole ``GET /settings`` and the store version it was read at: a
    client polling the settings gets it again without the store read, the JSON decoding of
    every value and the nesting, until something is written."""

    version: tuple[int, int] | None = None
    body: str = ""


async def _patch(request: web.Request, body: Any) -> web.Response:
    host = request.app[HOST]
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object of settings")
    if "settings" in body and len(body) == 1:
        body = body["settings"]  # accept the user-data shape too
    SCRUBBER.learn(secret_values(host.schema, body))
    tx = _tx(request)
    owned = owned_keys(body, host.store.sources)
    if owned and not _flag(request, "force"):
        raise web.HTTPConflict(text=owner_message(host.store, owned))
    if owned:
        shown = ", ".join(f"{k} ({s})" for k, s in list(owned.items())[:5])
        request.app[EVENTS].emit("forced", f"forced change of source-owned {shown}",
                                 level="warning", tx=tx, key=next(iter(owned)))
    if host.reserve is not None and host.reserve.short():  # on a full disk only
        await asyncio.to_thread(host.reserve.check, [body])
    length = request.content_length  # None: chunked, of unknown size until read
    quick = length is not None and length <= QUICK_BODY
    await _store_call(host.store, quick, host.store.add_patch, tx, body, f"api:{tx}", host.schema)
    return web.Response(status=204)


@routes.patch("/settings")
async def patch_settings(request: web.Request) -> web.Response:
    return await _patch(request, await _body(request))


@routes.patch("/settings/keypair")
async def patch_keypair(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("request_payload"), list):
        raise BadRequest('Body must be {"request_payload": ["key=value", ...]}')
    return await _patch(request, patch_from_pairs(body["request_payload"]))


@routes.get("/tx")
async def get_tx(request: web.Request) -> web.Response:
    host = request.app[HOST]
    tx = _tx(request)
    if not host.store.pending(tx):
        return _json({})
    preview = await asyncio.to_thread(host.store.preview, tx, host.schema)
    return _json(unflatten({c.key: c.new for c in preview.changes}, strip=1))


@routes.delete("/tx")
async def delete_tx(request: web.Request) -> web.Response:
    keys = await asyncio.to_thread(request.app[HOST].store.discard, _tx(request))
    return _json(keys)


@routes.get("/tx/list")
async def list_tx(request: web.Request) -> web.Response:
    return _json(request.app[HOST].store.transactions())


# Store calls for a change this small (bytes of JSON) take about a millisecond: they run on the
# event loop, saving two thread hand-offs per change; bigger ones (validation of a big patch
# can take seconds) run in a thread.
QUICK_BODY = 4096


async def _store_call(store: Store, quick: bool | Callable[[], bool],
                      call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` on the event loop when it is ``quick`` (a callable is asked
    while the store is held) and nobody else is using the store (``Store.unwaited``); in a
    thread otherwise, and when another process's lock on the store would make it wait (then
    it waits there, as any write does)."""
    if quick:
        with store.unwaited() as free:
            if free and (quick is True or quick()):
                try:
                    return call(*args, **kwargs)
                except sqlite3.OperationalError as error:
                    if not store_busy(error):
                        raise
    return await asyncio.to_thread(call, *args, **kwargs)


async def _commit(request: web.Request, trial: float | None = None) -> tuple[int, list[str]]:
    host = request.app[HOST]
    reserve = host.reserve
    if reserve is not None and reserve.short():  # on a full disk only: what would it write?
        pending = await asyncio.to_thread(host.store.pending, _tx(request))
        await asyncio.to_thread(reserve.check, [p.body for p in pending])
    if trial is None:
        tx, store = _tx(request), host.store
        result = await _store_call(
            store, lambda: store.pending_size(tx) <= QUICK_BODY,
            store.commit, tx, host.schema, actor=actor(request),
        )
    else:
        result = await asyncio.to_thread(
            confirm.commit_on_trial, host.store, _tx(request), host.schema, trial, actor(request)
        )
        if not result.changed:  # nothing changed: nothing to try
            await asyncio.to_thread(host.store.set_meta, confirm.META, None)
    request.app[METRICS].commits.inc()
    if result.changed:
        request.app[EVENTS].emit(
            "commit",
            f"generation {result.generation} committed",
            generation=result.generation,
            tx=_tx(request),
            changed=list(result.changed),
        )
    return result.generation, list(result.changed)


@routes.post("/tx/commit")
async def commit(request: web.Request) -> web.Response:
    _, changed = await _commit(request)
    return _json(changed)


@routes.post("/tx/apply")
async def apply(request: web.Request) -> web.Response:
    for key in _list_param(request, "keys") or []:
        _settings_key(key)
    request.app[WORKER].wake("apply")
    return web.Response(status=204)


@routes.post("/tx/commit_and_apply")
async def commit_and_apply(request: web.Request) -> web.Response:
    trial = None
    if "confirm" in request.query:
        if request.app[CONFIRM] is None:
            raise web.HTTPConflict(text="this daemon does not watch trial commits")
        try:
            trial = confirm.check_seconds(request.query["confirm"])
        except ValueError as error:
            raise BadRequest(f"Input 'confirm': {error}") from None
    generation, changed = await _commit(request, trial)
    if trial is None or not changed:
        return _json(await _apply(request, generation, changed, "commit"))
    request.app[CONFIRM].poke()
    pending = confirm.pending(request.app[HOST].store)
    answer = {"changed": changed, "generation": generation,
              "confirm": pending.as_dict() if pending else None}
    return _json(await _apply(request, generation, answer, "commit"))


@routes.post("/tx/confirm")
async def confirm_trial(request: web.Request) -> web.Response:
    try:
        trial = await asyncio.to_thread(confirm.confirm, request.app[HOST].store)
    except confirm.NothingToConfirm as error:
        raise web.HTTPNotFound(text=str(error)) from None
    if request.app[CONFIRM] is not None:
        request.app[CONFIRM].poke()
    request.app[EVENTS].emit("confirm", f"generation {trial.generation} confirmed",
                             generation=trial.generation)
    return web.Response(status=204)


async def _apply(request: web.Request, generation: int, answer: Any, reason: str) -> Any:
    """Wake the worker; with ``wait=true``, add the receipt of the pass covering ``generation``."""
    worker = request.app[WORKER]
    if not _flag(request, "wait"):
        worker.wake(reason)
        return answer
    waiting = worker.wait_for(generation)
    worker.wake(reason)
    receipt = SCRUBBER.scrub(await waiting)  # command output may quote a secret
    if isinstance(answer, list):
        answer = {"changed": answer, "generation": generation}
    return {**answer, "receipt": receipt}


@routes.get("/os")
async def get_os(request: web.Request) -> web.Response:
    os_info = request.app[HOST].reconciler.os_info
    filtered = _prefixed(os_info, "os", request)
    return _json(os_info if filtered is None else filtered)


@routes.get("/metadata/affected-services")
async def affected_services(request: web.Request) -> web.Response:
    keys = _data_keys(_list_param(request, "keys", required=True) or [])
    return _json(request.app[HOST].catalog.affected_services(keys))


@routes.get("/metadata/setting-generators")
async def generators(request: web.Request) -> web.Response:
    return _json(setting_generator_commands(request.app[HOST].variant))


@routes.get("/metadata/templates")
async def templates(request: web.Request) -> web.Response:
    """Bottlerocket's ``{key: template}`` for keys whose value a template makes. Ours has none
    (defaults are values, generators are commands), so valid keys answer ``{}``."""
    _data_keys(_list_param(request, "keys", required=True) or [])
    return _json({})


def services_view(host: Host) -> dict[str, Any]:
    return {
        name: {
            "configuration-files": list(service.configuration_files),
            "restart-commands": [" ".join(c) for c in service.restart_commands],
            "reload-commands": [" ".join(c) for c in service.reload_commands],
            "affected-by": list(service.affected_by),
        }
        for name, service in sorted(host.catalog.services.items())
    }


def files_view(host: Host) -> dict[str, Any]:
    return {
        name: {"path": f.path, "template-path": f.template, "mode": f"{f.mode:04o}"}
        for name, f in sorted(host.catalog.files.items())
    }


def _named(request: web.Request, view: dict[str, Any], what: str) -> web.Response:
    names = _list_param(request, "names")
    if names is None:
        filtered = _prefixed(view, what, request)
        if filtered is not None:
            return _json(filtered)
        if not view:
            raise web.HTTPNotFound(text=f"Found no '{what}' in datastore")
        return _json(view)
    missing = [n for n in names if n not in view]
    if missing:
        raise web.HTTPNotFound(text=f"Found no '{what}.{missing[0]}' in datastore")
    return _json({n: view[n] for n in names})


@routes.get("/services")
async def get_services(request: web.Request) -> web.Response:
    return _named(request, services_view(request.app[HOST]), "services")


@routes.get("/configuration-files")
async def get_files(request: web.Request) -> web.Response:
    return _named(request, files_view(request.app[HOST]), "configuration-files")


@routes.post("/actions/reboot")
async def reboot(request: web.Request) -> web.Response:
    host = request.app[HOST]
    slots = request.app[REBOOTS]
    # coordinated: a reboot slot first (also in a sandbox, to test it)
    outcome = await asyncio.to_thread(
        reboot_host, slots, host.store.live_document(), request.app[EVENTS],
        host.reconciler.runner, host.reconciler.sandbox)
    if outcome.result == "deferred":
        slots.poke()  # its loop schedules the retry
        raise web.HTTPConflict(text=f"Reboot deferred: {outcome.detail}")
    if outcome.result == "failed":
        raise web.HTTPInternalServerError(text=f"Reboot failed: {outcome.detail}")
    return web.Response(status=204)


# ---- ours --------------------------------------------------------------------------------------


@routes.post("/tx/plan")
async def plan(request: web.Request) -> web.Response:
    host = request.app[HOST]
    tx = _tx(request)

    return _json(await asyncio.to_thread(host.dry_run, tx))


def _call(executor: Any, method: str, default: Any) -> Any:
    """An executor's optional status hook (`degraded_reasons`, `conditions`)."""
    hook = getattr(executor, method, None)
    return hook() if hook else default


def status_view(
    host: Host,
    worker: Worker,
    git: dict[str, Any] | None = None,
    desired_files: dict[str, Any] | None = None,
    coordination: dict[str, Any] | None = None,
    loops: dict[str, Any] | None = None,
    rollout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``GET /status``: every part's own status dictionary, and the headline and conditions
    ``reconciler.status.summarize`` decides over them (this only gathers)."""
    live = host.store.generation()
    applied = host.store.applied_generation()
    views = {e.name: e.status() for e in host.reconciler.executors}
    extra = [r for e in host.reconciler.executors for r in _call(e, "degraded_reasons", [])]
    updates = views.get("updates")
    boot = host.boot_result
    parts = [
        status_rules.git_part(git),
        status_rules.desired_files_part(desired_files),
        status_rules.user_data_part(boot.unavailable if boot is not None else None),
        status_rules.boot_health_part((updates or {}).get("boot"),
                                gated=host.updates is not None and host.updates.gate is not None),
        status_rules.containers_part(views.get("containers")),
        status_rules.updates_part(updates),
        status_rules.coordination_part(coordination),
        status_rules.rollout_part(rollout),
        status_rules.loops_part(loops),
    ]
    facts = status_rules.PassFacts(live, applied, worker.busy, worker.last_receipt, tuple(extra))
    summary = status_rules.summarize(facts, parts)
    summary["conditions"] += [
        {**c, "observedGeneration": summary["conditions"][0]["observedGeneration"]}
        for c in [*(c for e in host.reconciler.executors for c in _call(e, "conditions", [])),
                  *_boot_conditions(host)]
    ]
    view: dict[str, Any] = {
        **summary,
        "variant": host.variant,
        "live_generation": live,
        "applied_generation": applied,
        "last_receipt": worker.last_receipt,
        "retries": worker.failures,
        # services whose unit this host lacks (their pick-up command found no unit to act on)
        "not_installed": dict(sorted(host.reconciler.not_installed.items())),
        **views,
        **_boot_view(host),
        "pending_confirmation": (trial.as_dict() if (trial := confirm.pending(host.store))
                                 else None),
    }
    for name, value in (("gitops", git), ("desired_files", desired_files),
                        ("coordination", coordination), ("loops", loops),
                        ("rollout", rollout)):
        if value is not None:
            view[name] = value
    return view


def _boot_conditions(host: Host) -> list[dict[str, Any]]:
    """``PlatformData``: whether every user-data provider and the metadata service answered."""
    result = host.boot_result
    if result is None:
        return []
    missing = result.unavailable
    return [{
        "type": "PlatformData",
        "status": not missing,
        "reason": "; ".join(missing) if missing else "every user-data provider answered",
    }]


def _boot_view(host: Host) -> dict[str, Any]:
    result = host.boot_result
    if result is None:
        return {}
    return {"user_data": {
        "providers": [r.as_dict() for r in result.providers],
        "metadata_unavailable": result.platform,
        "generated": result.generated,
    }}


@routes.post("/actions/sync")
async def sync(request: web.Request) -> web.Response:
    git = request.app[GIT]
    if git is None:
        raise web.HTTPNotFound(text="this daemon has no git source")
    if not _flag(request, "wait"):
        git.wake()
        return web.Response(status=204)
    outcome = await git.request()
    answer: dict[str, Any] = {"sync": outcome}
    if outcome["changed"]:
        generation = request.app[HOST].store.generation()
        answer["receipt"] = SCRUBBER.scrub(await request.app[WORKER].wait_for(generation))
    return _json(answer, status=SYNC_STATUS.get(outcome["condition"], 502))


# ``POST /actions/sync?wait=true``: what a sync that did not apply answers (the body is the same
# JSON); a script (or ``apiclient -m POST -u ...``) sees the failure in the status code.
SYNC_STATUS = {
    "Synced": 200,
    "Stale": 200,  # applied; the age is a condition in GET /status
    "Disabled": 409,  # no git source configured
    "Invalid": 422,  # the revision was fetched and refused: nothing of it applied
    "Unverified": 422,
    "Refused": 422,
    "Failed": 502,  # the remote did not answer (or the fetch failed)
}


@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    return _json(SCRUBBER.scrub(app_status(request.app)))  # receipts quote command output


def app_status(app: web.Application) -> dict[str, Any]:
    """``status_view`` with every part this daemon runs (also logdog's ``status.json``)."""
    git, files, slots, loops = app[GIT], app[DESIRED_FILES], app[REBOOTS], app[LOOPS]
    rollouts = app[ROLLOUTS]
    view = status_view(
        app[HOST], app[WORKER],
        git=git.sync.status.as_dict() if git is not None else None,
        desired_files=dict(files.status) if files is not None else None,
        coordination=slots.status() if slots is not None else None,
        loops=loops.as_dict() if loops is not None else None,
        rollout=rollouts.status() if rollouts is not None else None,
    )
    if rollouts is not None:  # RolloutHalted with its counts, as the fleet reports them
        view["conditions"] += rollouts.conditions()
    return view


@routes.get("/generations")
async def generations(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "50"))
        before = int(request.query["before"]) if "before" in request.query else None
    except ValueError:
        raise BadRequest("'limit' and 'before' must be integers") from None
    if before is not None:
        before = max(0, min(before, 2**62))
    host = request.app[HOST]
    items = host.store.generations(max(1, min(limit, 1000)), before)
    return _json(
        [
            {
                "generation": g.number,
                "time": g.time,
                "tx": g.tx,
                "source": g.source,
                "actor": actor_view(g.actor),
                "changes": [
                    redact_change(
                        host.schema, {"key": c.key, "old": c.old, "new": c.new, "source": c.source}
                    )
                    for c in g.changes
                ],
            }
            for g in items
        ]
    )


@routes.post("/actions/rollback-settings")
async def rollback(request: web.Request) -> web.Response:
    host = request.app[HOST]
    try:
        generation = int(request.query["generation"])
    except (KeyError, ValueError):
        raise BadRequest("Input 'generation' must be an integer") from None
    result = await asyncio.to_thread(
        functools.partial(host.store.rollback, generation, host.schema, actor=actor(request))
    )
    request.app[EVENTS].emit(
        "rollback", f"settings rolled back to generation {generation}", generation=result.generation
    )
    answer = {"generation": result.generation, "changed": list(result.changed)}
    return _json(await _apply(request, result.generation, answer, "rollback"))


@routes.get("/provenance")
async def provenance(request: web.Request) -> web.Response:
    store, schema = request.app[HOST].store, request.app[HOST].schema
    keys = _list_param(request, "keys")
    prefix = request.query.get("prefix", "settings")
    wanted = [_settings_key(k) for k in keys] if keys else [_settings_key(prefix)]
    history = _flag(request, "history")
    result: dict[str, Any] = {}
    for key in wanted:
        for item in store.provenance(key):
            entry: dict[str, Any] = {
                "value": redact_value(schema, item.key, item.value),
                "source": item.source,
                "generation": item.generation,
                "time": item.time,
            }
            result[item.key] = entry
        if history:
            for item_key in [k for k in result if is_under(k, key)] or [key]:
                changes = store.key_history(item_key)
                actors = store.actors(g for g, _, _ in changes)
                result.setdefault(item_key, {"value": None})["history"] = [
                    {
                        "generation": g,
                        "time": t,
                        "old": redact_value(schema, item_key, c.old),
                        "new": redact_value(schema, item_key, c.new),
                        "source": c.source,
                        "actor": actor_view(actors.get(g)),
                    }
                    for g, t, c in changes
                ]
    return _json(result)


@routes.get("/events")
async def events(request: web.Request) -> web.Response:
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        raise BadRequest("Input 'since' must be an integer") from None
    return _json(request.app[EVENTS].since(since))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def make_app(
    host: Host,
    worker: Worker,
    events: Events,
    metrics: Metrics,
    git: GitLoop | None = None,
    desired_files: DesiredFiles | None = None,
    access: AccessPolicy | None = None,
    confirm_watch: confirm.ConfirmWatch | None = None,
    reboot_slots: RebootSlots | None = None,
    loops: Any = None,
    rollouts: Any = None,
) -> web.Application:
    # the access policy's middleware only when there is a policy: one layer less per request
    middlewares = [limits.drain_unread, errors_and_audit, *([access_policy] if access else [])]
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[HOST] = host
    app[WORKER] = worker
    app[EVENTS] = events
    app[METRICS] = metrics
    app[GIT] = git
    app[DESIRED_FILES] = desired_files
    app[ACCESS] = access
    app[CONFIRM] = confirm_watch
    app[REBOOTS] = reboot_slots
    app[LOOPS] = loops
    app[ROLLOUTS] = rollouts
    app[SETTINGS_BODY] = SettingsBody()
    app.add_routes(routes)
    updates_routes.register(app, host)
    exec_route.register(app)
    diagnostics.register(app)
    return app
