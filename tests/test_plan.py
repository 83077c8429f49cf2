"""The pure planner: idempotence (property), what restarts and why, sandbox skips, held services."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.effects import read_observed, write_atomic
from reconciler.plan import FileAction, ObservedFile, Plan, plan, unified_diff
from renderers.catalog import Catalog, ConfigFile, Service
from renderers.render import Rendered, Renderer, RenderResult


def catalog() -> Catalog:
    files = {
        "a": ConfigFile("a", "/etc/a", "a.j2", 0o644),
        "b": ConfigFile("b", "/etc/b", "b.j2", 0o600),
        "c": ConfigFile("c", "/etc/x/c", "c.j2", 0o644),
    }
    services = {
        "one": Service("one", ("a", "b"), ("settings.one",), (("restart", "one"),)),
        "two": Service("two", ("c",), ("settings.two",), (("restart", "two"),),
                       sandbox_safe=True),
        "nofiles": Service("nofiles", (), ("settings.three",), (("reload", "three"),)),
        "quiet": Service("quiet", (), ("settings.one.sub",)),
    }
    return Catalog(files, services, "test")


CATALOG = catalog()


def rendered(contents: dict[str, bytes], errors: dict[str, str] | None = None) -> RenderResult:
    files = {
        name: Rendered(name, CATALOG.files[name].path, body, CATALOG.files[name].mode)
        for name, body in contents.items()
    }
    return RenderResult(files, errors or {})


def apply(observed: dict[str, ObservedFile | None], p: Plan) -> dict[str, ObservedFile | None]:
    after = dict(observed)
    for action in p.files:
        after[action.path] = ObservedFile(action.content, action.mode)
    return after


bodies = st.binary(max_size=20)
observed_file = st.none() | st.builds(ObservedFile, bodies, st.sampled_from([0o644, 0o600, 0o755]))
keys = st.sampled_from(["settings.one", "settings.one.sub", "settings.two.x", "settings.three",
                        "settings.other", "settings"])


@settings(max_examples=200, deadline=None)
@given(
    contents=st.fixed_dictionaries({}, optional={n: bodies for n in ("a", "b", "c")}),
    on_disk=st.fixed_dictionaries({}, optional={p: observed_file
                                                for p in ("/etc/a", "/etc/b", "/etc/x/c")}),
    changed=st.lists(keys, max_size=4),
    owed=st.lists(st.sampled_from(["one", "two", "nofiles", "gone"]), max_size=2),
    sandbox=st.booleans(),
)
def test_planning_against_what_the_plan_writes_is_empty(contents, on_disk, changed, owed,
                                                        sandbox) -> None:
    first = plan(1, rendered(contents), on_disk, CATALOG, changed, owed, sandbox)
    # files: exactly those that differ; each rendered file is written or unchanged, once
    assert sorted([f.name for f in first.files] + list(first.unchanged)) == sorted(contents)
    for action in first.files:
        current = on_disk.get(action.path)
        assert current != ObservedFile(action.content, action.mode)
    # every file written has its services restarted
    restarted = {s.service for s in first.services}
    assert CATALOG.services_for_files(f.name for f in first.files) <= restarted
    assert {o for o in owed if o in CATALOG.services} <= restarted
    second = plan(2, rendered(contents), apply(on_disk, first), CATALOG, (), (), sandbox)
    assert second.empty
    assert sorted(second.unchanged) == sorted(contents)
    # deterministic
    assert first == plan(1, rendered(contents), on_disk, CATALOG, list(reversed(changed)),
                         owed, sandbox)


def test_file_reasons() -> None:
    disk = {"/etc/a": ObservedFile(b"old", 0o644), "/etc/b": ObservedFile(b"B", 0o644),
            "/etc/x/c": ObservedFile(b"C", 0o644)}
    p = plan(3, rendered({"a": b"new", "b": b"B", "c": b"C"}), disk, CATALOG, [])
    assert [(f.name, f.reason) for f in p.files] == [("a", "content differs"),
                                                     ("b", "mode differs")]
    assert p.unchanged == ("c",)
    p = plan(3, rendered({"c": b"C"}), {}, CATALOG, [])
    assert [(f.name, f.reason) for f in p.files] == [("c", "missing")]


def test_changed_keys_restart_concerned_services_even_without_files() -> None:
    same = {"/etc/a": ObservedFile(b"A", 0o644)}
    p = plan(4, rendered({"a": b"A"}), same, CATALOG,
             ["settings.three", "settings.one.sub.x", "settings.unrelated"], sandbox=False)
    assert p.files == ()
    by_name = {s.service: s for s in p.services}
    assert sorted(by_name) == ["nofiles", "one", "quiet"]
    assert by_name["nofiles"].commands == (("reload", "three"),)
    assert by_name["nofiles"].changed_settings == ("settings.three",)
    assert by_name["one"].changed_settings == ("settings.one.sub.x",)
    assert by_name["one"].environment == {"CHANGED_SETTINGS": "settings.one.sub.x"}
    assert by_name["quiet"].commands == () and not by_name["quiet"].skipped
    assert all(s.reason == "settings changed" for s in p.services)


def test_deleted_subtree_concerns_services_below_it() -> None:
    p = plan(5, rendered({}), {}, CATALOG, ["settings"])
    assert [s.service for s in p.services] == ["nofiles", "one", "quiet", "two"]


def test_written_file_restarts_its_service_with_reason() -> None:
    p = plan(6, rendered({"b": b"B"}), {}, CATALOG, ["settings.one.x"], sandbox=False)
    (action,) = p.services
    assert action.service == "one"
    assert action.reason == "files changed: b; settings changed"
    assert action.commands == (("restart", "one"),) and not action.skipped


def test_owed_restart_runs_even_with_nothing_to_write() -> None:
    disk = {"/etc/x/c": ObservedFile(b"C", 0o644)}
    p = plan(7, rendered({"c": b"C"}), disk, CATALOG, [], owed=["two", "removed-service"])
    assert [(s.service, s.reason, s.changed_settings) for s in p.services] == [
        ("two", "owed by an earlier pass", ())]


def test_sandbox_records_but_skips_unsafe_commands() -> None:
    p = plan(8, rendered({"a": b"A", "c": b"C"}), {}, CATALOG, [], sandbox=True)
    by_name = {s.service: s for s in p.services}
    assert by_name["one"].skipped and by_name["one"].commands == (("restart", "one"),)
    assert not by_name["two"].skipped  # marked sandbox-safe
    p = plan(8, rendered({"a": b"A"}), {}, CATALOG, [], sandbox=False)
    assert not p.services[0].skipped


def test_render_error_holds_the_whole_service() -> None:
    result = rendered({"a": b"A", "c": b"C"}, {"b": "'settings.one.x' is not set"})
    p = plan(9, result, {}, CATALOG, ["settings.one.x"])
    assert [f.name for f in p.files] == ["c"]
    assert [s.service for s in p.services] == ["two"]
    assert p.held == ("one",)
    assert p.errors == {"b": "'settings.one.x' is not set"}


def test_unified_diff() -> None:
    assert unified_diff("/etc/motd", b"old\n", b"new\n") == (
        "--- a/etc/motd\n+++ b/etc/motd\n@@ -1 +1 @@\n-old\n+new\n")
    created = FileAction("motd", "/etc/motd", b"hi", 0o644, "missing").diff(None)
    assert created.startswith("--- /dev/null\n+++ b/etc/motd\n")
    assert "\\ No newline at end of file" in created
    assert "Binary" in unified_diff("/x", b"\xff", b"a")


def test_real_catalog_round_trip_on_disk_is_idempotent(tmp_path: Path) -> None:
    """Render the shipped aws-k8s catalog, write the plan, read it back: nothing left to do."""
    real = Catalog.load("aws-k8s")
    model = {"settings": {"motd": "hi", "kubernetes": {
        "api-server": "https://k", "cluster-name": "c",
        "cluster-certificate": "Q0VSVAo="}, "updates": {
        "metadata-base-url": "https://u/m", "targets-base-url": "https://u/t"}},
        "os": {}}
    result = Renderer(real).render_all(model)
    assert result.errors == {}
    paths = [f.path for f in real.files.values()]
    first = plan(1, result, read_observed(tmp_path, paths), real, ["settings"], sandbox=True)
    # optional files (hostname, resolv.conf) render nothing without their settings: not managed
    assert len(first.files) == len(result.files) == len(real.files) - 2
    for action in first.files:
        write_atomic(tmp_path, action.path, action.content, action.mode)
    second = plan(2, Renderer(real).render_all(model), read_observed(tmp_path, paths), real, [])
    assert second.empty and len(second.unchanged) == len(result.files)
