"""Bootstrap containers: run to completion at boot, in name order, before anything else.

``settings.bootstrap-containers.<name>.{source, mode, user-data, essential}``, as Bottlerocket's:

* ``mode = "always"`` runs at every boot, ``"once"`` at one boot in the host's life (then its
  mode becomes ``"off"``, as in Bottlerocket), ``"off"`` (the default) never;
* it runs privileged, in the host's network, with the host root at ``/.bottlerocket/rootfs``, its
  decoded user data in ``/.bottlerocket/bootstrap-containers/<name>/user-data`` (persistent),
  the API socket and ``apiclient``; the daemon waits for it to exit (with a deadline);
* ``essential = true`` and a non-zero exit (or no image, or the deadline) fails the boot: every
  pass of this boot then reports it as a failed step, so status is Degraded naming it and the
  boot gate does not mark the boot successful. Host containers still start (an operator needs
  the admin container most when the boot went wrong).

Which containers run is decided by ``due(entries, ran)`` (pure). A ``once`` container is
recorded durably in the store (``bootstrap-once``: name -> identity) as soon as it has run, so
it never runs again even when a source that owns its settings (git) sets ``once`` back; a
changed definition (source or user data) is a new container and runs once more.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostcore.durable import replace_file
from reconciler.containers.engine import EngineError, Mount, RunSpec
from reconciler.containers.pulls import PULL_DEADLINE, Pulls
from reconciler.logs import get_logger

log = get_logger("bootstrap")
PERSISTENT_TARGET = "/.bottlerocket/bootstrap-containers"
ONCE_META = "bootstrap-once"
RUN_DEADLINE = 900.0
LOG_LINES = 20
BOOTSTRAP_TX = "bootstrap-containers"
# The schema's container-name (types.json), checked again here because the name becomes a
# container and a directory name: a store filled another way (a migration) is not validated.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")


@dataclass(frozen=True)
class Due:
    name: str
    source: str
    mode: str
    essential: bool
    user_data: bytes | None
    identity: str


def identity(entry: Mapping[str, Any]) -> str:
    shape = {"source": entry.get("source"), "user-data": entry.get("user-data") or ""}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:32]


def due(entries: Mapping[str, Any] | None, ran: Mapping[str, str]) -> tuple[list[Due], dict]:
    """The bootstrap containers to run now, in name order, and the invalid ones with why."""
    runs: list[Due] = []
    invalid: dict[str, str] = {}
    for name, entry in sorted((entries or {}).items()):
        if not isinstance(entry, Mapping):
            continue
        mode = entry.get("mode", "off")
        if mode == "off":
            continue
        essential = bool(entry.get("essential", False))
        problem = None
        if not NAME.fullmatch(name):
            problem = f"invalid bootstrap container name {name!r}"
        elif mode not in ("once", "always"):
            problem = f"mode {mode!r} is not one of off, once, always"
        elif not isinstance(entry.get("source"), str) or not entry["source"].strip():
            problem = "no source"
        data = None
        if problem is None and entry.get("user-data") is not None:
            try:
                data = base64.b64decode(str(entry["user-data"]), validate=True)
            except (binascii.Error, ValueError):
                problem = "user-data is not valid base64"
        if problem is not None:
            invalid[name] = problem
            continue
        ident = identity(entry)
        if mode == "once" and ran.get(name) == ident:
            continue
        runs.append(Due(name, entry["source"], mode, essential, data, ident))
    return runs, invalid


class BootstrapContainers:
    """Runs the bootstrap containers of this boot (``run_at_boot``); an ``Executor`` that keeps
    reporting an essential failure for the rest of the boot."""

    name = "bootstrap"

    def __init__(self, state_dir: Path, engine: Any, store: Any, schema: Any,
                 tools: Any = None, deadline: float = RUN_DEADLINE):
        self.storage_base = Path(state_dir) / "bootstrap-containers"
        self.engine = engine
        self.store = store
        self.schema = schema
        self.tools = tools  # HostContainers: the API socket mounts and the tools zipapp
        self.deadline = deadline
        self.pulls = Pulls(engine, grace=PULL_DEADLINE)  # at boot, a pull is waited for
        self.results: dict[str, dict[str, Any]] = {}
        self.failed_essential: list[str] = []
        self.running: str | None = None  # the one running now (status says so meanwhile)

    def run_at_boot(self, settings: Mapping[str, Any]) -> bool:
        """Run what is due, in name order; False when an essential one failed."""
        ran = dict(self.store.get_meta(ONCE_META) or {})
        runs, invalid = due(settings.get("bootstrap-containers"), ran)
        entries = settings.get("bootstrap-containers") or {}
        for name, problem in invalid.items():
            essential = bool((entries.get(name) or {}).get("essential", False))
            self._record(name, essential, None, f"invalid settings: {problem}", 0.0)
        for item in runs:
            started = time.monotonic()
            self.running = item.name
            try:
                code, output = self._run(item)
                detail = f"exited {code}" + (f": {_tail(output)}" if code and output else "")
            except (EngineError, OSError) as error:
                code, detail = None, " ".join(str(error).split())
            finally:
                self.running = None
            self._record(item.name, item.essential, code, detail, time.monotonic() - started)
            if item.mode == "once" and code is not None:
                ran[item.name] = item.identity
                self.store.set_meta(ONCE_META, ran)  # durable before anything else happens
                self._turn_off(item.name)
        return not self.failed_essential

    def _run(self, item: Due) -> tuple[int, str]:
        problem = self.engine.available()
        if problem:
            raise EngineError(f"cannot run: {problem}")
        storage = self._storage(item)
        image, _ = self.pulls.image(f"boot.{item.name}", item.source)
        mounts = [Mount(storage, f"{PERSISTENT_TARGET}/{item.name}"),
                  Mount(Path("/"), "/.bottlerocket/rootfs", read_only=True)]
        env: dict[str, str] = {}
        if self.tools is not None:
            extra, env = self.tools.api_mounts()
            mounts += extra
        spec = RunSpec(name=f"boot.{item.name}", image=image.id,
                       labels={"reconciler.bootstrap": item.name}, mounts=mounts,
                       privileged=True, host_pid=False, host_network=True, env=env)
        log.info("running bootstrap container", container=item.name, source=item.source)
        return self.engine.run_to_completion(spec, self.deadline)

    def _storage(self, item: Due) -> Path:
        self.storage_base.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.storage_base / item.name
        if path.is_symlink():
            raise OSError(f"{path} is a symbolic link; refusing to use it")
        path.mkdir(mode=0o700, exist_ok=True)
        target = path / "user-data"
        if item.user_data is None:
            target.unlink(missing_ok=True)
        else:
            replace_file(target, item.user_data, 0o600)
        return path

    def _turn_off(self, name: str) -> None:
        """``mode = "off"`` after a ``once`` run, as Bottlerocket does (the record above is what
        keeps it from running again; this makes the settings say so)."""
        from reconciler.store import NothingToCommit

        try:
            self.store.discard(BOOTSTRAP_TX)
            self.store.add_patch(BOOTSTRAP_TX, {"bootstrap-containers": {name: {"mode": "off"}}},
                                 "bootstrap", self.schema)
            self.store.commit(BOOTSTRAP_TX, self.schema)
        except NothingToCommit:
            pass
        except Exception as error:  # the durable record already keeps it from running again
            self.store.discard(BOOTSTRAP_TX)
            log.warning("cannot set a once bootstrap container's mode to off", container=name,
                        error=str(error))

    def _record(self, name: str, essential: bool, code: int | None, detail: str,
                seconds: float) -> None:
        ok = code == 0
        self.results[name] = {"essential": essential, "exit_code": code, "ok": ok,
                              "detail": detail, "seconds": round(seconds, 3)}
        if not ok and essential:
            self.failed_essential.append(name)
        (log.info if ok else log.warning)("bootstrap container finished", container=name,
                                          exit_code=code, detail=detail)

    # ---- Executor --------------------------------------------------------------------------

    def reconcile(self, settings: Mapping[str, Any], generation: int,
                  changed: set[str]) -> list[dict[str, Any]]:
        return [
            {"kind": "bootstrap", "name": name, "result": "failed",
             "detail": f"essential bootstrap container failed at boot: "
                       f"{self.results[name]['detail']}; the boot is not marked successful"}
            for name in self.failed_essential
        ]

    def plan(self, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
        return []  # bootstrap containers run at boot only

    def status(self) -> dict[str, Any]:
        return {"containers": dict(self.results), "failed_essential": list(self.failed_essential),
                "running": self.running}


def _tail(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()][-5:]
    return " | ".join(lines)[-600:]
