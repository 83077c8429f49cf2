"""The host's status, decided over plain data: kstatus-style conditions and one headline.

Every part the host's health depends on (the git source, desired-state files, user data, the
boot health gate, host containers, updates, reboot coordination, config rollouts,
background loops) is read
from the plain dictionary its owner reports into a ``Part``; ``summarize`` turns the parts and
the last pass into the conditions ``Ready``, ``Reconciling``, ``Degraded`` and ``Stalled``
(kstatus: ``Stalled`` is a failure that waits for someone to change something, ``Degraded`` any
failure) plus one condition per part. The headline is never ``Ready`` while any part fails,
and it names the first failing part's reason. Nothing here does I/O: the API's ``GET /status``
gathers the dictionaries and calls ``summarize``; tests call it over literals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OK, PROGRESSING, FAILED, STALLED = "ok", "progressing", "failed", "stalled"


@dataclass(frozen=True)
class Part:
    """One part's health: ``state`` is ok | progressing | failed (retried by itself) |
    stalled (waits for a change: an invalid revision, a crash-looping container)."""

    type: str  # the condition type, e.g. "GitSource"
    state: str
    reason: str  # CamelCase, one word
    message: str = ""

    @property
    def failing(self) -> bool:
        return self.state in (FAILED, STALLED)


# ---- readers: one owner's status dictionary -> its Part (None: the part is not in use) --------

_GIT = {
    "Synced": (OK, "Synced"),
    "Fetching": (PROGRESSING, "Fetching"),
    "Failed": (FAILED, "FetchFailed"),
    "Stale": (FAILED, "RemoteStale"),
    "Invalid": (STALLED, "RevisionInvalid"),
    "Unverified": (STALLED, "RevisionUnverified"),
    "Refused": (STALLED, "RevisionRefused"),
}


def git_part(status: Mapping[str, Any] | None) -> Part | None:
    """``GitSync.status.as_dict()``; a disabled source is no part."""
    if not status or status.get("condition") in (None, "Disabled"):
        return None
    state, reason = _GIT.get(status["condition"], (FAILED, str(status["condition"])))
    return Part("GitSource", state, reason, f"git source: {status.get('reason') or reason}")


def desired_files_part(status: Mapping[str, Any] | None) -> Part | None:
    """``DesiredFiles.status``."""
    if not status:
        return None
    condition = status.get("condition")
    state, reason = {
        "Applied": (OK, "Applied"),
        "Pending": (PROGRESSING, "Pending"),
        "Invalid": (STALLED, "FilesInvalid"),
    }.get(condition, (FAILED, "ApplyFailed"))
    detail = status.get("reason") or condition
    return Part("DesiredFiles", state, reason, f"desired-state files: {detail}")


def user_data_part(unavailable: Sequence[str] | None) -> Part | None:
    """The boot's user-data sources that did not answer (None: no boot in this process)."""
    if unavailable is None:
        return None
    if unavailable:
        return Part("UserData", FAILED, "SourceUnavailable",
                    "user data: " + "; ".join(unavailable) + " (tried again at the next boot)")
    return Part("UserData", OK, "Applied", "user data: every source answered")


def boot_health_part(outcome: Mapping[str, Any] | None, gated: bool) -> Part | None:
    """The boot gate's outcome (``updates.boot``); ``gated``: this host has one."""
    if not gated:
        return None
    if outcome is None:
        return Part("BootHealth", PROGRESSING, "Checking", "boot health: not decided yet")
    if outcome.get("marked_successful"):
        return Part("BootHealth", OK, "MarkedSuccessful",
                    f"boot health: marked successful (set {outcome.get('set')})")
    return Part("BootHealth", STALLED, "BootNotMarkedSuccessful",
                f"boot not marked successful: {outcome.get('reason')}")


def containers_part(status: Mapping[str, Any] | None) -> Part | None:
    """``HostContainers.status()``: the engine, and each container's record."""
    if not status:
        return None
    containers = status.get("host-containers") or {}
    if status.get("engine_error") and containers:
        return Part("HostContainers", FAILED, "EngineUnavailable",
                    f"host containers: engine unavailable: {status['engine_error']}")
    looping = [n for n, c in containers.items() if c.get("crash_looping")]
    if looping:
        first = containers[looping[0]]
        return Part("HostContainers", STALLED, "CrashLooping",
                    f"host container {', '.join(looping)} crash-looping: "
                    f"{first.get('last_error') or 'exited'}")
    broken = [n for n, c in containers.items() if c.get("state") in ("failed", "invalid")]
    restarting = [n for n, c in containers.items() if c.get("state") in ("restarting", "exited")]
    if broken or restarting:
        names = broken or restarting
        first = containers[names[0]]
        state = STALLED if containers[names[0]].get("state") == "invalid" else FAILED
        reason = "ContainerFailed" if broken else "ContainerRestarting"
        return Part("HostContainers", state, reason,
                    f"host container {', '.join(names)}: {first.get('last_error') or reason}")
    if not containers:
        return None
    pending = [n for n, c in containers.items() if c.get("state") in ("pending", "pulling")]
    if pending:
        return Part("HostContainers", PROGRESSING, "Starting",
                    f"host container {', '.join(pending)} starting")
    return Part("HostContainers", OK, "Running", f"{len(containers)} host container(s) running")


def updates_part(status: Mapping[str, Any] | None) -> Part | None:
    """``UpdatesExecutor.status()``: a command running, or the last one failing."""
    if not status:
        return None
    if status.get("busy"):
        return Part("Updates", PROGRESSING, "CommandRunning", "updates: a command is running")
    command = status.get("most_recent_command") or {}
    if command.get("cmd_status") == "Failed":  # until the next command of any kind succeeds
        detail = (command.get("stderr") or "").strip().splitlines()[-1:] or [
            f"exit status {command.get('exit_status')}"]
        return Part("Updates", FAILED, "UpdateCommandFailed",
                    f"updates: {command.get('cmd_type')} failed: {detail[0]}")
    return Part("Updates", OK, "Idle", f"updates: state {status.get('update_state') or 'Idle'}")


def coordination_part(status: Mapping[str, Any] | None) -> Part | None:
    """``RebootSlots.status()``: waiting for a slot, or a slot that cannot be given back."""
    if not status:
        return None
    state, reason = status.get("state"), status.get("reason") or ""
    if state == "idle" and not reason and not status.get("held"):
        return None  # no reboot was ever coordinated by this daemon: nothing to report
    if reason.startswith("cannot release"):
        return Part("Coordination", FAILED, "ReleaseFailed", f"reboot lock: {reason}")
    if state == "waiting":  # a reboot deferred until a slot frees: not a failure
        return Part("Coordination", PROGRESSING, "WaitingForSlot", f"reboot lock: {reason}")
    if state in ("holding", "releasing"):
        return Part("Coordination", PROGRESSING, "HoldingSlot", f"reboot lock: {reason}")
    return Part("Coordination", OK, "Idle", f"reboot lock: {reason or 'no slot held'}")


def rollout_part(status: Mapping[str, Any] | None) -> Part | None:
    """``RolloutWatch.status()``: a fleet revision halted by its failure budget (the host keeps
    its last good revision and waits for a fixed one: stalled), the fleet's etcd out of reach
    (the host cannot read the budget nor publish its results: failed until it answers again),
    or a trial being watched."""
    decision = (status or {}).get("decision") or {}
    error = (status or {}).get("error")
    if decision.get("halted"):
        counts = decision.get("counts") or {}
        shown = ", ".join(f"{n} {k}" for k, n in counts.items())
        return Part("Rollout", STALLED, "RolloutHalted",
                    f"rollout of {str(decision['revision'])[:12]} halted: "
                    f"{decision.get('reason')} ({shown})")
    if error:
        return Part("Rollout", FAILED, "RolloutReportsUnreachable", f"rollout: {error}")
    if not decision:
        return None
    if (status or {}).get("trial"):
        return Part("Rollout", PROGRESSING, "HealthWindow",
                    f"watching {str(status['trial']['revision'])[:12]} for its health window")
    if decision.get("action") == "wait":
        return Part("Rollout", PROGRESSING, "WaveNotOpen", f"rollout: {decision.get('reason')}")
    return Part("Rollout", OK, "RolledOut", f"rollout: {decision.get('reason')}")


def loops_part(loops: Mapping[str, Mapping[str, Any]] | None) -> Part | None:
    """``Loops.as_dict()``: a background loop or thread that is retrying after an error."""
    if not loops:
        return None
    failing = {n: h for n, h in loops.items() if h.get("state") in ("retrying", "failed")}
    if not failing:
        return Part("BackgroundLoops", OK, "Running", "every background loop runs")
    name, health = next(iter(sorted(failing.items())))
    return Part("BackgroundLoops", FAILED, "LoopFailing",
                f"background loop {name}: {health.get('last_error')}")


# ---- the decision -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PassFacts:
    """What the reconcile worker knows: generations, whether a pass runs, the last receipt."""

    live_generation: int
    applied_generation: int
    busy: bool = False
    receipt: Mapping[str, Any] | None = None
    extra_reasons: tuple[str, ...] = ()  # executors' own degraded reasons (kept as given)


def pass_failures(receipt: Mapping[str, Any] | None) -> list[str]:
    """One line per failed step of the last pass, and its error."""
    receipt = receipt or {}
    lines = [f"{s['kind']} {s['name']}: {s['detail']}" for s in receipt.get("steps", [])
             if s.get("result") == "failed"]
    if receipt.get("error"):
        lines.append(str(receipt["error"]))
    return lines


def summarize(facts: PassFacts, parts: Sequence[Part | None]) -> dict[str, Any]:
    """``state``, its ``reason`` and ``message``, and the conditions (Ready, Reconciling,
    Degraded, Stalled first, then one per part), each with ``observedGeneration``: the
    generation of the last pass (a client compares it with ``live_generation``)."""
    present = [p for p in parts if p is not None]
    receipt = facts.receipt
    observed = receipt.get("generation") if receipt else None
    # The headline names the most specific failure: a part waiting for a change, then a part
    # retrying, then the pass (often failing because of one of those), then the executors.
    failing = [p for p in present if p.state == STALLED]
    failing += [p for p in present if p.state == FAILED]
    if receipt is not None and not receipt.get("ok"):
        failing.append(Part("Pass", FAILED, "PassFailed",
                            "; ".join(pass_failures(receipt)) or "the last pass failed"))
    if facts.extra_reasons:
        failing.append(Part("Executors", FAILED, "ExecutorFailed",
                            "; ".join(facts.extra_reasons)))
    stalled = [p for p in failing if p.state == STALLED]
    progressing = [p for p in present if p.state == PROGRESSING]
    behind = facts.applied_generation < facts.live_generation
    reconciling = facts.busy or behind or receipt is None or bool(progressing)
    if behind:
        progress_reason = "ApplyingGeneration"
        progress_message = (f"applied generation {facts.applied_generation} of "
                            f"{facts.live_generation}")
    elif facts.busy or receipt is None:
        progress_reason, progress_message = "PassRunning", "a reconcile pass is running"
    elif progressing:
        progress_reason, progress_message = progressing[0].reason, progressing[0].message
    else:
        progress_reason = "Converged"
        progress_message = (f"applied generation {facts.applied_generation} of "
                            f"{facts.live_generation}")
    if failing:
        state, reason, message = "Degraded", failing[0].reason, failing[0].message
    elif reconciling:
        state, reason, message = "Reconciling", progress_reason, progress_message
    else:
        state, reason = "Ready", "Converged"
        message = f"generation {facts.applied_generation} applied; every part is healthy"
    reasons = [p.message for p in failing if p.type not in ("Pass", "Executors")]
    reasons = pass_failures(receipt) + list(facts.extra_reasons) + reasons

    def condition(type_: str, status: bool, reason_: str, message_: str,
                  **more: Any) -> dict[str, Any]:
        return {"type": type_, "status": status, "reason": reason_, "message": message_,
                "observedGeneration": observed, **more}

    conditions = [
        condition("Ready", state == "Ready", reason, message),
        condition("Reconciling", reconciling, progress_reason, progress_message),
        condition("Degraded", bool(failing), failing[0].reason if failing else "AllHealthy",
                  failing[0].message if failing else "nothing failing", reasons=reasons),
        condition("Stalled", bool(stalled), stalled[0].reason if stalled else "NotStalled",
                  stalled[0].message if stalled else "nothing waits for a change"),
        *(condition(p.type, not p.failing and p.state != PROGRESSING, p.reason, p.message)
          for p in present),
    ]
    return {"state": state, "reason": reason, "message": message, "conditions": conditions}
