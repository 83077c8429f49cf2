"""Boot parameters: does the host need a reboot for ``settings.boot`` to take effect?

Kernel and init parameters only apply at boot. The renderer writes the wanted ones
(``/etc/bootconfig.conf``); this executor compares them with the booted ones that the kernel
shows in ``/proc/bootconfig`` and reports a ``RebootRequired`` condition in ``GET /status`` when
they differ and ``settings.boot.reboot-to-reconcile`` is true (Bottlerocket reboots by itself in
that case; here the operator, or a fleet reboot coordinator, acts on the condition). The decision
is :func:`reboot_required`, pure (``plan_pass`` calls it); the executor only reads the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.steps import Step
from renderers.hostfiles import boot_parameters, normalized, parse_bootconfig

BOOTED = "proc/bootconfig"  # under the host root


def reboot_required(settings: Mapping[str, Any], booted: str) -> dict[str, Any]:
    """The RebootRequired condition for ``settings`` (inside ``settings``) against ``booted``
    (the text of /proc/bootconfig, empty when the kernel has none)."""
    boot = settings.get("boot") or {}
    wanted = normalized(boot_parameters(boot, settings.get("kernel")))
    have = {k: v for k, v in parse_bootconfig(booted).items() if k.startswith(("kernel.", "init."))}
    differ = sorted(k for k in wanted.keys() | have.keys() if wanted.get(k) != have.get(k))
    asked = boot.get("reboot-to-reconcile") is True
    if not differ:
        reason = "the booted parameters are the wanted ones"
    elif asked:
        reason = "boot parameters differ from the booted ones: " + ", ".join(differ)
    else:
        reason = ("boot parameters differ from the booted ones (" + ", ".join(differ)
                  + ") but settings.boot.reboot-to-reconcile is not true")
    return {"type": "RebootRequired", "status": bool(differ) and asked, "reason": reason,
            "differ": differ}


class BootParameters:
    """Executor on the pass protocol (``reconciler.reconcile.Executor``): ``observe`` reads the
    booted parameters, the pure ``decide`` (:func:`reboot_required`, called by
    ``reconciler.passplan.plan_pass``) makes the condition, ``execute`` records it for
    ``GET /status``. Nothing is done to the host itself."""

    name = "boot"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._condition: dict[str, Any] = reboot_required({}, "")

    def observe(self) -> str:
        """The booted parameters: the text of /proc/bootconfig (empty when there is none)."""
        try:
            return (self.root / BOOTED).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    decide = staticmethod(reboot_required)

    def execute(self, condition: Mapping[str, Any]) -> list[Step]:
        """Record the decided condition; no step (nothing is done to the host)."""
        self._condition = dict(condition)
        return []

    @staticmethod
    def dry_run(condition: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The dry run's entries for the decided condition (a reboot, when one is required)."""
        return ([{"kind": "boot", "name": "reboot", "reason": condition["reason"]}]
                if condition["status"] else [])

    def status(self) -> dict[str, Any]:
        return {"condition": dict(self._condition)}

    def conditions(self) -> list[dict[str, Any]]:
        """``RebootRequired`` for ``GET /status`` (the executors' conditions hook)."""
        return [{k: v for k, v in self._condition.items() if k in ("type", "status", "reason")}]
