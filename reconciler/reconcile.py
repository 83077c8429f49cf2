"""One reconcile pass: snapshot -> render -> observe -> plan (pure) -> execute -> receipt.

Level-triggered and idempotent: a pass reads the whole desired and observed state, so running it
twice does nothing the second time. Restarts owed for files already written are recorded in the
store *before* the write and settled after the restart, so a crash never loses one.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from hostcore import faults
from hostcore.commands import CommandRunner, SubprocessRunner
from reconciler.effects import read_observed, write_atomic
from reconciler.hostfacts import HostFacts
from reconciler.plan import Plan, ServiceAction, plan
from reconciler.store import Store
from reconciler.units import SystemdUnits
from renderers.catalog import Catalog
from renderers.render import Renderer, RenderResult


@dataclass
class Step:
    kind: str  # "file" | "service"
    name: str
    result: str  # written | failed | restarted | skipped
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "result": self.result,
            "detail": self.detail,
            **self.extra,
        }


class Executor(Protocol):
    """A part of the host converged after files and services (host containers, updates...).

    ``reconcile`` is called once per pass with the live settings and returns its steps (dicts
    like ``Step.as_dict()``: kind, name, result, detail; result "failed" makes the pass fail).
    ``plan`` answers the dry run without touching anything; ``status`` feeds ``GET /status``.
    """

    name: str

    def reconcile(
        self, settings: Mapping[str, Any], generation: int, changed: set[str]
    ) -> list[dict[str, Any]]: ...

    def plan(self, settings: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...


class Reconciler:
    """Converges the files and services of one host towards the live settings."""

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
        self.executors: list[Executor] = []
        self._last_rendered: dict[str, bytes] = {}  # to tell drift from a settings change
        self._expected: dict[str, tuple[bytes, int]] = {}  # absolute path -> content, mode

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
                return (handle.read(), mode) == expected
        except OSError:
            return False

    def model(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"settings": settings, "os": self.os_info, "host": self.facts.as_model()}

    def plan_for(self, settings: Mapping[str, Any], generation: int, changed: set[str]) -> Plan:
        """The pure plan for ``settings`` against the disk as it is now (used by dry runs too)."""
        return self._render_and_plan(settings, generation, changed)[0]

    def _render_and_plan(
        self, settings: Mapping[str, Any], generation: int, changed: set[str]
    ) -> tuple[Plan, RenderResult]:
        rendered = self.renderer.render_all(self.model(settings))
        paths = [f.path for f in self.catalog.files.values()]
        observed = read_observed(self.root, paths)
        owed = self.store.owed()
        the_plan = plan(
            generation, rendered, observed, self.catalog, changed, owed.keys(), sandbox=self.sandbox
        )
        return self._without_settled(the_plan, owed.keys()), rendered

    def _without_settled(self, the_plan: Plan, owed: Collection[str]) -> Plan:
        """Drop restarts due only to settings that the service already restarted for.

        ``changed`` counts from the last *successful* receipt, so a pass that restarted (and
        settled) a service but died or failed before its receipt would restart it again for the
        same keys. A service with a file to write or an owed restart always stays.
        """
        written = {f.name for f in the_plan.files}

        @functools.cache  # services settled at the same generation share one query
        def affected_since(generation: int) -> dict[str, list[str]]:
            return self.catalog.affected_services(sorted(self.store.changed_since(generation)))

        def done(service: str) -> bool:
            settled = self.store.settled(service)
            if settled is None or service in owed:
                return False
            if written.intersection(self.catalog.services[service].configuration_files):
                return False
            return not any(service in names for names in affected_since(settled).values())

        keep = tuple(action for action in the_plan.services if not done(action.service))
        return the_plan if len(keep) == len(the_plan.services) else replace(the_plan, services=keep)

    def run_pass(self, reason: str = "requested") -> dict[str, Any]:
        started = time.time()
        generation = self.store.generation()
        settings = self.store.live_document()
        changed = self.store.changed_since(self.store.applied_generation())
        the_plan, rendered = self._render_and_plan(settings, generation, changed)
        steps: list[Step] = []

        debts = {s.service: s.changed_settings for s in the_plan.services}
        if debts:
            self.store.owe(debts, generation, reason)
            faults.point("after-owe")

        failed_files: set[str] = set()
        for action in the_plan.files:
            try:
                faults.point(f"before-file:{action.path}")
                write_atomic(self.root, action.path, action.content, action.mode)
                faults.point(f"after-file:{action.path}")
                drift = self._last_rendered.get(action.name) == action.content
                steps.append(
                    Step(
                        "file",
                        action.name,
                        "written",
                        action.reason,
                        {"path": action.path, "drift": drift},
                    )
                )
            except OSError as error:
                failed_files.add(action.name)
                steps.append(Step("file", action.name, "failed", str(error), {"path": action.path}))

        for action in the_plan.services:
            steps.append(self._service(action, failed_files, generation))

        executor_steps: list[dict[str, Any]] = []
        for executor in self.executors:
            try:
                executor_steps += executor.reconcile(settings, generation, changed)
            except Exception as error:  # one broken executor must not stop the others
                executor_steps.append(
                    Step(
                        executor.name, executor.name, "failed", f"{type(error).__name__}: {error}"
                    ).as_dict()
                )

        for name, message in sorted(the_plan.errors.items()):
            steps.append(
                Step("file", name, "failed", message, {"path": self.catalog.files[name].path})
            )

        self._last_rendered = {name: r.content for name, r in rendered.files.items()}
        self._expected = {
            str(self.root / r.path.lstrip("/")): (r.content, r.mode)
            for r in rendered.files.values()
        }
        step_dicts = [step.as_dict() for step in steps] + executor_steps
        ok = all(step["result"] != "failed" for step in step_dicts)
        receipt = {
            "generation": generation,
            "ok": ok,
            "reason": reason,
            "started": started,
            "duration_ms": round((time.time() - started) * 1000, 3),
            "changed_settings": sorted(changed),
            "steps": step_dicts,
            "unchanged_files": len(the_plan.unchanged),
        }
        faults.point("before-receipt")
        receipt["pass"] = self.store.save_receipt(generation, ok, receipt)
        return receipt

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
            {**extra, "unit": unit},
        )

    def _service(self, action: ServiceAction, failed_files: set[str], generation: int) -> Step:
        service = self.catalog.services[action.service]
        blocked = failed_files.intersection(service.configuration_files)
        extra = {"reason": action.reason, "commands": [list(c) for c in action.commands]}
        if blocked:
            return Step(
                "service",
                action.service,
                "failed",
                f"not restarted: writing {', '.join(sorted(blocked))} failed",
                extra,
            )
        if action.skipped:
            self.store.settle(action.service, generation)
            return Step(
                "service",
                action.service,
                "skipped",
                "sandbox root: host services are not restarted",
                extra,
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
                return Step("service", action.service, "failed", detail, extra)
        faults.point(f"before-settle:{action.service}")
        self.not_installed.pop(action.service, None)
        self.store.settle(action.service, generation)
        faults.point(f"after-settle:{action.service}")
        return Step(
            "service",
            action.service,
            "restarted" if action.commands else "applied",
            action.reason,
            extra,
        )
