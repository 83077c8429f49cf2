"""The host-containers executor: glues the pure planner to a container engine.

Each pass: ``observe`` (list the containers in our storage, and what we remember of them),
``decide`` (the pure ``plan_host_containers``: the dry run calls the same two), then ``execute``
(removals first) and report. A container that exits or is removed by hand is brought back with
exponential backoff, within a crash-loop budget (at most ``max_restarts`` in ``window`` seconds;
``planner.RestartBudget``); past it, the container is reported failed with its last exit code
and log tail until its settings change.

The jobs around the decision live in modules of their own: ``restarts`` (what we remember of
each container, restart timers), ``watch`` (engine events to wake-ups), ``images`` (running on
the pulled image), ``runspec`` (mounts and the ``RunSpec``), ``storage`` (persistent
directories). This module is the glue: the Executor protocol and one method per action.

Nothing here runs podman until a host container is enabled (or our storage already exists), so a
host without podman only fails where a host container is asked for, with a clear step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler.containers.engine import ContainerEngine, EngineError, Image, Mount, RunSpec
from reconciler.containers.images import run_on_image
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
from reconciler.containers.restarts import Record, RestartTimers, crash_loop_detail
from reconciler.containers.runspec import ApiAccess, run_spec
from reconciler.containers.storage import ContainerStorage
from reconciler.containers.watch import EventWatch
from reconciler.logs import get_logger
from reconciler.steps import Step

log = get_logger("containers")


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
        storage_quota: int | None = None,
    ):
        self.state_dir = Path(state_dir)
        self.storage = ContainerStorage(self.state_dir / "host-containers", storage_quota)
        self.engine_dir = self.state_dir / "containers"
        self.engine: ContainerEngine = engine or PodmanEngine(self.engine_dir)
        self.api = ApiAccess(self.engine_dir)
        self.max_restarts = max_restarts
        self.window = window
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.pulls = Pulls(self.engine, backoff_start=pull_backoff, grace=pull_grace,
                           clock=clock, on_done=self._pulled)
        self.clock = clock
        self.sleep = sleep
        self.events: Any = None  # reconciler.events.Events when attached to a daemon
        self.reserve: Any = None  # reconciler.reserve.StoreReserve (a daemon's), for status
        self._records: dict[str, Record] = {}
        self._engine_problem: str | None = None
        self._lock = threading.Lock()
        self._timers = RestartTimers(self._lock)
        self._watch = EventWatch(self.engine, clock, self._lock)

    # ---- daemon wiring -------------------------------------------------------------------------

    @property
    def wake(self) -> Callable[[str], None] | None:
        return self._watch.wake

    def attach(
        self, socket: Path | None, wake: Callable[[str], None] | None, events: Any = None
    ) -> None:
        """Called by the daemon: the API socket to mount, how to wake the worker, the journal."""
        self.api.socket = Path(socket) if socket else None
        self._watch.wake = wake
        self.events = events
        self._watch.stop.clear()
        if self.api.api_dir.is_dir():
            self.api.link_socket()  # containers from an earlier daemon reach this one

    def close(self) -> None:
        """Stop the event watch and timers. Containers keep running (the next daemon adopts)."""
        self._watch.stop.set()
        self._timers.cancel_all()
        self._watch.close()

    def _pulled(self, reason: str) -> None:
        if self.wake is not None and not self._watch.stop.is_set():
            self.wake(reason)

    def _emit(self, kind: str, message: str, level: str = "warning", **fields: Any) -> None:
        """A drift or a failure: an event, logged at ``level``."""
        if self.events is not None:
            self.events.emit(kind, message, level=level, **fields)
        else:
            getattr(log, level)(message, kind=kind, **fields)

    def _wake_later(self, name: str, delay: float) -> None:
        if self.wake is None or self._watch.stop.is_set():
            return
        self._timers.wake_later(name, delay, self.wake)

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

    def degraded_reasons(self) -> list[str]:
        """A state disk filled past the store's reserve degrades the host (GET /status): the
        likeliest cause is a host container's storage, and the way out is to disable it."""
        problem = self.reserve.problem() if self.reserve is not None else None
        return [problem] if problem else []

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
                self._watch.ensure()
        steps: list[Step] = []
        for action in container_plan.actions:
            if action.action in (INVALID, FAIL):
                state = "invalid" if action.action == INVALID else "failed"
                steps.append(self._failed(action.name, action.reason, action.desired, state))
                continue
            try:
                with self._watch.acting(action.name):
                    step = self._apply(action, generation, observation.now)
            except EngineError as error:
                step = self._failed(action.name, str(error), want=action.desired)
            except OSError as error:
                step = self._failed(action.name, f"{type(error).__name__}: {error}", action.desired)
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
                record.renew(want.identity, want.source, want.superpowered)
            return record

    def _forget(self, keep: set[str]) -> None:
        self.pulls.keep_only(keep)
        with self._lock:
            for name in list(self._records):
                if name not in keep:
                    del self._records[name]
                    self._timers.drop(name)

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
        """Report a crash-looping container; the first time, with its log tail and an event.
        The record turns crash-looping and gets its reason in one step: a status read in
        between would show the loop without why (the log read can take a while)."""
        with self._lock:
            first = not record.crash_looping
            tail = record.log_tail
        if first:
            tail = self.engine.logs(record.name)[-2000:]
        detail = crash_loop_detail(action.reason, tail)
        with self._lock:
            record.log_tail = tail
            record.crash_looping = True
            record.state = "failed"
            record.last_error = detail
        if first:
            self._emit(
                "failure",
                f"host container {record.name} is crash-looping: {action.restarts} restarts in"
                f" {self.window:.0f} s; not restarted until its settings change",
                container=record.name,
            )
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
        storage = self.storage.prepare(want)
        try:  # before removing the old one: a bad or slow source keeps the old one running
            pulled = self.pulls.image(name, want.source)
        except PullPending as pending:
            with self._lock:
                record.state = "pulling"
                record.last_error = ""
            return self._step(name, "pending", f"{reason}; {pending}", want)
        image = run_on_image(self.engine, self.pulls, name, want.source, pulled,
                             lambda image: self._spec(want, image, storage, generation), replace)
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
        return run_spec(want, image, storage, generation, self.api)

    def api_mounts(self) -> tuple[list[Mount], dict[str, str]]:
        """The API socket, its directory and apiclient for any container of ours (bootstrap
        containers use it too): ``runspec.ApiAccess.mounts``."""
        return self.api.mounts()

    def storage_dir(self, name: str) -> Path:
        """``<state-dir>/host-containers/<name>``; refuses anything that would leave it."""
        return self.storage.dir(name)

    def _apiclient(self) -> Path:
        return self.api.apiclient()
