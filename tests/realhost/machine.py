"""A booted test host: the image of ``build.py`` run with systemd as PID 1 in podman.

Everything is done as an operator would on the host: ``podman exec`` runs ``systemctl``,
``apiclient``, ``chronyc``... inside it. How the container runs (capabilities, options) is read
from ``host.toml``; podman's own options from ``CONTAINERS_CONF``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from typing import Any

from tests.realhost.build import config, ensure_image, storage

READY_TIMEOUT = 120.0
OWNER = "host-reconciler-test.pid"  # label: the test process that made the container


class Machine:
    """One test host container; ``name`` is unique to the test run."""

    def __init__(self, image: str, name: str | None = None) -> None:
        from reconciler.containers.podman import PodmanEngine

        self.image = image
        self.name = name or f"realhost-{secrets.token_hex(4)}"
        self.engine = PodmanEngine(storage()).command()
        run = config()["run"]
        caps = [f"--cap-add={cap}" for cap in run["capabilities"]]
        self._remove_orphans()
        self.podman("run", "--detach", "--name", self.name, "--hostname", "realhost",
                    f"--label={OWNER}={os.getpid()}", *caps, *run["options"], image,
                    *run["command"])
        self.wait_booted()

    @classmethod
    def boot(cls) -> Machine:
        return cls(ensure_image())

    # ---- plumbing ------------------------------------------------------------------------------

    def podman(self, *args: str, check: bool = True, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.engine, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} -> {done.returncode}: "
                                 f"{done.stderr.strip()}")
        return done

    def run(self, *argv: str, check: bool = True, timeout: float = 120,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` on the host (as root), output captured."""
        done = subprocess.run([*self.engine, "exec", "-i" if stdin is not None else "-t=false",
                               self.name, *argv], input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"on the host: {' '.join(argv)} -> {done.returncode}\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def out(self, *argv: str) -> str:
        return self.run(*argv).stdout.strip()

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, check=check)

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("sh", "-c", f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode} {path}',
                 stdin=text)

    def read(self, path: str) -> str:
        return self.out("cat", path)

    # ---- systemd ------------------------------------------------------------------------------

    def wait_booted(self, timeout: float = READY_TIMEOUT) -> str:
        """Until systemd finished booting (``running``, or ``degraded`` naming failed units)."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.run("systemctl", "is-system-running", "--wait", check=False,
                            timeout=timeout)
            state = done.stdout.strip()
            if state in ("running", "degraded"):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"test host did not boot: {state!r} {done.stderr.strip()}\n"
                                     + self.journal())
            time.sleep(0.5)

    def journal(self, unit: str | None = None, lines: int = 80) -> str:
        argv = ["journalctl", "--no-pager", "-n", str(lines)] + (["-u", unit] if unit else [])
        return self.run(*argv, check=False).stdout

    def unit(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` properties of ``unit``."""
        output = self.out("systemctl", "show", unit, *(f"--property={p}" for p in properties))
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def started(self, unit: str) -> tuple[str, str, int]:
        """(main PID, start time, reloads so far): changes whenever the unit's program is started
        anew or told to reload (systemd logs "Reloaded <unit> - <description>." each time)."""
        props = self.unit(unit, "MainPID", "ExecMainStartTimestampMonotonic")
        journal = self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False)
        reloads = sum(line.startswith("Reloaded ") for line in journal.stdout.splitlines())
        return props["MainPID"], props["ExecMainStartTimestampMonotonic"], reloads

    def installed(self, unit: str) -> bool:
        return self.unit(unit, "LoadState")["LoadState"] != "not-found"

    # ---- the reconciler on the host ------------------------------------------------------------

    def apiclient(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("apiclient", *args, check=check)

    def api(self, uri: str, method: str = "GET", data: Any = None) -> Any:
        argv = ["apiclient", "-u", uri, "-m", method]
        if data is not None:
            argv += ["-d", json.dumps(data)]
        out = self.out(*argv)
        return json.loads(out) if out else None

    def set(self, patch: dict[str, Any]) -> dict[str, Any]:
        """PATCH ``patch`` (under ``settings``), commit and wait for the pass; its receipt."""
        tx = f"realhost-{secrets.token_hex(4)}"
        self.api(f"/settings?tx={tx}", "PATCH", patch)
        return self.api(f"/tx/commit_and_apply?tx={tx}&wait=true", "POST")["receipt"]

    def status(self) -> dict[str, Any]:
        return self.api("/status")

    def settle(self, timeout: float = 60.0) -> dict[str, Any]:
        """Until the daemon applied its live generation and is not busy; its status then."""
        return eventually(lambda: _settled(self.status()), timeout, self.daemon_log)

    def daemon_log(self) -> str:
        return self.journal("reconciler.service")

    # ---- the container -------------------------------------------------------------------------

    def inspect(self) -> dict[str, Any]:
        return json.loads(self.podman("inspect", self.name).stdout)[0]

    def _remove_orphans(self) -> None:
        """Test hosts left by a run that was killed (their restart policy keeps them up)."""
        listed = self.podman("ps", "--all", "--filter", f"label={OWNER}",
                             "--format", f'{{{{.Names}}}} {{{{index .Labels "{OWNER}"}}}}',
                             check=False).stdout.split("\n")
        for line in listed:
            name, _, pid = line.partition(" ")
            if name and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                self.podman("rm", "--force", "--time", "1", name, check=False)

    def remove(self) -> None:
        self.podman("rm", "--force", "--time", "5", self.name, check=False)


def _settled(status: dict[str, Any]) -> dict[str, Any] | None:
    if status["applied_generation"] != status["live_generation"] or status["state"] == \
            "Reconciling":
        return None
    return status


def eventually(check: Callable[[], Any], timeout: float = 30.0,
               explain: Callable[[], str] | None = None, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except (AssertionError, OSError, ValueError, KeyError) as error:
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s (last: {last})\n"
                                 + (explain() if explain else ""))
        time.sleep(interval)
