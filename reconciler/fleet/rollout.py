"""Config rollouts with a failure budget: the policy a fleet repository carries, and the decision
each host takes for a new git revision (pure, over plain data).

The policy is ``rollout.toml`` beside the layers (at the pointer's ``path``)::

    failure-budget = 2          # hosts a revision may fail on; one more halts it fleet-wide
    health-window = "2 minutes" # how long a host watches a new revision before it counts as good

    [[waves]]                   # Bottlerocket's wave file format, by settings.updates.seed
    start_after = "0 minutes"   # after the revision's committer time
    fleet_percentage = 10
    [[waves]]
    start_after = "1 hour"
    fleet_percentage = 100

Waves are Bottlerocket's own rule (``updates.waves``, the same one updog applies to OS updates),
counted from the revision's committer time, so every host computes the same schedule without
talking to anyone: without etcd, waves alone pace the rollout. With etcd, each host reports
(revision, result) there, and :func:`plan` counts the failures of the revision it is about to
apply: more than ``failure-budget`` and it does not apply it (``RolloutHalted``).

:func:`plan` is the whole decision for one sync, :func:`judge` the whole decision for one health
window; the shell (``reconciler.fleet.rollout_watch``) only gathers their inputs and acts.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from updates.waves import WaveError, WaveSpec, expand_policy, parse_offset, ready_time

POLICY_FILE = "rollout.toml"
DEFAULT_WINDOW = 60.0  # seconds a new revision is watched when the policy does not say
MAX_WINDOW = 7 * 24 * 3600.0

APPLYING, SUCCEEDED, FAILED = "applying", "succeeded", "failed"
RESULTS = (APPLYING, SUCCEEDED, FAILED)


class PolicyError(ValueError):
    """``rollout.toml`` is not a valid policy; the message names the file and the key."""


@dataclass(frozen=True)
class Policy:
    budget: int | None = None  # None: no failure budget (nothing halts)
    window: float = DEFAULT_WINDOW  # seconds
    waves: tuple[WaveSpec, ...] = ()  # empty: every host at once


def parse_policy(text: str | bytes, source: str = POLICY_FILE) -> Policy:
    """The policy of ``rollout.toml``, or PolicyError naming ``source`` and the key."""
    try:
        data = tomllib.loads(text.decode() if isinstance(text, bytes) else text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PolicyError(f"{source}: invalid TOML: {error}") from None
    unknown = sorted(set(data) - {"failure-budget", "health-window", "waves"})
    if unknown:
        raise PolicyError(f"{source}: {unknown[0]}: unknown key (expected failure-budget, "
                          "health-window, waves)")
    budget = data.get("failure-budget")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool)
                               or budget < 0):
        raise PolicyError(f"{source}: failure-budget: must be a whole number >= 0, "
                          f"not {budget!r}")
    window = _seconds(data.get("health-window", DEFAULT_WINDOW), f"{source}: health-window")
    waves: tuple[WaveSpec, ...] = ()
    if "waves" in data:
        from updates.waves import parse_policy as parse_waves

        try:
            waves = tuple(parse_waves(text if isinstance(text, str) else text.decode(), source))
            expand_policy(list(waves), datetime.now(UTC))  # percentages and order checked once
        except WaveError as error:
            message = str(error)
            raise PolicyError(message if message.startswith(source)
                              else f"{source}: waves: {message}") from None
    return Policy(budget, window, waves)


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise PolicyError(f"{where}: must be seconds or a duration such as '2 minutes'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_offset(value).total_seconds()
        except WaveError as error:
            raise PolicyError(f"{where}: {error}") from None
    else:
        raise PolicyError(f"{where}: must be seconds or a duration such as '2 minutes'")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_WINDOW:
        raise PolicyError(f"{where}: must be between 0 and {int(MAX_WINDOW)} seconds")
    return seconds


def wave_opens(policy: Policy, seed: int, committed: float) -> float | None:
    """When this host's wave opens for a revision committed at ``committed`` (epoch seconds);
    None: at once (no waves, or the first wave of Bottlerocket's rule)."""
    if not policy.waves:
        return None
    start = datetime.fromtimestamp(committed, UTC)
    when = ready_time(expand_policy(list(policy.waves), start), seed)
    return when.timestamp() if when is not None else None


@dataclass(frozen=True)
class Report:
    """One host's word on one revision, as read from etcd."""

    host: str
    revision: str
    result: str  # applying | succeeded | failed


@dataclass(frozen=True)
class Counts:
    applying: int = 0
    succeeded: int = 0
    failed: int = 0

    @classmethod
    def of(cls, reports: Iterable[Report], revision: str) -> Counts:
        latest = {r.host: r.result for r in reports if r.revision == revision}
        values = list(latest.values())
        return cls(values.count(APPLYING), values.count(SUCCEEDED), values.count(FAILED))

    def as_dict(self) -> dict[str, int]:
        return {"applying": self.applying, "succeeded": self.succeeded, "failed": self.failed}


@dataclass(frozen=True)
class Trial:
    """This host applied ``revision`` at ``started`` and watches it until ``started + window``;
    ``previous`` is the last good revision it returns to on failure."""

    revision: str
    previous: str | None
    started: float
    window: float
    generation: int = 0  # the store generation that applied it: passes before it do not count

    @property
    def ends(self) -> float:
        return self.started + self.window

    def as_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "previous": self.previous, "started": self.started,
                "window": self.window, "generation": self.generation}

    @classmethod
    def of(cls, value: Any) -> Trial | None:
        if not isinstance(value, Mapping):
            return None
        return cls(str(value["revision"]), value.get("previous"), float(value["started"]),
                   float(value["window"]), int(value.get("generation", 0)))


@dataclass(frozen=True)
class Local:
    """What this host remembers of its rollouts (kept in the store)."""

    applied: str | None = None  # the commit whose layers are applied now
    last_good: str | None = None  # the newest commit that passed its health window here
    failed: Mapping[str, str] = field(default_factory=dict)  # commit -> why it failed here
    trial: Trial | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"last_good": self.last_good, "failed": dict(self.failed),
                "trial": self.trial.as_dict() if self.trial else None}

    @classmethod
    def of(cls, value: Any, applied: str | None) -> Local:
        value = value if isinstance(value, Mapping) else {}
        return cls(applied, value.get("last_good"), dict(value.get("failed") or {}),
                   Trial.of(value.get("trial")))


# Actions of a plan
APPLY = "apply"  # apply the fetched revision now, and watch it for the health window
KEEP = "keep"  # the fetched revision is the applied one (in its window, or good)
WAIT = "wait"  # this host's wave has not opened yet (or a trial of another revision runs)
HALTED = "halted"  # the revision spent its failure budget: not applied here
REFUSED = "refused"  # the revision failed on this host: not applied again


@dataclass(frozen=True)
class Decision:
    action: str
    commit: str | None  # the commit whose layers to apply (None: none yet)
    reason: str
    revision: str  # the fetched revision the decision is about
    counts: Counts = Counts()
    halted: bool = False
    wake_at: float | None = None  # when to sync again (a wave opens, a trial ends)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "commit": self.commit, "reason": self.reason,
                "revision": self.revision, "counts": self.counts.as_dict(),
                "halted": self.halted, "wake_at": self.wake_at}


def plan(policy: Policy, seed: int, now: float, revision: str, committed: float,
         local: Local, reports: Iterable[Report] | None) -> Decision:
    """What this host does with the fetched ``revision``: apply it, keep what it has, wait.

    ``reports`` are the fleet's reports from etcd (None: no etcd, waves only). A host with
    nothing applied yet takes the fleet's revision at once (there is nothing to protect), unless
    that revision is halted. A trial of another revision is finished before a newer one applies.
    """
    counts = Counts.of(reports or (), revision)
    halted = policy.budget is not None and counts.failed > policy.budget
    short = revision[:12]

    def decide(action: str, commit: str | None, reason: str,
               wake_at: float | None = None) -> Decision:
        return Decision(action, commit, reason, revision, counts, halted, wake_at)

    spent = ""
    if halted:
        spent = (f"rollout of {short} halted: {counts.failed} hosts failed it (budget "
                 f"{policy.budget}), {counts.succeeded} succeeded, {counts.applying} applying")
    if revision == local.applied:
        if local.trial is not None and local.trial.revision == revision:
            return decide(KEEP, revision, f"watching {short} until its health window ends",
                          local.trial.ends)
        return decide(KEEP, revision, spent if halted else f"{short} is applied")
    if local.trial is not None and local.applied is not None:
        return decide(WAIT, local.applied, f"{short} waits for the health window of "
                      f"{local.trial.revision[:12]} to end", local.trial.ends)
    if revision in local.failed:
        why = f"{short} failed on this host ({local.failed[revision]}); not applied again"
        return decide(REFUSED, local.applied, f"{spent}; {why}" if halted else why)
    if halted:
        return decide(HALTED, local.applied, spent)
    if local.applied is None:
        return decide(APPLY, revision, f"applying {short}: first revision of this host")
    opens = wave_opens(policy, seed, committed)
    if opens is not None and now < opens:
        when = datetime.fromtimestamp(opens, UTC).isoformat(timespec="seconds")
        return decide(WAIT, local.applied, f"{short} waits for the wave of seed {seed} "
                      f"(opens {when})", opens)
    return decide(APPLY, revision, f"applying {short}: the wave of seed {seed} is open")


# Outcomes of a health window
WATCHING, PASSED = "watching", "passed"


@dataclass(frozen=True)
class Observation:
    """One look at the host after the trial's revision applied: a pass and the health checks."""

    generation: int  # the generation the pass applied
    ok: bool
    detail: str = ""


def judge(trial: Trial, now: float, observations: Iterable[Observation]) -> tuple[str, str]:
    """Whether the trial ``failed`` (any pass or health check failed within the window),
    ``passed`` (the window is over and at least one look after the apply was healthy), or is
    still ``watching``; with the reason."""
    counted = [o for o in observations if o.generation >= trial.generation]
    for seen in counted:
        if not seen.ok:
            return FAILED, seen.detail or "a pass or health check failed"
    if now >= trial.ends and counted:
        return PASSED, f"healthy for its {trial.window:g} s health window"
    return WATCHING, "within its health window"
