"""``fleetlock serve``: a FleetLock server on etcd, with leases (what airlock lacks).

Wire-compatible with airlock for Zincati (and with our own client): ``POST /v1/pre-reboot``,
``POST /v1/steady-state``. Ours in addition: ``GET /v1/holders?group=G`` lists who holds a slot
and how long their lease has left, so an operator can see the fleet without etcdctl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from reconciler.fleet import protocol
from reconciler.fleet.etcd import Contention, EtcdSlots
from reconciler.logs import get_logger

_log = get_logger("fleetlock")
SLOTS = web.AppKey("slots", EtcdSlots)
CONFIG = web.AppKey("config", object)


@dataclass(frozen=True)
class Config:
    default_slots: int = 1
    groups: Mapping[str, int] = field(default_factory=dict)

    def slots(self, group: str) -> int:
        return self.groups.get(group, self.default_slots)


def _refusal(error: protocol.ProtocolError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


async def _params(request: web.Request) -> protocol.ClientParams:
    body = await request.content.read(protocol.MAX_BODY + 1)
    if len(body) > protocol.MAX_BODY:
        raise protocol.ProtocolError(413, protocol.BAD_REQUEST, "the body is too large")
    return protocol.parse_request(request.headers, body)


async def pre_reboot(request: web.Request) -> web.Response:
    try:
        params = await _params(request)
        config = request.app[CONFIG]
        slots = config.slots(params.group)
        outcome = await asyncio.to_thread(request.app[SLOTS].lock, params.group, params.id, slots)
    except protocol.ProtocolError as error:
        return _refusal(error)
    except Contention as error:
        return _refusal(protocol.ProtocolError(503, protocol.FAILED_LOCK, str(error)))
    if not outcome.granted:
        holders = ", ".join(outcome.semaphore.holders)
        return _refusal(protocol.ProtocolError(
            409, protocol.SEMAPHORE_FULL,
            f"all {outcome.semaphore.total_slots} slots of group {params.group!r} are held "
            f"(by {holders})"))
    _log.info("slot taken", group=params.group, id=params.id,
              holders=list(outcome.semaphore.holders))
    return web.json_response({"holders": list(outcome.semaphore.holders)})


async def steady_state(request: web.Request) -> web.Response:
    try:
        params = await _params(request)
        slots = request.app[CONFIG].slots(params.group)
        outcome = await asyncio.to_thread(request.app[SLOTS].unlock, params.group, params.id,
                                          slots)
    except protocol.ProtocolError as error:
        return _refusal(error)
    except Contention as error:
        return _refusal(protocol.ProtocolError(503, protocol.FAILED_UNLOCK, str(error)))
    _log.info("slot released", group=params.group, id=params.id)
    return web.json_response({"holders": list(outcome.semaphore.holders)})


async def holders(request: web.Request) -> web.Response:
    group = request.query.get("group", protocol.DEFAULT_GROUP)
    try:
        protocol.check_group(group)
    except protocol.ProtocolError as error:
        return _refusal(error)
    semaphore, found = await asyncio.to_thread(
        request.app[SLOTS].holders, group, request.app[CONFIG].slots(group))
    return web.json_response({
        "group": group,
        "total_slots": semaphore.total_slots,
        "holders": [{"id": h.id, "lease_ttl": h.ttl} for h in found],
    })


def make_app(slots: EtcdSlots, config: Config) -> web.Application:
    app = web.Application(client_max_size=protocol.MAX_BODY)
    app[SLOTS] = slots
    app[CONFIG] = config
    app.router.add_post("/" + protocol.PRE_REBOOT, pre_reboot)
    app.router.add_post("/" + protocol.STEADY_STATE, steady_state)
    app.router.add_get("/v1/holders", holders)
    return app


def _group(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    if not protocol.GROUP.fullmatch(name) or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=SLOTS, e.g. workers=2")
    return name, int(count)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetlock",
                                     description=(__doc__ or "").replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the FleetLock protocol, backed by etcd")
    serve.add_argument("--etcd", default="http://127.0.0.1:2379",
                       help="etcd v3 endpoint (default: %(default)s)")
    serve.add_argument("--listen", default="127.0.0.1:3333",
                       help="HOST:PORT to listen on (default: %(default)s)")
    serve.add_argument("--slots", type=int, default=1,
                       help="reboot slots of a group not named by --group (default: %(default)s)")
    serve.add_argument("--group", type=_group, action="append", default=[],
                       metavar="NAME=SLOTS", help="slots of one group")
    serve.add_argument("--lease-ttl", type=int, default=900,
                       help="seconds a holder keeps its slot without asking again; a host that "
                       "dies frees its slot after this (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"fleetlock: --listen {args.listen!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    if args.slots < 1 or args.lease_ttl < 2:
        print("fleetlock: --slots must be >= 1 and --lease-ttl >= 2", file=sys.stderr)
        return 2
    from reconciler import logs

    logs.configure("info")
    app = make_app(EtcdSlots(args.etcd, args.lease_ttl), Config(args.slots, dict(args.group)))
    print(json.dumps({"listening": args.listen, "etcd": args.etcd}), flush=True)
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
