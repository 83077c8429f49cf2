"""Health-gated boot success and the boot-time preparation of a host with an OS disk.

A booted set is marked successful (`mark-successful-boot`) only when the first reconcile pass
after boot succeeded and every declared health check passed. Otherwise nothing is written, the
set's last try is already used up, and the next boot falls back to the other set.

Health checks are declared in settings (`settings.updates.health-checks.<name>`, with
`command` (argv list) and optional `timeout` seconds). They run without a shell, with
`OS_VERSION_ID` and `OS_VARIANT_ID` of the booted set in the environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hostcore.commands import CommandRunner, SubprocessRunner

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class HealthCheck:
    name: str
    command: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


def parse_checks(updates_settings: Mapping[str, Any] | None) -> list[HealthCheck]:
    """Health checks from `settings.updates` (nested); malformed entries are failing checks."""
    declared = (updates_settings or {}).get("health-checks") or {}
    checks = []
    for name in sorted(declared):
        entry = declared[name] or {}
        command = entry.get("command")
        if not isinstance(command, list) or not command:
            command = ["false"]
        timeout = entry.get("timeout", DEFAULT_TIMEOUT)
        if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
            command = ["false"]  # the schema refuses it; a store from before that fails the check
            timeout = DEFAULT_TIMEOUT
        checks.append(HealthCheck(name, tuple(str(c) for c in command), float(timeout)))
    return checks


def run_checks(checks: Sequence[HealthCheck], env: Mapping[str, str],
               runner: CommandRunner | None = None) -> list[CheckResult]:
    """Run each check without a shell, in its own process group: a check that times out is
    killed with everything it started (``hostcore.commands.SubprocessRunner``)."""
    runner = runner or SubprocessRunner()
    results = []
    for check in checks:
        done = runner.run(check.command, env, check.timeout)
        if done.ok:
            detail = ""
        elif done.error is not None:
            detail = done.error
        else:
            detail = f"exited {done.returncode}: {done.output.strip()[-300:]}"
        results.append(CheckResult(check.name, done.ok, detail))
    return results


def decide(pass_ok: bool, results: Sequence[CheckResult]) -> tuple[bool, str]:
    """Whether to mark the boot successful, and why (pure)."""
    if not pass_ok:
        return False, "the first reconcile pass after boot failed"
    failed = [r for r in results if not r.ok]
    if failed:
        return False, "health check(s) failed: " + "; ".join(
            f"{r.name}: {r.detail}" for r in failed)
    return True, f"first pass ok, {len(results)} health check(s) passed"


@dataclass
class BootGate:
    """Decides once, after the first pass, whether this boot counts."""

    disk: str | None
    os_env: dict[str, str] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None

    def after_first_pass(self, pass_ok: bool, updates_settings: Mapping[str, Any] | None
                         ) -> dict[str, Any]:
        if self.outcome is not None:
            return self.outcome
        results = run_checks(parse_checks(updates_settings), self.os_env) if pass_ok else []
        mark, reason = decide(pass_ok, results)
        outcome: dict[str, Any] = {
            "marked_successful": False, "reason": reason,
            "health_checks": [{"name": r.name, "ok": r.ok, "detail": r.detail}
                              for r in results]}
        if mark:
            # the disk code (and python-tuf's errors under it) only where a boot is marked:
            # the rollout watch runs these checks on every host, most without an OS disk
            from updates.gpt import GptError
            from updates.partitions import DiskError, open_os_disk

            try:
                with open_os_disk(self.disk) as d:
                    d.apply("mark-successful-boot")
                    outcome["set"] = d.active
                outcome["marked_successful"] = True
            except (DiskError, GptError, OSError) as e:
                outcome["reason"] = f"cannot mark the boot successful: {e}"
        self.outcome = outcome
        return outcome
