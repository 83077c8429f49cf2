"""``reconciler serve``: boot pipeline, API socket, reconcile worker, file watch, sd_notify.

Ready when the socket answers; ``READY=1`` goes to ``$NOTIFY_SOCKET`` when set. SIGTERM and
SIGINT stop it cleanly: the socket is removed and the store closed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from hostcore.keys import is_under
from reconciler import containers, redact
from reconciler.api.server import AccessPolicy, make_app
from reconciler.confirm import ConfirmWatch
from reconciler.events import Events
from reconciler.fleet.reboots import RebootSlots
from reconciler.host import Host
from reconciler.logs import get_logger
from reconciler.metrics import Metrics
from reconciler.platform.providers import Platform
from reconciler.sources.gitloop import GitLoop
from reconciler.sources.gitsync import GitSync
from reconciler.sources.localfiles import DesiredFiles, DesiredFilesLoop
from reconciler.watch import FileWatch
from reconciler.worker import Worker

log = get_logger("daemon")


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
) -> int:
    """``allowed``: the uids and gids of the access policy (None, None: anyone); ``platform``:
    how to reach the instance metadata service."""
    redact.track(host.schema, host.store)  # secrets of user data never reach a log line either
    if not host.boot(user_data, platform):
        return 1
    path = Path(socket_path) if socket_path else host.state_dir / "api.sock"
    try:
        return asyncio.run(_serve(host, path, interval, desired, AccessPolicy.of(*allowed)))
    finally:
        redact.untrack()


async def _serve(
    host: Host,
    path: Path,
    interval: float,
    desired: Sequence[str],
    access: AccessPolicy | None = None,
) -> int:
    events = Events()
    metrics = Metrics()
    worker = Worker(host, events, metrics, interval=interval)
    worker.after_pass.append(host.after_pass)
    for executor in host.reconciler.executors:
        if executor.name == "updates":
            executor.manager.on_done = lambda _status: worker.wake_threadsafe("update command")
            executor.events = events  # boot-health outcomes go to /events
    git_loop = GitLoop(
        GitSync(host.store, host.schema, events, host.state_dir / "git"), worker.wake, metrics
    )
    files = DesiredFiles(host.store, host.schema, events, desired) if desired else None
    confirm_watch = ConfirmWatch(host, events, worker.wake)
    worker.after_pass.append(confirm_watch.after_pass)
    reboot_slots = RebootSlots(host.store, lambda: _boot_confirmed(host, worker))
    worker.after_pass.append(lambda _receipt: reboot_slots.poke())
    app = make_app(host, worker, events, metrics, git_loop, files, access, confirm_watch,
                   reboot_slots)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()
    site = web.UnixSite(runner, str(path))
    await site.start()
    os.chmod(path, 0o660)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    detach_containers = containers.attach(
        host.reconciler.executors, path, worker.wake_threadsafe, events
    )
    worker_task = asyncio.create_task(worker.run())
    worker.wake("boot")
    git_task = asyncio.create_task(git_loop.run())
    confirm_task = asyncio.create_task(confirm_watch.run())
    slots_task = asyncio.create_task(reboot_slots.run())
    files_loop = DesiredFilesLoop(files, worker.wake) if files else None
    files_task = asyncio.create_task(files_loop.run()) if files_loop else None
    git_loop.wake()
    worker.after_pass.append(lambda receipt: _pointer_changed(receipt) and git_loop.wake())

    def file_changed(path: str) -> None:
        if not host.reconciler.in_sync(path):
            worker.wake_threadsafe(f"file changed: {path}")

    watch = FileWatch(host.root, [f.path for f in host.catalog.files.values()], file_changed)
    watch.start()
    worker.after_pass.append(lambda _receipt: watch.refresh())
    sd_notify("READY=1")
    events.emit(
        "started", f"serving on {path}", variant=host.variant, generation=host.store.generation()
    )
    try:
        await stop.wait()
    finally:
        sd_notify("STOPPING=1")
        watch.stop()
        git_loop.stop()
        await git_task
        confirm_watch.stop()
        await confirm_task
        reboot_slots.stop()
        await slots_task
        if files_loop and files_task:
            files_loop.stop()
            await files_task
        worker.stop()
        await worker_task
        detach_containers()
        await runner.cleanup()
        if path.is_socket():
            path.unlink()
        log.info("stopped")
    return 0


def _boot_confirmed(host: Host, worker: Worker) -> bool:
    """This boot counts: its last pass succeeded and, with A/B updates, the health gate marked
    the boot successful (a reboot slot is given back only then)."""
    receipt = worker.last_receipt
    if not receipt or not receipt.get("ok"):
        return False
    for executor in host.reconciler.executors:
        gate = getattr(executor, "gate", None)
        if gate is not None:
            return bool(gate.outcome and gate.outcome.get("marked_successful"))
    return True
