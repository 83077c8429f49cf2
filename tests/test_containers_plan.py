"""Host containers without an engine: the pure planner, and the executor on a fake engine."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.containers import (
    EngineError,
    HostContainers,
    Image,
    ObservedContainer,
    RunSpec,
    plan_containers,
)
from reconciler.containers.planner import DesiredContainer, desired_containers, identity
from reconciler.schema import Schema

V1, V2 = "oci-archive:/images/v1.tar", "registry.example.com/admin:v2"


def observed(name: str, source: str = V1, state: str = "running", managed: bool = True,
             superpowered: bool = False, user_data: str | None = None,
             exit_code: int | None = None) -> ObservedContainer:
    labels = {}
    if managed:
        labels = DesiredContainer(name, source, superpowered, user_data).labels(1)
    return ObservedContainer(name, f"id-{name}", state, labels, "img", exit_code)


def actions(desired, seen) -> dict[str, tuple[str, str]]:
    return {a.name: (a.action, a.reason) for a in plan_containers(desired, seen)}


# ---- planner -----------------------------------------------------------------------------------


def test_enabled_entries_are_created_and_disabled_ones_are_not():
    desired = {"a": {"source": V1, "enabled": True}, "b": {"source": V1}, "c": {"source": V1,
                                                                                "enabled": False}}
    assert actions(desired, []) == {"a": ("create", "not running: no container")}


def test_what_changed_decides_recreate_from_the_labels_alone():
    seen = [observed("a"), observed("b"), observed("c", user_data="eA==")]
    desired = {
        "a": {"source": V2, "enabled": True},
        "b": {"source": V1, "enabled": True, "superpowered": True},
        "c": {"source": V1, "enabled": True, "user-data": "eQ=="},
    }
    assert actions(desired, seen) == {
        "a": ("recreate", f"source {V1} -> {V2}"),
        "b": ("recreate", "superpowered false -> true"),
        "c": ("recreate", "user-data changed"),
    }


def test_keep_start_and_remove():
    seen = [observed("a"), observed("b", state="exited", exit_code=3), observed("c"),
            observed("d")]
    desired = {"a": {"source": V1, "enabled": True}, "b": {"source": V1, "enabled": True},
               "c": {"source": V1, "enabled": False}}
    assert actions(desired, seen) == {
        "a": ("keep", "running"),
        "b": ("start", "not running: exited (exit code 3)"),
        "c": ("remove", "disabled"),
        "d": ("remove", "no longer in settings"),
    }
    assert [a.action for a in plan_containers(desired, seen)][:2] == ["remove", "remove"]


def test_unmanaged_containers_are_never_acted_on():
    seen = [observed("mine", managed=False), observed("other", managed=False)]
    result = plan_containers({"mine": {"source": V1, "enabled": True}}, seen)
    assert [(a.name, a.action) for a in result] == [("mine", "conflict")]


def test_names_and_sources_that_could_escape_are_invalid():
    desired = {
        "-rm": {"source": V1, "enabled": True},
        "ok": {"source": "oci-archive:relative/path.tar", "enabled": True},
        "opt": {"source": "--privileged", "enabled": True},
    }
    result = actions(desired, [])
    assert {name: action for name, (action, _) in result.items()} == {
        "-rm": "invalid", "ok": "invalid", "opt": "invalid"
    }
    assert "absolute path" in result["ok"][1]


@pytest.mark.parametrize("source", [
    "oci-archive:relative.tar", "docker-archive:images/a.tar", "oci:layout", "dir:x",
    "--privileged", "-rf", "has space:1", "admin\n", "",
])
def test_the_schema_refuses_what_the_planner_refuses(source: str) -> None:
    """One rule: a source the pass would refuse is refused at commit, with the key named."""
    entry = {"source": source, "enabled": True}
    problems = Schema.load("aws-dev").validate({"host-containers": {"admin": entry}})
    assert [p.key for p in problems] == ["settings.host-containers.admin.source"]
    assert desired_containers({"admin": entry}) == ({}, {"admin": str(problems[0])})


@given(st.text(max_size=40), st.sampled_from(["", "oci-archive:", "dir:", "docker://"]))
def test_planner_and_schema_agree_on_every_source(text: str, transport: str) -> None:
    source = transport + text
    entry = {"source": source, "enabled": True}
    refused = bool(Schema.load("aws-dev").validate({"host-containers": {"admin": entry}}))
    wanted, invalid = desired_containers({"admin": entry})
    assert refused == ("admin" in invalid) != ("admin" in wanted)


def test_identity_ignores_enabled_and_covers_the_rest():
    assert identity(V1, False, None) == identity(V1, False, "")
    assert len({identity(V1, False, None), identity(V2, False, None), identity(V1, True, None),
                identity(V1, False, "eA==")}) == 4


names = st.sampled_from(["a", "b", "c", "d"])
entries = st.fixed_dictionaries(
    {"source": st.sampled_from([V1, V2]), "enabled": st.booleans(),
     "superpowered": st.booleans()}
)


existing_containers = st.lists(
    st.tuples(names, entries, st.booleans(), st.booleans()), unique_by=lambda t: t[0]
)


@given(st.dictionaries(names, entries), existing_containers)
def test_applying_the_plan_converges_in_one_step(desired, existing):
    """Property: after doing what the plan says, planning again only keeps (idempotence)."""
    seen = [observed(n, e["source"], "running" if up else "exited", managed=True,
                     superpowered=e["superpowered"]) if mine else
            observed(n, managed=False) for n, e, up, mine in existing]
    by_name = {c.name: c for c in seen}
    for action in plan_containers(desired, seen):
        if action.action == "remove":
            del by_name[action.name]
        elif action.action in ("create", "recreate", "start"):
            want = action.desired
            by_name[action.name] = observed(want.name, want.source, superpowered=want.superpowered)
        else:
            assert action.action in ("keep", "conflict")
    again = plan_containers(desired, list(by_name.values()))
    assert {a.action for a in again} <= {"keep", "conflict"}
    for container in seen:
        if not container.managed:
            assert by_name[container.name] == container  # never touched


# ---- executor on a fake engine -----------------------------------------------------------------


class FakeEngine:
    def __init__(self, installed: bool = True):
        self.installed = installed
        self.containers: dict[str, ObservedContainer] = {}
        self.calls: list[str] = []
        self.bad_sources: set[str] = set()
        self.slow_sources: dict[str, threading.Event] = {}
        self.local: dict[str, Image] = {}
        self.made = False

    def available(self):
        return None if self.installed else "podman is not installed"

    def initialized(self):
        return self.made

    def list(self):
        self.calls.append("list")
        return list(self.containers.values())

    def pull(self, source, timeout=None):
        self.calls.append(f"pull {source}")
        if source in self.bad_sources:
            raise EngineError(f"podman pull: {source} not found")
        if source in self.slow_sources:
            self.slow_sources[source].wait(30)
        return Image("0123", "sha256:abcd")

    def local_image(self, reference):
        return self.local.get(reference)

    def load(self, archive):
        self.calls.append(f"load {archive}")

    def run(self, spec: RunSpec):
        self.calls.append(f"run {spec.name}")
        self.made = True
        self.specs = getattr(self, "specs", {})
        self.specs[spec.name] = spec
        self.containers[spec.name] = ObservedContainer(spec.name, "x", "running",
                                                       dict(spec.labels), spec.image)
        return "x"

    def start(self, name):
        self.calls.append(f"start {name}")
        old = self.containers[name]
        self.containers[name] = ObservedContainer(name, old.id, "running", old.labels)

    def remove(self, name):
        self.calls.append(f"remove {name}")
        self.containers.pop(name, None)

    def logs(self, name, lines=20):
        return "boom: no config\n"

    def events(self, stop: threading.Event):
        return iter(())

    def crash(self, name, code=1):
        old = self.containers[name]
        self.containers[name] = ObservedContainer(name, old.id, "exited", old.labels, "", code)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def executor(tmp_path: Path, engine: FakeEngine, clock=None, **options) -> HostContainers:
    """Registry pulls run off the pass; here a pass waits up to 5 s for one it starts (the
    fake engine answers at once), so that one pass shows its outcome."""
    options.setdefault("pull_grace", 5.0)
    return HostContainers(tmp_path / "state", engine, clock=clock or Clock(), sleep=lambda s: None,
                          **options)


def settings(**containers) -> dict:
    return {"host-containers": containers}


def test_nothing_enabled_never_calls_the_engine(tmp_path):
    engine = FakeEngine(installed=False)
    hc = executor(tmp_path, engine)
    assert hc.reconcile(settings(a={"source": V1, "enabled": False}), 1, set()) == []
    assert engine.calls == []
    assert hc.plan(settings(a={"source": V1})) == []


def test_missing_engine_is_a_failed_step_of_the_enabled_container(tmp_path):
    hc = executor(tmp_path, FakeEngine(installed=False))
    steps = hc.reconcile(settings(a={"source": V1, "enabled": True}), 1, set())
    assert [(s["name"], s["result"]) for s in steps] == [("a", "failed")]
    assert "not installed" in steps[0]["detail"]
    assert hc.status()["host-containers"]["a"]["state"] == "failed"


def test_storage_user_data_and_mounts(tmp_path):
    engine = FakeEngine()
    hc = executor(tmp_path, engine)
    steps = hc.reconcile(settings(a={"source": V1, "enabled": True, "superpowered": True,
                                     "user-data": "aGk="}), 4, set())
    assert steps[0]["result"] == "created" and steps[0]["digest"] == "sha256:abcd"
    folder = tmp_path / "state/host-containers/a"
    assert (folder / "user-data").read_bytes() == b"hi"
    assert folder.stat().st_mode & 0o777 == 0o700
    spec = engine.specs["a"]
    targets = {m.target: m for m in spec.mounts}
    assert targets["/.bottlerocket/host-containers/a"].source == folder.resolve()
    assert targets["/.bottlerocket/rootfs"].read_only
    assert targets["/usr/local/bin/apiclient"].source.read_bytes().startswith(b"#!/usr/bin/env")
    assert spec.privileged and spec.host_pid and spec.host_network
    assert spec.labels["reconciler.managed"] == "true"
    # A second pass changes nothing and reports nothing.
    assert hc.reconcile(settings(a={"source": V1, "enabled": True, "superpowered": True,
                                    "user-data": "aGk="}), 4, set()) == []


def test_bad_new_source_keeps_the_old_container(tmp_path):
    engine = FakeEngine()
    hc = executor(tmp_path, engine)
    hc.reconcile(settings(a={"source": V1, "enabled": True}), 1, set())
    engine.bad_sources.add(V2)
    steps = hc.reconcile(settings(a={"source": V2, "enabled": True}), 2, set())
    assert steps[0]["result"] == "failed" and V2 in steps[0]["detail"]
    assert "remove a" not in engine.calls and engine.containers["a"].running
    assert "attempt 1" in steps[0]["detail"] and "next attempt in 2 s" in steps[0]["detail"]
    # Retried with a back-off, off the pass: the next pass within it does not pull again.
    steps = hc.reconcile(settings(a={"source": V2, "enabled": True}), 2, set())
    assert steps[0]["result"] == "failed" and engine.calls.count(f"pull {V2}") == 1


def test_failed_pull_backs_off_then_succeeds(tmp_path):
    engine, clock = FakeEngine(), Clock()
    hc = executor(tmp_path, engine, clock, pull_backoff=2.0)
    want = settings(a={"source": V2, "enabled": True})
    engine.bad_sources.add(V2)
    delays = []
    for _ in range(3):
        step = hc.reconcile(want, 1, set())[0]
        assert step["result"] == "failed" and "\n" not in step["detail"]
        delays.append(step["detail"].rsplit("next attempt in ", 1)[1])
        clock.now += 100  # past any back-off so far
    assert delays == ["2 s", "4 s", "8 s"]
    status = hc.status()["host-containers"]["a"]
    assert status["state"] == "failed" and V2 in status["last_error"]
    engine.bad_sources.clear()
    assert hc.reconcile(want, 1, set())[0]["result"] == "created"


def test_slow_pull_runs_off_the_pass_and_wakes_the_worker(tmp_path):
    engine = FakeEngine()
    hc = executor(tmp_path, engine, pull_grace=0.0)
    woken = threading.Event()
    hc.attach(None, lambda reason: woken.set())
    release = engine.slow_sources[V2] = threading.Event()
    want = settings(a={"source": V2, "enabled": True}, b={"source": V1, "enabled": True})
    steps = {s["name"]: s for s in hc.reconcile(want, 1, set())}
    assert steps["a"]["result"] == "pending" and "pulling" in steps["a"]["detail"]
    assert steps["b"]["result"] == "created"  # the other container did not wait
    assert hc.status()["host-containers"]["a"]["state"] == "pulling"
    assert hc.reconcile(want, 1, set())[0]["result"] == "pending"
    assert engine.calls.count(f"pull {V2}") == 1  # one pull under way, not one per pass
    release.set()
    assert woken.wait(10)
    assert {s["name"]: s["result"] for s in hc.reconcile(want, 1, set())} == {"a": "created"}
    hc.close()


def test_an_image_in_the_store_runs_without_a_pull(tmp_path):
    engine = FakeEngine()
    engine.local["localhost/tiny:1"] = Image("4567", "")
    hc = executor(tmp_path, engine)
    steps = hc.reconcile(settings(a={"source": "localhost/tiny:1", "enabled": True}), 1, set())
    assert steps[0]["result"] == "created" and steps[0]["image"] == "4567"
    assert not [c for c in engine.calls if c.startswith(("pull", "load"))]


def test_crash_loop_budget_with_backoff_then_failed_until_settings_change(tmp_path):
    engine, clock = FakeEngine(), Clock()
    hc = executor(tmp_path, engine, clock, max_restarts=3, window=100.0, backoff_start=1.0)
    want = settings(a={"source": V1, "enabled": True})
    hc.reconcile(want, 1, set())
    results = []
    for _ in range(6):
        engine.crash("a", code=7)
        step = hc.reconcile(want, 1, set())[0]
        if step["result"] == "failed" and "restart" in step["detail"] and "crash" not in \
                step["detail"]:
            clock.now += 10  # wait out the backoff, then the next pass restarts it
            step = hc.reconcile(want, 1, set())[0]
        results.append(step["result"])
    assert results[:3] == ["restarted"] * 3
    assert set(results[3:]) == {"failed"}
    status = hc.status()["host-containers"]["a"]
    assert status["state"] == "failed" and status["crash_looping"] and status["restarts"] == 3
    assert status["exit_code"] == 7 and "boom" in status["last_error"]
    # New settings: a fresh budget.
    steps = hc.reconcile(settings(a={"source": V2, "enabled": True}), 2, set())
    assert steps[0]["result"] == "recreated"
    assert hc.status()["host-containers"]["a"]["state"] == "running"


def test_disable_removes_and_forgets(tmp_path):
    engine = FakeEngine()
    hc = executor(tmp_path, engine)
    hc.reconcile(settings(a={"source": V1, "enabled": True}), 1, set())
    plan = hc.plan(settings(a={"source": V1, "enabled": False}))
    assert plan == [{"name": "a", "action": "remove", "reason": "disabled"}]
    steps = hc.reconcile(settings(a={"source": V1, "enabled": False}), 2, set())
    assert steps == [{"kind": "container", "name": "a", "result": "removed",
                      "detail": "disabled"}]
    assert hc.status()["host-containers"] == {}


@pytest.mark.parametrize("name", ["..", ".", "a/b", ""])
def test_storage_dir_refuses_to_escape(tmp_path, name):
    hc = executor(tmp_path, FakeEngine())
    with pytest.raises(OSError):
        hc.storage_dir(name)
