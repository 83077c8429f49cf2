"""The pure half of host containers: desired entries, observed containers, and the plan between.

``plan_containers(desired, observed)`` takes ``settings.host-containers`` (name -> entry) and the
containers the engine reports in our storage, and returns one action per name: create, recreate,
start, remove or keep, each with a reason. ``plan_host_containers(desired, observation)`` adds
what the executor remembers (which containers it saw running, their recent restarts) and the
engine's health to that, and decides the rest: a container that was running as asked and is
gone or stopped is drift, restarted now, after a back-off, or not at all once it crash-loops
(``RestartBudget``). Neither reads a clock or touches anything, so the dry run
(``POST /tx/plan``) and the real pass share them.

A desired container's *identity* is a hash of what shapes it (source, superpowered, user-data).
It is stored on the container as a label, so "this container is out of date" is decided from the
observed labels alone, across daemon restarts, without any other record.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Labels that mark a container as ours and describe what it was made from.
LABEL_MANAGED = "reconciler.managed"
LABEL_NAME = "reconciler.name"
LABEL_IDENTITY = "reconciler.identity"
LABEL_SOURCE = "reconciler.source"
LABEL_SUPERPOWERED = "reconciler.superpowered"
LABEL_USER_DATA = "reconciler.user-data"  # a short hash, never the (secret) data itself
LABEL_GENERATION = "reconciler.generation"

SECTION = "host-containers"
ARCHIVE_TRANSPORTS = ("oci-archive:", "docker-archive:", "oci:", "dir:")  # local, never pulled

CREATE, RECREATE, START, REMOVE, KEEP, INVALID, CONFLICT = (
    "create",
    "recreate",
    "start",
    "remove",
    "keep",
    "invalid",
    "conflict",
)
# Decided with the executor's memory and the engine's health (``plan_host_containers``):
RESTART = "restart"  # drift: it ran as asked and is gone or stopped; bring it back now
WAIT = "wait"  # drift, but within the back-off: the executor wakes the worker when it is due
CRASH_LOOP = "crash-loop"  # drift past the budget: not restarted until its settings change
FAIL = "fail"  # the engine cannot be used (missing, broken): the container cannot run


@dataclass(frozen=True)
class DesiredContainer:
    name: str
    source: str
    superpowered: bool = False
    user_data: str | None = None  # base64, as in the settings

    @property
    def user_data_hash(self) -> str:
        return _short_hash(self.user_data or "")

    @property
    def identity(self) -> str:
        return identity(self.source, self.superpowered, self.user_data)

    def labels(self, generation: int) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_NAME: self.name,
            LABEL_IDENTITY: self.identity,
            LABEL_SOURCE: self.source,
            LABEL_SUPERPOWERED: "true" if self.superpowered else "false",
            LABEL_USER_DATA: self.user_data_hash,
            LABEL_GENERATION: str(generation),
        }

    def decoded_user_data(self) -> bytes | None:
        if self.user_data is None:
            return None
        return base64.b64decode(self.user_data, validate=True)


@dataclass(frozen=True)
class ObservedContainer:
    """One container in our storage, as the engine reports it."""

    name: str
    id: str = ""
    state: str = "running"  # running | exited | created | paused | stopped | ...
    labels: Mapping[str, str] = field(default_factory=dict)
    image_id: str = ""
    exit_code: int | None = None

    @property
    def managed(self) -> bool:
        return self.labels.get(LABEL_MANAGED) == "true"

    @property
    def identity(self) -> str:
        return self.labels.get(LABEL_IDENTITY, "")

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class ContainerAction:
    """One decision; ``what`` (drift), ``restarts`` (in the budget's window) and ``wait``
    (seconds until a restart is due) are set for restart, wait and crash-loop."""

    name: str
    action: str  # create | recreate | start | remove | keep | invalid | conflict | restart |
    # wait | crash-loop | fail
    reason: str
    desired: DesiredContainer | None = None
    observed: ObservedContainer | None = None
    what: str = ""
    restarts: int = 0
    wait: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"name": self.name, "action": self.action, "reason": self.reason}
        if self.desired is not None:
            answer["source"] = self.desired.source
            answer["superpowered"] = self.desired.superpowered
        return answer


@dataclass(frozen=True)
class History:
    """What the executor remembers of one container between passes (in memory, per identity)."""

    identity: str
    seen_running: bool = False
    recent: tuple[float, ...] = ()  # monotonic times of the restarts counted by the budget
    crash_looping: bool = False


@dataclass(frozen=True)
class RestartBudget:
    """At most ``max_restarts`` drift restarts in ``window`` seconds, with exponential back-off
    between them; past it, a container is crash-looping until its settings change."""

    max_restarts: int = 5
    window: float = 600.0
    backoff_start: float = 1.0
    backoff_max: float = 60.0

    def recent(self, history: History, now: float) -> tuple[float, ...]:
        return tuple(t for t in history.recent if now - t < self.window)

    def decide(self, history: History, now: float) -> tuple[str, int, float]:
        """(RESTART | WAIT | CRASH_LOOP, restarts in the window, seconds until due)."""
        recent = self.recent(history, now)
        count = len(recent)
        if history.crash_looping or count >= self.max_restarts:
            return CRASH_LOOP, count, 0.0
        delay = 0.0 if count == 0 else min(self.backoff_max, self.backoff_start * 2 ** (count - 1))
        due = recent[-1] + delay if recent else now
        if now < due:
            return WAIT, count, due - now
        return RESTART, count, 0.0


@dataclass(frozen=True)
class ContainerObservation:
    """What the executor observed for a pass: ``consulted`` is False when nothing is enabled
    and our storage was never made (podman is then not needed, not even asked);
    ``problem`` says why the engine cannot be used or listed."""

    now: float
    consulted: bool = True
    problem: str | None = None  # the failed step's detail ("cannot run: ...")
    engine_error: str | None = None  # the engine's own words, for ``GET /status``
    containers: tuple[ObservedContainer, ...] = ()
    history: Mapping[str, History] = field(default_factory=dict)
    budget: RestartBudget = field(default_factory=RestartBudget)


def identity(source: str, superpowered: bool, user_data: str | None) -> str:
    document = json.dumps(
        {"source": source, "superpowered": bool(superpowered), "user-data": user_data or ""},
        sort_keys=True,
    )
    return hashlib.sha256(document.encode()).hexdigest()[:32]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else ""


def desired_containers(
    entries: Mapping[str, Any] | None,
) -> tuple[dict[str, DesiredContainer], dict[str, str]]:
    """The enabled entries of ``settings.host-containers``, and the invalid ones with why."""
    desired: dict[str, DesiredContainer] = {}
    invalid: dict[str, str] = {}
    for name, entry in sorted((entries or {}).items()):
        if not isinstance(entry, Mapping) or not entry.get("enabled", False):
            continue
        problems = entry_problems(name, entry)
        if problems:
            invalid[name] = "; ".join(problems)
            continue
        user_data = entry.get("user-data")
        desired[name] = DesiredContainer(
            name=name,
            source=str(entry["source"]),
            superpowered=bool(entry.get("superpowered", False)),
            user_data=None if user_data is None else str(user_data),
        )
    return desired, invalid


def entry_problems(name: Any, entry: Any) -> list[str]:
    """What the settings schema refuses in one host container, its name included.

    The schema is the only rule of what a host container is (a name that is a plain directory
    and container name, an image reference that cannot read as an option, a local archive by
    absolute path, base64 user-data). Committed settings passed it already; asking it again here
    guards what reached the store another way (a migration is not validated) before a name
    becomes a directory or a source becomes a podman argument.
    """
    from reconciler.schema import DEFAULT_VARIANT, Schema  # every variant has this section

    settings = {SECTION: {name: entry}}
    return [str(p) for p in Schema.load(DEFAULT_VARIANT).validate(settings, sections=(SECTION,))]


def _changes(desired: DesiredContainer, observed: ObservedContainer) -> str:
    labels = observed.labels
    changes = []
    if labels.get(LABEL_SOURCE) != desired.source:
        changes.append(f"source {labels.get(LABEL_SOURCE, '?')} -> {desired.source}")
    was_super = labels.get(LABEL_SUPERPOWERED) == "true"
    if was_super != desired.superpowered:
        old, new = str(was_super).lower(), str(desired.superpowered).lower()
        changes.append(f"superpowered {old} -> {new}")
    if labels.get(LABEL_USER_DATA, "") != desired.user_data_hash:
        changes.append("user-data changed")
    return ", ".join(changes) or "definition changed"


def plan_containers(
    desired: Mapping[str, Any] | None, observed: Iterable[ObservedContainer]
) -> list[ContainerAction]:
    """One action per host container name, removals first, then by name.

    ``desired`` is the ``settings.host-containers`` map (entries not enabled are not desired);
    ``observed`` lists every container in our storage, managed or not. Containers without our
    label are never acted on: a desired name taken by one of them is a ``conflict``.
    """
    wanted, invalid = desired_containers(desired)
    seen: dict[str, ObservedContainer] = {}
    for container in observed:
        seen.setdefault(container.name, container)
    actions: list[ContainerAction] = []

    for name, container in sorted(seen.items()):
        if not container.managed or name in wanted:
            continue
        entry = (desired or {}).get(name)
        if name in invalid:
            reason = f"invalid settings: {invalid[name]}"
        elif isinstance(entry, Mapping):
            reason = "disabled"
        else:
            reason = "no longer in settings"
        actions.append(ContainerAction(name, REMOVE, reason, observed=container))

    for name, problem in sorted(invalid.items()):
        actions.append(ContainerAction(name, INVALID, problem))

    for name, want in sorted(wanted.items()):
        current = seen.get(name)
        if current is None:
            actions.append(ContainerAction(name, CREATE, "not running: no container", want))
        elif not current.managed:
            actions.append(
                ContainerAction(
                    name,
                    CONFLICT,
                    f"a container named {name!r} exists that is not ours; left alone",
                    want,
                    current,
                )
            )
        elif current.identity != want.identity:
            actions.append(ContainerAction(name, RECREATE, _changes(want, current), want, current))
        elif not current.running:
            code = "" if current.exit_code is None else f" (exit code {current.exit_code})"
            actions.append(
                ContainerAction(name, START, f"not running: {current.state}{code}", want, current)
            )
        else:
            actions.append(ContainerAction(name, KEEP, "running", want, current))
    return actions


def _drift(action: ContainerAction, observation: ContainerObservation) -> ContainerAction:
    """A create or start of a container that ran as asked (or any start) is drift: decide
    whether it restarts now, later or not at all."""
    want, current = action.desired, action.observed
    assert want is not None
    remembered = observation.history.get(action.name)
    history = remembered if remembered and remembered.identity == want.identity else History(
        want.identity
    )
    if action.action == CREATE and not history.seen_running:
        return action
    exit_code = current.exit_code if current is not None else None
    what = "removed" if action.action == CREATE else f"exited (code {exit_code})"
    verdict, count, wait = observation.budget.decide(history, observation.now)
    budget = observation.budget
    if verdict == CRASH_LOOP:
        reason = (
            f"crash-looping: {what}, {count} restarts in {budget.window:.0f} s;"
            " not restarted until its settings change"
        )
    elif verdict == WAIT:
        reason = f"{what}; restart {count + 1} of {budget.max_restarts} in {wait:.1f} s"
    else:
        reason = f"{what}; restarting"
    return ContainerAction(action.name, verdict, reason, want, current, what, count, wait)


@dataclass(frozen=True)
class ContainerPlan:
    """The decision of a pass for host containers, and the observation it was made on."""

    actions: tuple[ContainerAction, ...]
    observation: ContainerObservation


def plan_host_containers(
    desired: Mapping[str, Any] | None, observation: ContainerObservation
) -> ContainerPlan:
    """Every host-container decision of a pass: invalid entries first, then (removals first)
    what ``plan_containers`` says, with drift restarts decided by the restart budget; when the
    engine cannot be used, each enabled container fails."""
    wanted, invalid = desired_containers(desired)
    actions = [ContainerAction(name, INVALID, problem) for name, problem in sorted(invalid.items())]
    if not observation.consulted:
        return ContainerPlan(tuple(actions), observation)
    if observation.problem is not None:
        actions += [ContainerAction(name, FAIL, observation.problem, want)
                    for name, want in sorted(wanted.items())]
        return ContainerPlan(tuple(actions), observation)
    for action in plan_containers(desired, observation.containers):
        if action.action == INVALID:
            continue
        if action.action in (CREATE, START):
            action = _drift(action, observation)
        actions.append(action)
    return ContainerPlan(tuple(actions), observation)
