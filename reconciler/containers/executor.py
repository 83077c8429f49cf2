"""The host-containers executor: glues the pure planner to a container engine.

Each pass: ``observe`` (list the containers in our storage, and what we remember of them),
``decide`` (the pure ``plan_host_containers``: the dry run calls the same two), then ``execute``
(removals first) and report. A container that exits or is removed by hand is brought back with
exponential backoff, within a crash-loop budget (at most ``max_restarts`` in ``window`` seconds;
``planner.RestartBudget``); past it, the container is reported failed with its last exit code
and log tail until its settings change.

Nothing here runs podman until a host container is enabled (or our storage already exists), so a
host without podman only fails where a host container is asked for, with a clear step.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hostcore import faults
from hostcore.durable import replace_file
from reconciler import toolbox
from reconciler.containers.engine import (
    ContainerEngine,
    EngineError,
    Image,
    Mount,
    RunSpec,
)
from reconciler.containers.planner import (
    CONFLICT,
    CRASH_LOOP,
    CREATE,
    FAIL,
    INVALID,
    KEEP,
    RECREATE,
    REMOVE,
    RESTART,
    WAIT,
    ContainerAction,
    ContainerObservation,
    ContainerPlan,
    DesiredContainer,
    History,
    RestartBudget,
    desired_containers,
    plan_host_containers,
)
from reconciler.containers.podman import PodmanEngine
from reconciler.containers.pulls import PullPending, Pulls
from reconciler.logs import get_logger
from reconciler.steps import Step

log = get_logger("containers")

PERSISTENT_TARGET = "/.bottlerocket/host-containers"
ROOTFS_TARGET = "/.bottlerocket/rootfs"
SOCKET_TARGET = "/run/api.sock"
# The socket's directory entry in the container outlives a daemon restart only through a
# directory mount: ``<state-dir>/containers/api/api.sock`` is a hard link to the live socket,
# renewed when the daemon starts, and the bundled apiclient is pointed at it.
API_DIR_TARGET = "/run/reconciler"
APICLIENT_TARGET = "/usr/local/bin/apiclient"
WAKE_EVENTS = {"died", "remove", "oom", "kill"}
EVENT_SETTLE = 0.3  # seconds to let a burst of engine events settle before one wake-up


@dataclass
class Record:
    """What we know of one host container (in memory; the labels carry the durable part)."""

    name: str
    state: str = "pending"  # pending running exited restarting failed invalid
    source: str = ""
    superpowered: bool = False
    identity: str = ""
    image: str = ""
    digest: str = ""
    generation: int = 0
    restarts: int = 0
    exit_code: int | None = None
    last_error: str = ""
    log_tail: str = ""
    seen_running: bool = False
    recent: list[float] = field(default_factory=list)  # monotonic times of recent restarts
    crash_looping: bool = False

    def view(self) -> dict[str, Any]:
        answer = asdict(self)
        for private in ("recent", "seen_running", "identity"):
            answer.pop(private)
        return answer


class HostContainers:
    """``Executor`` of ``settings.host-containers`` (see ``reconciler.reconcile.Executor``)."""

    name = "containers"

    def __init__(
        self,
        state_dir: Path,
        engine: ContainerEngine | None = None,
        *,
        max_restarts: int = 5,
        window: float = 600.0,
        backoff_start: float = 1.0,
        backoff_max: float = 60.0,
        pull_backoff: float = 2.0,
        pull_grace: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.state_dir = Path(state_dir)
        self.storage_base = self.state_dir / "host-containers"
        self.engine_dir = self.state_dir / "containers"
        self.engine: ContainerEngine = engine or PodmanEngine(self.engine_dir)
        self.apiclient_path = self.engine_dir / "bin" / "apiclient"
        self.api_dir = self.engine_dir / "api"
        self.max_restarts = max_restarts
        self.window = window
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.pulls = Pulls(self.engine, backoff_start=pull_backoff, grace=pull_grace,
                           clock=clock, on_done=self._pulled)
        self.clock = clock
        self.sleep = sleep
        self.socket: Path | None = None
        self.wake: Callable[[str], None] | None = None
        self.events: Any = None  # reconciler.events.Events when attached to a daemon
        self._records: dict[str, Record] = {}
        self._engine_problem: str | None = None
        self._lock = threading.Lock()
        self._timers: dict[str, threading.Timer] = {}
        self._watch: threading.Thread | None = None
        self._stop = threading.Event()
        self._acting: set[str] = set()
        self._event_timer: threading.Timer | None = None

    # ---- daemon wiring -------------------------------------------------------------------------

    def attach(
        self, socket: Path | None, wake: Callable[[str], None] | None, events: Any = None
    ) -> None:
        """Called by the daemon: the API socket to mount, how to wake the worker, the journal."""
        self.socket = Path(socket) if socket else None
        self.wake = wake
        self.events = events
        self._stop.clear()
        if self.api_dir.is_dir():
            self._link_socket()  # containers from an earlier daemon reach this one

    def _link_socket(self) -> bool:
        """Point ``<state-dir>/containers/api/api.sock`` at the live socket (a hard link)."""
        if self.socket is None or not self.socket.is_socket():
            return False
        try:
            self.api_dir.mkdir(parents=True, exist_ok=True)
            link = self.api_dir / "api.sock"
            if link.exists() and os.path.samefile(link, self.socket):
                return True
            tmp = self.api_dir / f".api.sock.{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.link(self.socket, tmp)
            os.replace(tmp, link)
            # sheltie's fallback where PID 1 cannot be entered: the daemon's namespaces
            replace_file(self.api_dir / "host-pid", f"{os.getpid()}\n".encode(), 0o644)
            return True
        except OSError as error:  # another file system: the file mount alone has to do
            log.warning("cannot link the API socket for host containers", error=str(error))
            return False

    def close(self) -> None:
        """Stop the event watch and timers. Containers keep running (the next daemon adopts)."""
        self._stop.set()
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
            if self._event_timer is not None:
                timers.append(self._event_timer)
        for timer in timers:
            timer.cancel()
        if self._watch is not None:
            self._watch.join(timeout=10)
            self._watch = None

    def _ensure_watch(self) -> None:
        if self.wake is None or self._stop.is_set():
            return
        if self._watch is not None and self._watch.is_alive():
            return
        self._watch = threading.Thread(target=self._watch_loop, name="podman-events", daemon=True)
        self._watch.start()

    def _watch_loop(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            started = self.clock()
            try:
                for event in self.engine.events(self._stop):
                    self._on_event(event)
            except Exception as error:  # keep watching; the periodic pass covers the gap
                log.warning("container event watch failed", error=str(error))
            if self._stop.is_set():
                return
            delay = 1.0 if self.clock() - started > 30 else min(delay * 2, 30.0)
            self._stop.wait(delay)

    def _on_event(self, event: Mapping[str, Any]) -> None:
        status = str(event.get("Status", ""))
        name = str(event.get("Name", ""))
        if status not in WAKE_EVENTS or self.wake is None:
            return
        with self._lock:
            if name in self._acting:
                return  # our own doing (remove, recreate)
            if self._event_timer is not None and self._event_timer.is_alive():
                return  # a wake-up is already on its way
            # "died" is followed by "remove" when a container is removed by hand: wake once,
            # after both, rather than starting a container that is being removed.
            wake = self.wake
            self._event_timer = threading.Timer(
                EVENT_SETTLE, lambda: wake(f"container {name} {status}")
            )
            self._event_timer.daemon = True
            self._event_timer.start()

    def _pulled(self, reason: str) -> None:
        if self.wake is not None and not self._stop.is_set():
            self.wake(reason)

    def _emit(self, kind: str, message: str, level: str = "warning", **fields: Any) -> None:
        """A drift or a failure: an event, logged at ``level``."""
        if self.events is not None:
            self.events.emit(kind, message, level=level, **fields)
        else:
            getattr(log, level)(message, kind=kind, **fields)

    def _wake_later(self, name: str, delay: float) -> None:
        if self.wake is None or self._stop.is_set():
            return
        wake = self.wake
        timer = threading.Timer(max(delay, 0.0), lambda: wake(f"container {name} restart due"))
        timer.daemon = True
        with self._lock:
            old = self._timers.pop(name, None)
            self._timers[name] = timer
        if old is not None:
            old.cancel()
        timer.start()

    # ---- Executor: observe, decide (pure), execute -----------------------------------------

    @property
    def budget(self) -> RestartBudget:
        return RestartBudget(self.max_restarts, self.window, self.backoff_start, self.backoff_max)

    def observe(self, settings: Mapping[str, Any]) -> ContainerObservation:
        """What the engine and our memory say now (reads only; the dry run calls it too)."""
        now = self.clock()
        with self._lock:
            history = {
                name: History(r.identity, r.seen_running, tuple(r.recent), r.crash_looping)
                for name, r in self._records.items()
            }
        wanted, _ = desired_containers(settings.get("host-containers") or {})
        if not wanted and not self.engine.initialized():
            return ContainerObservation(now, consulted=False, history=history, budget=self.budget)
        problem = self.engine.available()
        if problem:
            return ContainerObservation(now, problem=f"cannot run: {problem}",
                                        engine_error=problem, history=history,
                                        budget=self.budget)
        try:
            containers = tuple(self.engine.list())
        except EngineError as error:
            return ContainerObservation(now, problem=f"cannot list containers: {error}",
                                        engine_error=str(error), history=history,
                                        budget=self.budget)
        return ContainerObservation(now, containers=containers, history=history,
                                    budget=self.budget)

    @staticmethod
    def decide(
        settings: Mapping[str, Any], observation: ContainerObservation
    ) -> ContainerPlan:
        """The pure decision (``plan_host_containers``) for ``settings``."""
        return plan_host_containers(settings.get("host-containers") or {}, observation)

    @staticmethod
    def dry_run(container_plan: ContainerPlan) -> list[dict[str, Any]]:
        """The dry run's view of a decision: every action but keep."""
        return [a.as_dict() for a in container_plan.actions if a.action != KEEP]

    def plan(self, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
        """What a pass would do to host containers for ``settings`` (touches nothing)."""
        return self.dry_run(self.decide(settings, self.observe(settings)))

    def status(self) -> dict[str, Any]:
        with self._lock:
            containers = {name: record.view() for name, record in sorted(self._records.items())}
            problem = self._engine_problem
        return {
            "engine": type(self.engine).__name__,
            "engine_error": problem,
            "host-containers": containers,
        }

    def reconcile(
        self, settings: Mapping[str, Any], generation: int, changed: set[str] | None = None
    ) -> list[dict[str, Any]]:
        """Observe, decide and execute in one call (tests and tools; a pass does the three)."""
        decision = self.decide(settings, self.observe(settings))
        return [step.as_dict() for step in self.execute(decision, generation)]

    def execute(self, container_plan: ContainerPlan, generation: int) -> list[Step]:
        """Carry out ``container_plan`` and report a step per action that did something."""
        observation = container_plan.observation
        if observation.consulted:
            with self._lock:
                self._engine_problem = observation.engine_error
            if observation.problem is None:
                self._ensure_watch()
        steps: list[Step] = []
        for action in container_plan.actions:
            if action.action in (INVALID, FAIL):
                state = "invalid" if action.action == INVALID else "failed"
                steps.append(self._failed(action.name, action.reason, action.desired, state))
                continue
            try:
                with self._lock:
                    self._acting.add(action.name)
                step = self._apply(action, generation, observation.now)
            except EngineError as error:
                step = self._failed(action.name, str(error), want=action.desired)
            except OSError as error:
                step = self._failed(action.name, f"{type(error).__name__}: {error}", action.desired)
            finally:
                with self._lock:
                    self._acting.discard(action.name)
            if step is not None:
                steps.append(step)
        if observation.consulted:
            self._forget({a.name for a in container_plan.actions if a.action != REMOVE})
        else:
            self._forget({a.name for a in container_plan.actions})
        return steps

    # ---- actions -------------------------------------------------------------------------------

    def _record(self, name: str, want: DesiredContainer | None = None) -> Record:
        with self._lock:
            record = self._records.get(name)
            if record is None:
                record = self._records[name] = Record(name)
            if want is not None and record.identity != want.identity:
                # New settings: a fresh crash-loop budget and no stale error.
                record.identity = want.identity
                record.source = want.source
                record.superpowered = want.superpowered
                record.recent = []
                record.crash_looping = False
                record.last_error = ""
                record.log_tail = ""
                record.exit_code = None
                record.seen_running = False
            return record

    def _forget(self, keep: set[str]) -> None:
        self.pulls.keep_only(keep)
        with self._lock:
            for name in list(self._records):
                if name not in keep:
                    del self._records[name]
                    timer = self._timers.pop(name, None)
                    if timer is not None:
                        timer.cancel()

    def _failed(
        self,
        name: str,
        detail: str,
        want: DesiredContainer | None = None,
        state: str = "failed",
        **extra: Any,
    ) -> Step:
        record = self._record(name, want)
        with self._lock:
            record.state = state
            record.last_error = detail
        return self._step(name, "failed", detail, want, **extra)

    def _step(
        self, name: str, result: str, detail: str, want: DesiredContainer | None, **extra: Any
    ) -> Step:
        if want is not None:
            extra.update(source=want.source, superpowered=want.superpowered)
        return Step("container", name, result, detail, **extra)

    def _apply(self, action: ContainerAction, generation: int, now: float) -> Step | None:
        name, want, current = action.name, action.desired, action.observed
        if action.action == REMOVE:
            self.engine.remove(name)
            return self._step(name, "removed", action.reason, None)
        assert want is not None
        record = self._record(name, want)
        if action.action == CONFLICT:
            return self._failed(name, action.reason, want)
        if action.action == KEEP:
            with self._lock:
                record.state = "running"
                record.seen_running = True
                record.generation = record.generation or int(
                    (current.labels if current else {}).get("reconciler.generation", 0) or 0
                )
                if current is not None and not record.image:
                    record.image = current.image_id
            return None
        if action.action == RECREATE:
            return self._create(want, generation, action.reason, "recreated", replace=True)
        if action.action == CREATE:
            return self._create(want, generation, action.reason, "created")
        # Drift: the container was running as asked and is gone (no container) or stopped.
        with self._lock:
            record.exit_code = current.exit_code if current is not None else None
            record.recent = [t for t in record.recent if now - t < self.window]
        if action.action == CRASH_LOOP:
            return self._crash_loop(record, action)
        if action.action == WAIT:
            self._wake_later(name, action.wait)
            with self._lock:
                record.state = "restarting"
                record.last_error = action.reason
            return self._step(name, "failed", action.reason, None)
        assert action.action == RESTART, action
        with self._lock:
            record.recent.append(now)
            record.restarts += 1
        what = action.what
        self._emit(
            "drift",
            f"host container {name} {what}; restarting",
            container=name,
            generation=generation,
        )
        if current is not None:
            try:
                self.engine.start(name)
            except EngineError:
                self.engine.remove(name)  # a broken or vanishing container: make a new one
                return self._create(want, generation, f"{what}; recreated", "restarted", drift=True)
            with self._lock:
                record.state = "running"
                record.last_error = ""
            return self._step(name, "restarted", f"{what}; started again", want, drift=True)
        return self._create(want, generation, f"{what}; recreated", "restarted", drift=True)

    def _crash_loop(self, record: Record, action: ContainerAction) -> Step:
        """Report a crash-looping container; the first time, with its log tail and an event."""
        with self._lock:
            first = not record.crash_looping
            record.crash_looping = True
            record.state = "failed"
        if first:
            record.log_tail = self.engine.logs(record.name)[-2000:]
            self._emit(
                "failure",
                f"host container {record.name} is crash-looping: {action.restarts} restarts in"
                f" {self.window:.0f} s; not restarted until its settings change",
                container=record.name,
            )
        tail = record.log_tail.strip().splitlines()[-5:]
        detail = action.reason
        if tail:
            detail += "; log tail: " + " | ".join(tail)
        with self._lock:
            record.last_error = detail
        return self._step(record.name, "failed", detail, None, exit_code=record.exit_code)

    def _create(
        self,
        want: DesiredContainer,
        generation: int,
        reason: str,
        result: str,
        replace: bool = False,
        drift: bool = False,
    ) -> Step:
        name = want.name
        record = self._record(name, want)
        with self._lock:
            record.state = "pending"
        storage = self._prepare_storage(want)
        try:  # before removing the old one: a bad or slow source keeps the old one running
            image, cached = self.pulls.image(name, want.source)
        except PullPending as pending:
            with self._lock:
                record.state = "pulling"
                record.last_error = ""
            return self._step(name, "pending", f"{reason}; {pending}", want)
        if replace:
            self.engine.remove(name)
            faults.point(f"container-removed:{name}")
        try:
            self.engine.run(self._spec(want, image, storage, generation))
            faults.point(f"container-created:{name}")
        except EngineError:
            with contextlib.suppress(EngineError):
                self.engine.remove(name)  # no half-made container left behind
            if not cached:
                raise
            self.pulls.forget(want.source)  # the image went away behind our back: again
            image, _ = self.pulls.image(name, want.source)
            self.engine.run(self._spec(want, image, storage, generation))
        with self._lock:
            record.state = "running"
            record.image = image.id
            record.digest = image.digest
            record.generation = generation
            record.last_error = ""
            record.seen_running = True
        return self._step(name, result, reason, want, image=image.id, digest=image.digest,
                          drift=True if drift else None)

    def _spec(
        self, want: DesiredContainer, image: Image, storage: Path, generation: int
    ) -> RunSpec:
        mounts = [Mount(storage, f"{PERSISTENT_TARGET}/{want.name}")]
        api, env = self.api_mounts()
        mounts += api
        if want.superpowered:
            mounts.append(Mount(Path("/"), ROOTFS_TARGET, read_only=True))
        return RunSpec(
            name=want.name,
            image=image.id,
            labels=want.labels(generation),
            mounts=mounts,
            privileged=want.superpowered,
            host_pid=want.superpowered,
            host_network=want.superpowered,
            env=env,
        )

    def api_mounts(self) -> tuple[list[Mount], dict[str, str]]:
        """The API socket (and its directory, which outlives a daemon restart) and the tools
        zipapp as apiclient, for any container of ours; the environment that goes with them."""
        mounts, env = [], {}
        if self.socket is not None and self.socket.exists():
            mounts.append(Mount(self.socket, SOCKET_TARGET))
            if self._link_socket():
                mounts.append(Mount(self.api_dir, API_DIR_TARGET, read_only=True))
                env["APICLIENT_SOCKET"] = f"{API_DIR_TARGET}/api.sock"
        mounts.append(Mount(self._apiclient(), APICLIENT_TARGET, read_only=True))
        return mounts, env

    # ---- files ---------------------------------------------------------------------------------

    def storage_dir(self, name: str) -> Path:
        """``<state-dir>/host-containers/<name>``; refuses anything that would leave it."""
        base = self.storage_base.resolve()
        path = (base / name).resolve()
        if path.parent != base or name in ("", ".", ".."):
            raise OSError(f"host container name {name!r} escapes {base}")
        return path

    def _prepare_storage(self, want: DesiredContainer) -> Path:
        self.storage_base.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.storage_dir(want.name)
        if path.is_symlink():
            raise OSError(f"{path} is a symbolic link; refusing to use it")
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        target = path / "user-data"
        data = want.decoded_user_data()
        if data is None:
            if target.is_file() or target.is_symlink():
                target.unlink()
        else:
            replace_file(target, data, 0o600)
        return path

    def _apiclient(self) -> Path:
        """The tools zipapp (``reconciler.toolbox``), rebuilt when a bundled module changes."""
        return toolbox.ensure_zipapp(self.apiclient_path)
