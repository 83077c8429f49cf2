"""A pass is one store snapshot and one pure decision (``reconciler.passplan.plan_pass``).

* a commit landing in the middle of a pass (inside the snapshot's read, or while a service
  restarts) is wholly for the next pass: the receipt names the generation whose settings were
  written, and no service restarts twice for the same settings;
* property: for random settings changes and observed states (files edited or removed by hand,
  owed and settled restarts, host containers crashed or removed, restart budgets), what the
  pass carries out is exactly what the dry run said, and the dry run changes nothing;
* the store round trips of a pass (transactions and statements outside one), counted on the
  real SQLite connection;
* in a daemon, a change is one pass (the file watch does not take the pass's own write for a
  hand edit); a dry run never starts the automatic-update retry clock.

Files, the store and the services' commands are real (a restart appends a line to a log, as in
the crash matrix); host containers run on the fake engine of ``tests/test_containers_plan.py``
(the engine seam; real podman is ``tests/test_containers.py``).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostcore.commands import CommandResult, SubprocessRunner
from reconciler import redact
from reconciler.containers import HostContainers
from reconciler.events import Events
from reconciler.host import Host, open_host
from reconciler.metrics import Metrics
from reconciler.store import Store
from reconciler.updates_executor import UpdatesExecutor
from reconciler.worker import Worker
from tests.daemon import Daemon, eventually
from tests.scratch import write_renderers
from tests.test_containers_plan import Clock, FakeEngine
from tests.updates.test_update_api import manager  # noqa: F401 - the fake updog fixture
from updates.manager import UpdateManager

RESTART = """
import sys
with open(sys.argv[1], "a") as log:
    log.write(" ".join(sys.argv[2:]) + "\\n")
"""

METADATA = """
[configuration-files.motd]
path = "/etc/motd"
template = "motd.j2"

[configuration-files.chrony]
path = "/etc/chrony/chrony.conf"
template = "chrony.j2"
mode = "0600"

[services.motd]
configuration-files = ["motd"]
affected-by = ["settings.motd"]
restart-commands = []

[services.chronyd]
configuration-files = ["chrony"]
affected-by = ["settings.ntp"]
restart-commands = [["{python}", "{restart}", "{log}", "chronyd", "SEEN"]]
sandbox-safe = true

[services.region]
configuration-files = []
affected-by = ["settings.aws.region"]
restart-commands = [["{python}", "{restart}", "{log}", "region"]]
sandbox-safe = true
"""

TEMPLATES = {
    "motd.j2": "{{ settings.motd }}\n",
    "chrony.j2": "{% for s in settings.ntp['time-servers'] %}server {{ s }}\n{% endfor %}",
}


def renderers(base: Path) -> Path:
    folder = base / "renderers"
    folder.mkdir(parents=True)
    (folder / "restart.py").write_text(RESTART)
    return write_renderers(folder, METADATA, TEMPLATES, restart=folder / "restart.py",
                           log=base / "restarts.log")


def restarts(base: Path) -> list[str]:
    log = base / "restarts.log"
    return log.read_text().splitlines() if log.exists() else []


class ChronyRunner:
    """The real runner, with the file the restart saw appended to its log line."""

    def __init__(self, host: Host, hook=None) -> None:  # noqa: ANN001 - a callable
        self.host, self.hook, self.real = host, hook, SubprocessRunner()

    def run(self, argv, env, timeout) -> CommandResult:  # noqa: ANN001 - CommandRunner
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        if argv[-1] == "SEEN":
            seen = (self.host.root / "etc/chrony/chrony.conf").read_text().replace("\n", ";")
            argv = (*argv[:-1], seen)
        return self.real.run(argv, env, timeout)


@contextmanager
def a_host(base: Path) -> Iterator[Host]:
    with open_host(base / "state", variant="aws-dev", renderers=renderers(base)) as host:
        host.reconciler.runner = ChronyRunner(host)
        assert host.boot([])
        yield host


def commit(store: Store, host: Host, patch: dict, tx: str = "t") -> int:
    store.add_patch(tx, patch, f"api:{tx}", host.schema)
    return store.commit(tx, host.schema).generation


def ntp(*servers: str) -> dict:
    return {"ntp": {"time-servers": list(servers)}}


# ---- a commit in the middle of a pass ----------------------------------------------------------


@pytest.mark.parametrize("where", ["inside the snapshot", "during a restart"])
def test_a_commit_landing_mid_pass_is_for_the_next_pass(tmp_path: Path, where: str) -> None:
    with a_host(tmp_path) as host:
        assert host.reconciler.run_pass("boot")["ok"]
        first = commit(host.store, host, ntp("a.example"))
        restarts_before = len(restarts(tmp_path))
        other = Store(host.store.path)  # a second connection, as a concurrent API commit

        def land() -> None:
            commit(other, host, ntp("b.example"), tx="mid")

        if where == "inside the snapshot":
            # After the snapshot read the generation, before it reads the settings: exactly
            # where separate reads would mix two generations.
            statements: list[str] = []

            def trace(sql: str) -> None:
                statements.append(sql)
                if "FROM settings" in sql and len(statements) > 1 and len(statements) < 10:
                    host.store.trace(None)
                    land()

            host.store.trace(trace)
        else:
            host.reconciler.runner.hook = land  # type: ignore[attr-defined]
        receipt = host.reconciler.run_pass("commit")
        host.store.trace(None)
        other.close()

        assert host.store.generation() == first + 1  # the commit did land mid-pass
        assert receipt["ok"] and receipt["generation"] == first
        assert receipt["changed_settings"] == ["settings.ntp.time-servers"]
        on_disk = (host.root / "etc/chrony/chrony.conf").read_text()
        assert on_disk == "server a.example\n"  # the generation the receipt names
        assert restarts(tmp_path)[restarts_before:] == ["chronyd server a.example;"]

        second = host.reconciler.run_pass("next")
        assert second["ok"] and second["generation"] == first + 1
        assert (host.root / "etc/chrony/chrony.conf").read_text() == "server b.example\n"
        assert host.reconciler.run_pass("again")["steps"] == []
        lines = restarts(tmp_path)[restarts_before:]
        assert lines == ["chronyd server a.example;", "chronyd server b.example;"]
        assert len(set(lines)) == len(lines)  # no service restarted twice for the same settings


# ---- store round trips per pass ----------------------------------------------------------------


class RoundTrips:
    """Counts store round trips: a transaction (BEGIN ... COMMIT) is one, as is any statement
    run outside one."""

    def __init__(self) -> None:
        self.count = 0
        self.statements: list[str] = []
        self._open = False

    def __call__(self, sql: str) -> None:
        self.statements.append(sql)
        word = sql.split(None, 1)[0].upper()
        if word == "BEGIN":
            self._open = True
            self.count += 1
        elif word in ("COMMIT", "ROLLBACK"):
            self._open = False
        elif not self._open:
            self.count += 1


@pytest.mark.parametrize(
    ("patch", "file", "expected"),
    [
        # A service with no commands: the snapshot, the receipt (which settles it), and the
        # scrubber reading the secret sections of the new generation once, for the pass event.
        ({"motd": "counted"}, "motd", 3),
        # A restart: the snapshot, owe (before the file), settle (after the restart), receipt,
        # and the scrubber's read.
        (ntp("counted.example"), "chrony", 5),
    ],
)
def test_store_round_trips_per_pass(tmp_path: Path, patch: dict, file: str,
                                    expected: int) -> None:
    with a_host(tmp_path) as host:
        redact.track(host.schema, host.store)  # as the daemon does: events scrub secrets
        try:
            worker = Worker(host, Events(), Metrics())
            asyncio.run(worker._pass("boot"))
            commit(host.store, host, patch)
            counter = RoundTrips()
            host.store.trace(counter)
            receipt = asyncio.run(worker._pass("commit"))
            worker._report(receipt)  # the pass's events, sent once its waiters are answered
            host.store.trace(None)
        finally:
            redact.untrack()
        assert receipt["ok"]
        kinds = [(s["kind"], s["name"]) for s in receipt["steps"]]
        assert ("file", file) in kinds and len(kinds) == 2, kinds  # one file, one service
        assert counter.count == expected <= 5, "\n".join(counter.statements)


# ---- property: the pass does exactly what the dry run says -------------------------------------

V1, V2 = "oci-archive:/images/v1.tar", "registry.example.com/admin:v2"
MOTDS = st.sampled_from(["one", "two"])
SERVERS = st.lists(st.sampled_from(["a.example", "b.example"]), min_size=1, max_size=2,
                   unique=True)
CONTAINER = st.fixed_dictionaries(
    {"source": st.sampled_from([V1, V2]), "enabled": st.sampled_from([True, True, False]),
     "superpowered": st.booleans()})
SETTINGS = st.fixed_dictionaries({
    "motd": MOTDS,
    "ntp": st.fixed_dictionaries({"time-servers": SERVERS}),
    "aws": st.fixed_dictionaries({"region": st.sampled_from(["us-east-1", "eu-west-1"])}),
    "host-containers": st.dictionaries(st.sampled_from(["a", "b"]), CONTAINER, max_size=2),
})
DISK = st.sampled_from(["keep", "edit", "remove", "chmod"])
CONTAINER_EVENT = st.sampled_from(["none", "crash", "remove"])


def as_patch(before: dict, after: dict) -> dict:
    """A merge patch from ``before`` to ``after`` (containers no longer listed are deleted)."""
    patch = {k: v for k, v in after.items() if k != "host-containers"}
    patch["host-containers"] = {**{n: None for n in before.get("host-containers", {})},
                                **after["host-containers"]}
    return patch


# What each planned container action reports when carried out (the rest report "failed").
CONTAINER_RESULT = {"create": "created", "recreate": "recreated", "remove": "removed",
                    "restart": "restarted"}
ENGINE_CALLS = {"create": 1, "recreate": 2, "remove": 1, "restart": 1}  # run, start, remove


def executed(receipt: dict) -> dict[str, list]:
    """What a pass carried out, from its receipt, in the dry run's terms."""
    steps = receipt["steps"]
    return {
        "files": sorted(s["name"] for s in steps if s["kind"] == "file"),
        "services": sorted(s["name"] for s in steps if s["kind"] == "service"),
        "containers": sorted((s["name"], s["result"]) for s in steps if s["kind"] == "container"),
    }


def predicted(dry: dict) -> dict[str, list]:
    return {
        "files": sorted(f["name"] for f in dry["files"]),
        "services": sorted(s["name"] for s in dry["services"]),
        "containers": sorted((c["name"], CONTAINER_RESULT.get(c["action"], "failed"))
                             for c in dry["containers"]),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=SETTINGS,
    second=SETTINGS,
    apply_second=st.booleans(),
    disk=st.tuples(DISK, DISK),
    events=st.lists(st.tuples(st.sampled_from(["a", "b"]), CONTAINER_EVENT), max_size=6),
    owed=st.lists(st.sampled_from(["chronyd", "region", "motd"]), max_size=2, unique=True),
    elapsed=st.sampled_from([0.0, 0.5, 5.0, 1000.0]),
    budget=st.integers(1, 3),
)
def test_the_pass_carries_out_exactly_the_dry_run(first, second, apply_second, disk, events,
                                                  owed, elapsed, budget) -> None:
    with tempfile.TemporaryDirectory() as tmp, a_host(Path(tmp)) as host:
        engine, clock = FakeEngine(), Clock()
        # Registry pulls run off the pass (issue 13); the fake engine answers at once, and a
        # pass waits for a pull it starts, so that the pass shows the planned action's outcome.
        host.reconciler.containers = HostContainers(
            host.state_dir, engine, clock=clock, sleep=lambda s: None, max_restarts=budget,
            window=100.0, pull_grace=5.0)
        commit(host.store, host, as_patch({}, first))
        host.reconciler.run_pass("first")
        if apply_second:  # a change, not applied yet
            commit(host.store, host, as_patch(first, second))
        for n, (name, event) in enumerate(events):  # host containers crash or are removed
            if n:  # by hand; a pass brings them back (within their budget), except the last
                clock.now += 0.5
                host.reconciler.run_pass("event")
            if name in engine.containers and event == "crash":
                engine.crash(name, code=3)
            elif event == "remove":
                engine.containers.pop(name, None)
        if owed:  # an interrupted pass left restarts owed
            host.store.owe({name: [] for name in owed}, host.store.generation(), "crashed")
        for (action, path) in zip(disk, ("etc/motd", "etc/chrony/chrony.conf"), strict=True):
            target = host.root / path
            if action == "edit":
                target.write_text("edited by hand\n")
            elif action == "remove":
                target.unlink(missing_ok=True)
            elif action == "chmod" and target.exists():
                os.chmod(target, 0o640)
        clock.now += elapsed
        log_before = restarts(Path(tmp))

        dry = host.dry_run()
        assert host.dry_run() == dry  # a dry run changes nothing, not even a clock
        calls_before = list(engine.calls)
        receipt = host.reconciler.run_pass("checked")

        assert receipt["generation"] == dry["generation"]
        assert executed(receipt) == predicted(dry)
        ran = [line.split()[0] for line in restarts(Path(tmp))[len(log_before):]]
        will_run = [s["name"] for s in dry["services"] if s["name"] != "motd"]
        assert sorted(ran) == sorted(will_run)  # motd has no commands; the others are safe
        made = [c for c in engine.calls[len(calls_before):] if c.split()[0] in
                ("run", "start", "remove")]
        assert len(made) == sum(ENGINE_CALLS.get(c["action"], 0) for c in dry["containers"])


# ---- the daemon: a change is one pass --------------------------------------------------------


def passes(daemon: Daemon) -> int:
    text = daemon.ok("GET", "/metrics")
    return int(sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("reconciler_passes_total")))


def test_a_change_is_one_pass_not_a_second_one_woken_by_its_own_write(tmp_path: Path) -> None:
    """The file watch sees the pass's own writes; it must not take them for hand edits."""
    daemon = Daemon(tmp_path / "state", ["--variant", "aws-dev"])
    try:
        eventually(lambda: daemon.ok("GET", "/status")["state"] == "Ready")
        counts = []
        for n in range(6):
            before = passes(daemon)
            daemon.ok("PATCH", "/settings", {"motd": f"change {n}"})
            receipt = daemon.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]
            assert receipt["ok"] and [s["name"] for s in receipt["steps"]][:1] == ["motd"]
            counts.append(passes(daemon) - before)
        # Each change: its pass, plus none woken by the file it wrote (the next change's count
        # would show one, at the latest the one after).
        assert counts == [1] * 6, counts
    finally:
        assert daemon.stop() == 0


# ---- the update policy: a dry run never starts the retry clock ---------------------------------


def test_a_dry_run_does_not_start_the_update_retry_clock(manager: UpdateManager,  # noqa: F811
                                                         tmp_path: Path) -> None:
    """A failed automatic step is retried an hour after the first *pass* that saw it fail;
    dry runs in between (``plan``) see the same and change nothing."""
    (tmp_path / "gate").touch()
    (tmp_path / "fail").touch()  # the fake updog's update-image fails
    now = [datetime(2024, 1, 1, 3, 0, tzinfo=UTC)]
    elapsed = [0.0]  # the retry delay follows monotonic time (issue 19), the window wall time

    def advance(minutes: int) -> None:
        now[0] += timedelta(minutes=minutes)
        elapsed[0] += minutes * 60.0

    executor = UpdatesExecutor(store=None, manager=manager,  # type: ignore[arg-type]
                               clock=lambda: now[0], monotonic=lambda: elapsed[0])
    policy = {"updates": {"automatic": True}}
    for expected in ("refresh", "prepare"):
        assert [s["name"] for s in executor.reconcile(policy)] == [expected]
        manager.wait()
    assert manager.status().most_recent_command.cmd_status == "Failed"
    (tmp_path / "fail").unlink()
    assert executor.plan(policy) == []  # the dry run waits too...
    advance(59)
    assert executor.plan(policy) == []
    assert executor.reconcile(policy) == []  # ...but only this pass starts the hour
    advance(2)
    assert executor.plan(policy) == [] and executor.reconcile(policy) == []
    advance(58)
    assert [s["name"] for s in executor.plan(policy)] == ["prepare"]
    assert [s["name"] for s in executor.reconcile(policy)] == ["prepare"]
    manager.wait()
