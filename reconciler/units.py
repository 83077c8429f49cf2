"""Whether a service's systemd unit exists on the host (the thin shell to systemd).

Why: ``systemctl try-restart kubelet.service`` exits 5 on a host without a kubelet unit. Counted
as a failure, every pass would fail and retry forever on a host that simply does not run that
service. A failed pick-up command whose unit is not installed is reported as such instead.
"""

from __future__ import annotations

from hostcore.commands import CommandRunner

# systemd's answer for a unit no unit file defines (``systemctl show -P LoadState``).
NOT_FOUND = "not-found"
PROBE_TIMEOUT = 30.0


class SystemdUnits:
    """Asks systemd (``systemctl show``) about units, through the pass's command runner."""

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner

    def installed(self, unit: str) -> bool | None:
        """False when systemd knows no such unit, True when it does, None when it cannot say."""
        result = self.runner.run(
            ("systemctl", "show", "--property=LoadState", "--value", unit), {}, PROBE_TIMEOUT
        )
        if not result.ok:
            return None
        return result.output.strip() != NOT_FOUND
