"""``reconciler serve``: boot pipeline, API socket, reconcile worker, file watch, sd_notify.

Ready when the socket answers; ``READY=1`` goes to ``$NOTIFY_SOCKET`` when set. SIGTERM and
SIGINT stop it cleanly: the socket is removed and the store closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from hostcore.keys import is_under
from reconciler import redact
from reconciler.api import limits
from reconciler.api.server import AccessPolicy, make_app
from reconciler.confirm import ConfirmWatch
from reconciler.events import Events
from reconciler.fleet.reboots import RebootSlots, reboot_host
from reconciler.fleet.rollout_watch import Rollouts
from reconciler.host import Host
from reconciler.logs import asyncio_exception_handler, get_logger
from reconciler.memory import IdleTrim
from reconciler.metrics import CONTENT_TYPE, Metrics
from reconciler.platform.providers import Platform
from reconciler.sources.gitloop import GitLoop
from reconciler.sources.gitsync import GitSync
from reconciler.sources.localfiles import DesiredFiles, DesiredFilesLoop
from reconciler.supervise import Loops, supervised
from reconciler.watch import FileWatch
from reconciler.worker import Worker

log = get_logger("daemon")
SHUTDOWN_WAIT = 15.0  # seconds a loop gets to stop (the unit's TimeoutStopSec is 30)


def sd_notify(message: str) -> None:
    """Tell systemd (or any supervisor speaking the protocol) about our state."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def _pointer_changed(receipt: dict) -> bool:
    return any(is_under(k, "settings.gitops") for k in receipt.get("changed_settings", []))


def serve(
    host: Host,
    socket_path: Path | None,
    user_data: Sequence[str],
    interval: float = 60.0,
    desired: Sequence[str] = (),
    allowed: tuple[Sequence[int] | None, Sequence[int] | None] = (None, None),
    platform: Platform | None = None,
    metrics_listen: tuple[str, int] | None = None,
) -> int:
    """``allowed``: the uids and gids of the access policy (None, None: anyone); ``platform``:
    how to reach the instance metadata service; ``metrics_listen``: (host, port) where
    ``GET /metrics`` is served over TCP too (None: only on the API socket)."""
    redact.track(host.schema, host.store)  # secrets of user data never reach a log line either
    if not host.boot(user_data, platform):
        return 1
    path = Path(socket_path) if socket_path else host.state_dir / "api.sock"
    try:
        return asyncio.run(_serve(host, path, interval, desired, AccessPolicy.of(*allowed),
                                  metrics_listen))
    finally:
        redact.untrack()


async def _serve(
    host: Host,
    path: Path,
    interval: float,
    desired: Sequence[str],
    access: AccessPolicy | None = None,
    metrics_listen: tuple[str, int] | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(asyncio_exception_handler)  # an accept() flood: one line a period
    events = Events(source=f"/host-reconciler/{socket.gethostname()}")
    metrics = Metrics()
    loops = Loops()
    worker = Worker(host, events, metrics, interval=interval)
    worker.health = loops.health("worker")
    worker.after_pass.append(host.after_pass)
    if host.updates is not None:
        host.updates.manager.on_done = lambda _status: worker.wake_threadsafe("update command")
        host.updates.events = events  # boot-health outcomes go to /events
        host.updates.loops = loops  # background threads (the boot gate) report here
    git_sync = GitSync(host.store, host.schema, events, host.state_dir / "git")
    os_version = host.reconciler.os_info.get("version_id", "")
    rollouts = Rollouts(host.store, events, worker.wake, lambda: worker.last_receipt,
                        {"OS_VERSION_ID": os_version, "OS_VARIANT_ID": host.variant}, os_version)
    git_sync.gate, rollouts.git = rollouts, git_sync
    worker.after_pass.append(rollouts.after_pass)
    git_loop = GitLoop(git_sync, worker.wake, metrics, loops.health("git"))
    rollouts.git_wake = git_loop.wake
    files = DesiredFiles(host.store, host.schema, events, desired) if desired else None
    confirm_watch = ConfirmWatch(host, events, worker.wake)
    worker.after_pass.append(confirm_watch.after_pass)
    if host.reserve is not None:  # the store's room on the state disk, again once there is space
        reserve = host.reserve
        reserve.restore()
        worker.after_pass.append(lambda _receipt: reserve.restore())
    reboot_slots = RebootSlots(host.store, lambda: _boot_confirmed(host, worker),
                               on_retry=lambda: worker.wake("reboot slot retry"))
    worker.after_pass.append(lambda _receipt: reboot_slots.poke())
    if host.updates is not None:  # the automatic reboot into an update: the API's own path
        host.updates.reboot = lambda: reboot_host(
            reboot_slots, host.store.live_document(), events, host.reconciler.runner,
            host.reconciler.sandbox, "reboot requested into an activated update")
    app = make_app(host, worker, events, metrics, git_loop, files, access, confirm_watch,
                   reboot_slots, loops=loops, rollouts=rollouts)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **limits.runner_options())
    await runner.setup()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()
    site = limits.CappedUnixSite(runner, str(path))
    await site.start()
    os.chmod(path, 0o660)
    metrics_runner = await _metrics_site(metrics, metrics_listen) if metrics_listen else None

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    if host.containers is not None:  # it stops its event watch in the shutdown below
        host.containers.attach(path, worker.wake_threadsafe, events)
    # Bootstrap containers, to completion, before host containers and services (the first
    # pass); the API answers meanwhile (they may use it), commits wait for that pass.
    await asyncio.to_thread(host.run_bootstrap)
    worker_task = asyncio.create_task(worker.run())
    worker.wake("boot")
    git_task = asyncio.create_task(git_loop.run())
    # loops that catch their own errors are supervised all the same: nothing ends one but stop()
    confirm_task = asyncio.create_task(supervised(loops.health("confirm"), confirm_watch.run))
    slots_task = asyncio.create_task(supervised(loops.health("reboot-slots"), reboot_slots.run))
    rollout_task = asyncio.create_task(supervised(loops.health("rollout"), rollouts.run))
    files_loop = (
        DesiredFilesLoop(files, worker.wake, loops.health("desired-files")) if files else None
    )
    files_task = asyncio.create_task(files_loop.run()) if files_loop else None
    git_loop.wake()
    worker.after_pass.append(lambda receipt: _pointer_changed(receipt) and git_loop.wake())

    watch_health = loops.health("file-watch")

    def file_changed(path: str) -> None:  # on watchdog's thread: an error must not end it
        try:
            if not host.reconciler.in_sync(path):
                worker.wake_threadsafe(f"file changed: {path}")
        except Exception as error:  # noqa: BLE001 - wake anyway: the pass reports the cause
            watch_health.failed(error)
            worker.wake_threadsafe(f"file changed: {path}")

    watch = FileWatch(host.root, [f.path for f in host.catalog.files.values()], file_changed,
                      watch_health)
    watch.start()
    worker.after_pass.append(lambda _receipt: watch.refresh())
    trim = IdleTrim(loop)
    worker.after_pass.append(lambda _receipt: trim.poke())
    sd_notify("READY=1")
    events.emit(
        "started", f"serving on {path}", variant=host.variant, generation=host.store.generation()
    )
    try:
        await stop.wait()
    finally:
        # Each step on its own: one that fails (or a loop that died) never skips the others,
        # and the socket we bound is always removed.
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("notify", lambda: sd_notify("STOPPING=1")),
            ("file watch", watch.stop),
            ("idle trim", trim.stop),
            ("git loop", git_loop.stop),
            ("git task", lambda: _join(git_task)),
            ("confirm watch", confirm_watch.stop),
            ("confirm task", lambda: _join(confirm_task)),
            ("reboot slots", reboot_slots.stop),
            ("slots task", lambda: _join(slots_task)),
            ("rollout watch", rollouts.stop),
            ("rollout task", lambda: _join(rollout_task)),
        ]
        if files_loop and files_task:
            steps += [("desired files", files_loop.stop), ("files task", lambda: _join(files_task))]
        steps += [
            ("worker", worker.stop),
            ("worker task", lambda: _join(worker_task)),
            ("containers", host.containers.close if host.containers else lambda: None),
            ("api", runner.cleanup),
            ("metrics", metrics_runner.cleanup if metrics_runner else lambda: None),
            ("socket", lambda: path.unlink() if path.is_socket() else None),
        ]
        for name, step in steps:
            try:
                result = step()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            except Exception:  # noqa: BLE001
                log.exception("shutdown step failed", step=name)
        log.info("stopped")
    return 0


async def _metrics_site(metrics: Metrics, address: tuple[str, int]) -> web.AppRunner:
    """``GET /metrics`` alone, over TCP at ``address`` (for a Prometheus server to scrape);
    the API itself stays on the Unix socket."""

    async def scrape(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, address[0], address[1])
    await site.start()
    log.info("metrics listening", address=[f"{a[0]}:{a[1]}" for a in runner.addresses])
    return runner


async def _join(task: asyncio.Task[Any], timeout: float = SHUTDOWN_WAIT) -> None:
    """Wait for a loop asked to stop; one that does not within ``timeout`` is cancelled."""
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.error("loop did not stop in time; cancelled", loop=task.get_name())


def _boot_confirmed(host: Host, worker: Worker) -> bool:
    """This boot counts: its last pass succeeded and, with A/B updates, the health gate marked
    the boot successful (a reboot slot is given back only then)."""
    receipt = worker.last_receipt
    if not receipt or not receipt.get("ok"):
        return False
    gate = host.updates.gate if host.updates is not None else None
    if gate is not None:
        return bool(gate.outcome and gate.outcome.get("marked_successful"))
    return True
