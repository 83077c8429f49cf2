"""The whole decision of a pass, pure: ``plan_pass(desired, observed) -> PassPlan``.

Why one function: the pass and its dry run (``POST /tx/plan``, ``reconciler plan``) must not be
able to disagree. Everything either of them decides is decided here, from plain data read
beforehand (one store snapshot, the files on disk, the container engine, the update manager):
which files to write, which services to restart (settled and owed restarts included), what to
do with each host container (drift, back-off and crash-loop budgets included) and which update
command the automatic policy starts, whether a reboot is required for the boot parameters. The
executors only carry a ``PassPlan`` out and report.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.bootparams import reboot_required
from reconciler.containers.planner import (
    ContainerObservation,
    ContainerPlan,
    plan_host_containers,
)
from reconciler.plan import ObservedFile, Plan, plan
from reconciler.update_policy import UpdateDecision, UpdateObservation, decide_update
from renderers.catalog import Catalog
from renderers.render import RenderResult


@dataclass(frozen=True)
class Desired:
    """What the host should be: the settings of ``generation`` rendered with ``catalog``.

    ``changed`` are the keys not applied yet (since the last successful receipt, plus a dry
    run's pending ones); ``sandbox`` is true when the root is not ``/``.
    """

    generation: int
    settings: Mapping[str, Any]
    rendered: RenderResult
    changed: frozenset[str]
    catalog: Catalog
    sandbox: bool = True


@dataclass(frozen=True)
class Observed:
    """What the host is: files at each configuration path, the reconcile ledger (owed and
    settled restarts, keys changed after each settled generation), what the last pass rendered,
    host containers and the update manager (None when the host has no such executor)."""

    files: Mapping[str, ObservedFile | None]
    owed: Collection[str] = ()
    settled: Mapping[str, int] = field(default_factory=dict)
    changed_after: Mapping[int, Collection[str]] = field(default_factory=dict)
    last_rendered: Mapping[str, bytes] = field(default_factory=dict)
    containers: ContainerObservation | None = None
    updates: UpdateObservation | None = None
    booted: str | None = None  # /proc/bootconfig's text (None: the host has no boot executor)
    broken: Mapping[str, str] = field(default_factory=dict)  # executor -> why it cannot observe


@dataclass(frozen=True)
class PassPlan:
    generation: int
    changed: tuple[str, ...]
    files: Plan  # files to write and services to restart
    containers: ContainerPlan | None
    update: UpdateDecision | None
    broken: Mapping[str, str] = field(default_factory=dict)
    boot: Mapping[str, Any] | None = None  # the RebootRequired condition


def plan_pass(desired: Desired, observed: Observed) -> PassPlan:
    """Decide everything a pass does (see the module docstring); reads nothing, changes
    nothing, and gives the same answer for the same input."""
    files = plan(
        desired.generation,
        desired.rendered,
        observed.files,
        desired.catalog,
        desired.changed,
        observed.owed,
        sandbox=desired.sandbox,
        settled=observed.settled,
        changed_after=observed.changed_after,
        last_rendered=observed.last_rendered,
    )
    containers = None
    if observed.containers is not None:
        entries = desired.settings.get("host-containers") or {}
        containers = plan_host_containers(entries, observed.containers)
    update = None
    if observed.updates is not None:
        update = decide_update(desired.settings, observed.updates)
    boot = None
    if observed.booted is not None:
        boot = reboot_required(desired.settings, observed.booted)
    return PassPlan(
        desired.generation,
        tuple(sorted(desired.changed)),
        files,
        containers,
        update,
        dict(observed.broken),
        boot,
    )
