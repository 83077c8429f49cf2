"""Boot health checks run through the one subprocess runner (``hostcore.commands``)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.daemon import eventually
from updates.health import HealthCheck, run_checks


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not reaped


def test_a_check_that_times_out_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    (result,) = run_checks([HealthCheck("slow", ("sh", "-c", script), timeout=1.0)], {})
    assert not result.ok
    assert result.detail == "timed out after 1s and was killed"
    grandchild = int(pidfile.read_text())
    eventually(lambda: not alive(grandchild), timeout=10)


def test_failures_say_why_and_the_environment_reaches_the_check() -> None:
    checks = [
        HealthCheck("env", ("sh", "-c", 'test "$OS_VERSION_ID" = 1.2.3')),
        HealthCheck("fails", ("sh", "-c", "echo broken >&2; exit 3")),
        HealthCheck("missing", ("/nonexistent/check",)),
    ]
    env, fails, missing = run_checks(checks, {"OS_VERSION_ID": "1.2.3"})
    assert (env.ok, env.detail) == (True, "")
    assert (fails.ok, fails.detail) == (False, "exited 3: broken")
    assert (missing.ok, missing.detail) == (False, "cannot run /nonexistent/check: not found")
