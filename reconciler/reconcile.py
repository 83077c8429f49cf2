"""One reconcile pass: snapshot -> render -> observe -> plan (pure) -> execute -> receipt.

Level-triggered and idempotent: a pass reads the whole desired and observed state, so running it
twice does nothing the second time. Desired state comes from one store snapshot (one read
transaction), so a commit landing mid-pass is wholly for the next pass. Every decision is
``reconciler.passplan.plan_pass``'s, the dry run's too; this module only carries it out.
Restarts owed for files already written are recorded in the store *before* the write and
settled after the restart, so a crash never loses one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hostcore import faults
from hostcore.commands import CommandRunner, SubprocessRunner
from reconciler.effects import read_observed, write_atomic
from reconciler.hostfacts import HostFacts
from reconciler.passplan import Desired, Observed, PassPlan, plan_pass
from reconciler.plan import ServiceAction
from reconciler.steps import Step
from reconciler.store import Snapshot, Store
from reconciler.units import SystemdUnits
from renderers.catalog import Catalog
from renderers.render import Renderer, RenderResult

if TYPE_CHECKING:
    from reconciler.bootparams import BootParameters
    from reconciler.containers.bootstrap import BootstrapContainers
    from reconciler.containers.executor import HostContainers
    from reconciler.updates_executor import UpdatesExecutor


class Executor(Protocol):
    """A part of the host converged after files and services (host containers, updates).

    Wiring is typed (``Reconciler.containers``, ``Reconciler.updates``); ``status`` feeds
    ``GET /status``. Each one splits the same way: ``observe`` (reads only), a pure ``decide``
    (``reconciler.passplan.plan_pass`` calls the same pure function), ``execute`` of the
    decision, which returns its ``Step`` list.
    """

    name: str

    def status(self) -> dict[str, Any]: ...


class Reconciler:
    """Converges the files, services and executors of one host towards the live settings."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        root: Path,
        os_info: Mapping[str, str],
        runner: CommandRunner | None = None,
        facts: HostFacts | None = None,
    ):
        self.store = store
        self.catalog = catalog
        self.renderer = Renderer(catalog)
        self.root = Path(root)
        self.sandbox = self.root.resolve() != Path("/")
        self.os_info = dict(os_info)
        self.runner = runner or SubprocessRunner()
        self.facts = facts or HostFacts()
        self.units = SystemdUnits(self.runner)
        # service -> its unit, for services whose unit this host does not have (GET /status)
        self.not_installed: dict[str, str] = {}
        self.containers: HostContainers | None = None
        self.updates: UpdatesExecutor | None = None
        self.boot: BootParameters | None = None  # the reboot-required condition
        self.bootstrap: BootstrapContainers | None = None  # run at boot; passes report them
        self._paths = tuple(f.path for f in catalog.files.values())
        # file name -> its absolute path under the root, for ``in_sync`` (computed once)
        self._absolute = {
            name: os.path.join(self.root, f.path.lstrip("/")) for name, f in catalog.files.items()
        }
        self._last_rendered: dict[str, bytes] = {}  # to tell drift from a settings change
        self._expected: dict[str, tuple[bytes, int]] = {}  # absolute path -> content, mode
        self._written: dict[str, tuple[bytes, int]] = {}  # what our last write of it left

    @property
    def executors(self) -> list[Executor]:
        """The executors this host has, in execution order."""
        return [e for e in (self.bootstrap, self.updates, self.containers, self.boot)
                if e is not None]

    def in_sync(self, path: str) -> bool:
        """True when the file at ``path`` (absolute) is what the last pass left there.

        The file watch uses it to ignore the pass's own writes (no needless second pass).
        """
        expected = self._expected.get(path)
        if expected is None:
            return False
        try:
            with open(path, "rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode & 0o7777
                found = (handle.read(), mode)
        except OSError:
            return False
        # An event of an earlier write may arrive after the next pass set what it expects
        # but before it wrote: the file is then what we last wrote, still no hand edit.
        return found == expected or found == self._written.get(path)

    def model(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"settings": settings, "os": self.os_info, "host": self.facts.as_model()}

    def decide(
        self,
        snapshot: Snapshot,
        settings: Mapping[str, Any] | None = None,
        pending: Collection[str] = (),
    ) -> tuple[PassPlan, RenderResult]:
        """Observe the host and decide (pure ``plan_pass``) for ``snapshot``; a dry run passes
        the ``settings`` it previews and the ``pending`` keys they change. Touches nothing."""
        live = None
        if settings is None:  # the pass: the renderer compares only what changed since its last
            settings, live = snapshot.settings, snapshot.live
        rendered = self.renderer.render_all(self.model(settings), live=live)
        desired = Desired(
            snapshot.generation,
            settings,
            rendered,
            snapshot.changed | frozenset(pending),
            self.catalog,
            self.sandbox,
        )
        broken: dict[str, str] = {}
        containers = updates = None
        try:
            containers = self.containers.observe(settings) if self.containers else None
        except Exception as error:  # a broken executor fails its own step, not the pass
            broken["containers"] = f"{type(error).__name__}: {error}"
        try:
            updates = self.updates.observe() if self.updates else None
        except Exception as error:
            broken["updates"] = f"{type(error).__name__}: {error}"
        observed = Observed(
            files=read_observed(self.root, self._paths),
            owed=tuple(snapshot.owed),
            settled=snapshot.settled,
            changed_after=snapshot.changed_after,
            last_rendered=self._last_rendered,
            containers=containers,
            updates=updates,
            booted=self.boot.observe() if self.boot is not None else None,
            broken=broken,
        )
        return plan_pass(desired, observed), rendered

    def run_pass(self, reason: str = "requested") -> dict[str, Any]:
        """One pass: one store snapshot, one decision, then carry it out and save the receipt."""
        started = time.time()
        snapshot = self.store.snapshot()
        the_plan, rendered = self.decide(snapshot)
        generation = the_plan.generation
        files = the_plan.files
        steps: list[Step] = []

        # Only restarts that run something can be owed: one that runs nothing (no commands,
        # or a sandbox) is settled with the receipt.
        debts = {s.service: s.changed_settings for s in files.services
                 if s.commands and not s.skipped}
        if debts:
            self.store.owe(debts, generation, reason)
            faults.point("after-owe")

        # What this pass leaves on disk, known before the first write: the file watch sees our
        # own writes as they happen and must not take them for hand edits (a needless pass).
        self._last_rendered = {name: r.content for name, r in rendered.files.items()}
        self._expected = {
            self._absolute[name]: (r.content, r.mode) for name, r in rendered.files.items()
        }
        failed_files: set[str] = set()
        for action in files.files:
            try:
                faults.point(f"before-file:{action.path}")
                write_atomic(self.root, action.path, action.content, action.mode)
                self._written[self._absolute[action.name]] = (action.content, action.mode)
                faults.point(f"after-file:{action.path}")
                steps.append(
                    Step("file", action.name, "written", action.reason, path=action.path,
                         drift=action.drift)
                )
            except OSError as error:
                failed_files.add(action.name)
                steps.append(Step("file", action.name, "failed", str(error), path=action.path))

        settle_with_receipt: list[str] = []
        for action in files.services:
            step = self._service(action, failed_files, generation)
            if step.result in ("skipped", "applied"):
                settle_with_receipt.append(action.service)
            steps.append(step)

        steps += self._execute_executors(the_plan, generation)
        if self.boot is not None and the_plan.boot is not None:  # a condition; no host action
            steps += self.boot.execute(the_plan.boot)
        if self.bootstrap is not None:  # an essential one that failed at boot fails every pass
            steps += [Step(s["kind"], s["name"], s["result"], s["detail"])
                      for s in self.bootstrap.reconcile(snapshot.settings, generation, set())]

        for name, message in sorted(files.errors.items()):
            steps.append(Step("file", name, "failed", message, path=self.catalog.files[name].path))

        step_dicts = [step.as_dict() for step in steps]
        ok = not any(step.failed for step in steps)
        receipt = {
            "generation": generation,
            "ok": ok,
            "reason": reason,
            "started": started,
            "duration_ms": round((time.time() - started) * 1000, 3),
            "changed_settings": list(the_plan.changed),
            "steps": step_dicts,
            "unchanged_files": len(files.unchanged),
        }
        faults.point("before-receipt")
        receipt["pass"] = self.store.save_receipt(
            generation, ok, receipt, settled=settle_with_receipt
        )
        return receipt

    def _execute_executors(self, the_plan: PassPlan, generation: int) -> list[Step]:
        """Carry out the executors' parts of the plan; one broken executor does not stop the
        others (its crash is its failed step)."""
        steps = [Step(name, name, "failed", error) for name, error in the_plan.broken.items()]
        parts: list[tuple[str, Callable[[], list[Step]]]] = []
        if self.updates is not None and the_plan.update is not None:
            updates, decision = self.updates, the_plan.update
            parts.append((updates.name, lambda: updates.execute(decision)))
        if self.containers is not None and the_plan.containers is not None:
            containers, actions = self.containers, the_plan.containers
            parts.append((containers.name, lambda: containers.execute(actions, generation)))
        for name, execute in parts:
            try:
                steps += execute()
            except Exception as error:  # one broken executor must not stop the others
                steps.append(Step(name, name, "failed", f"{type(error).__name__}: {error}"))
        return steps

    def _not_installed(
        self, name: str, unit: str, generation: int, extra: dict[str, Any]
    ) -> Step:
        """Nothing to pick the change up: settled (never retried), reported, not a failure.

        Its files are written; the program reads them when its unit is installed and started.
        """
        self.store.settle(name, generation)
        self.not_installed[name] = unit
        return Step(
            "service", name, "not-installed",
            f"{unit} is not installed on this host; its files are written for when it is",
            **extra, unit=unit,
        )

    def _service(self, action: ServiceAction, failed_files: set[str], generation: int) -> Step:
        service = self.catalog.services[action.service]
        blocked = failed_files.intersection(service.configuration_files)
        extra = {"reason": action.reason, "commands": action.commands}
        if blocked:
            return Step(
                "service",
                action.service,
                "failed",
                f"not restarted: writing {', '.join(sorted(blocked))} failed",
                **extra,
            )
        if action.skipped:  # settled with the receipt
            return Step(
                "service",
                action.service,
                "skipped",
                "sandbox root: host services are not restarted",
                **extra,
            )
        env = action.environment
        faults.point(f"before-restart:{action.service}")
        for argv in action.commands:
            result = self.runner.run(argv, env, service.timeout)
            faults.point(f"after-restart:{action.service}")
            if not result.ok:
                if service.unit and self.units.installed(service.unit) is False:
                    return self._not_installed(action.service, service.unit, generation, extra)
                detail = result.error or f"{' '.join(argv)} exited {result.returncode}"
                if result.output:
                    detail += f": {result.output.strip()[-400:]}"
                return Step("service", action.service, "failed", detail, **extra)
        if not action.commands:  # nothing ran: settled with the receipt
            return Step("service", action.service, "applied", action.reason, **extra)
        faults.point(f"before-settle:{action.service}")
        self.not_installed.pop(action.service, None)
        self.store.settle(action.service, generation)
        faults.point(f"after-settle:{action.service}")
        return Step("service", action.service, "restarted", action.reason, **extra)
