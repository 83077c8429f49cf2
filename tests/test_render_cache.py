"""The renderer reuses a file's bytes only when everything its template looked up is the same.

Oracle: a renderer that remembers gives, for any sequence of models, exactly what a fresh
renderer gives for each of them (types included: 1, 1.0 and true render differently).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hostcore.keys import flatten
from renderers.catalog import Catalog
from renderers.render import Renderer

TEMPLATES = {
    "lookup.j2": "{{ settings.motd | default('none') }} {{ settings.ntp['time-servers'] | "
                 "default([]) | join(',') }}\n",
    "table.j2": "{% for k, v in settings.labels | default({}) | dictsort %}{{ k }}={{ v }}\n"
                "{% endfor %}",
    "bare.j2": "{{ settings }}\n",
    "os.j2": "{{ os.version }} {{ settings.labels.a | default('-') }}\n",
}
# optional: rendered empty (no motd), the file is not ours and is left out
OPTIONAL = {"empty.j2": "{% if settings.motd is defined %}{{ settings.motd }}\n{% endif %}"}


def catalog(tmp_path: Path, optional: bool = False) -> Catalog:
    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    lines = []
    templates = {**TEMPLATES, **(OPTIONAL if optional else {})}
    for name, text in templates.items():
        (folder / name).write_text(text)
        stem = name.removesuffix(".j2")
        marked = "optional = true\n" if name in OPTIONAL else ""
        lines.append(f'[configuration-files.{stem}]\npath = "/etc/{stem}"\ntemplate = "{name}"\n'
                     + marked)
    names = ", ".join(f'"{n.removesuffix(".j2")}"' for n in templates)
    lines.append(f"[services.s]\nconfiguration-files = [{names}]\n")
    (tmp_path / "metadata.toml").write_text("\n".join(lines))
    return Catalog.load("aws-dev", tmp_path / "metadata.toml", folder)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(0, 2), st.sampled_from([0.0, 1.0]),
                    st.sampled_from(["a", "b"]))
MODELS = st.fixed_dictionaries(
    {},
    optional={
        "motd": SCALARS,
        "ntp": st.fixed_dictionaries({"time-servers": st.lists(st.sampled_from(["x", "y"]),
                                                               max_size=2)}),
        "labels": st.dictionaries(st.sampled_from(["a", "b"]), SCALARS, max_size=2),
        "other": SCALARS,
    },
)


def model(settings_: dict, version: str = "1.0.0") -> dict:
    return {"settings": {k: v for k, v in settings_.items() if v is not None},
            "os": {"version": version}}


@settings(max_examples=150, deadline=None)
@given(st.lists(MODELS, min_size=1, max_size=6))
def test_remembering_never_changes_what_is_rendered(tmp_path_factory, models) -> None:
    cat = catalog(tmp_path_factory.mktemp("cache"))
    remembering = Renderer(cat)
    for each in models:
        fresh = Renderer(cat).render_all(model(each))
        assert remembering.render_all(model(each)) == fresh


# A render is a pass (flat settings given), a dry run (not given) or a partial render (names).
RENDERS = st.tuples(MODELS, st.sampled_from(["pass", "dry-run", "partial"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(RENDERS, min_size=1, max_size=8))
def test_checking_only_the_changed_settings_never_changes_what_is_rendered(
    tmp_path_factory, renders
) -> None:
    """With the flat settings, the renderer compares only the reads the change touches; any
    mix of passes, dry runs and partial renders still renders what a fresh renderer does."""
    cat = catalog(tmp_path_factory.mktemp("cache"), optional=True)
    remembering = Renderer(cat)
    for each, kind in renders:
        whole = model(each)
        live = flatten({"settings": whole["settings"]}) if kind == "pass" else None
        names = ["lookup", "os"] if kind == "partial" else None
        fresh = Renderer(cat).render_all(whole, names)
        assert remembering.render_all(whole, names, live=live) == fresh


def test_a_pass_looks_only_at_what_changed(tmp_path: Path) -> None:
    renderer = Renderer(catalog(tmp_path))
    first = {"motd": "hi", "labels": {"a": 1}}
    renderer.render_all(model(first), live=flatten({"settings": first}))
    second = {**first, "other": "x"}
    renderer.render_all(model(second), live=flatten({"settings": second}))
    assert renderer.reused == 3  # lookup, table, os; "bare" reads everything
    third = {**second, "labels": {"a": 1.0}}
    result = renderer.render_all(model(third), live=flatten({"settings": third}))
    assert renderer.reused == 4  # the change touches labels: table and os render again
    assert result.files["table"].content == b"a=1.0\n"


def test_only_what_a_template_looked_up_makes_it_render_again(tmp_path: Path) -> None:
    renderer = Renderer(catalog(tmp_path))
    renderer.render_all(model({"motd": "hi", "labels": {"a": 1}}))
    assert renderer.reused == 0
    renderer.render_all(model({"motd": "hi", "labels": {"a": 1}, "other": "x"}))
    assert renderer.reused == 3  # lookup, table, os; "bare" reads everything: rendered again
    result = renderer.render_all(model({"motd": "hi", "labels": {"a": 1.0}, "other": "x"}))
    assert renderer.reused == 4  # only lookup.j2 did not look at the labels
    assert result.files["os"].content == b"1.0.0 1.0\n"
    assert result.files["table"].content == b"a=1.0\n"


def test_an_optional_file_rendered_empty_is_remembered_and_stays_out(tmp_path: Path) -> None:
    renderer = Renderer(catalog(tmp_path, optional=True))
    first = {"labels": {"a": 1}}
    assert "empty" not in renderer.render_all(model(first), live=flatten({"settings": first})).files
    second = {"labels": {"a": 2}}
    result = renderer.render_all(model(second), live=flatten({"settings": second}))
    assert "empty" not in result.files
    assert renderer.reused == 2  # lookup and the empty optional file, rendered once
    third = {**second, "motd": "now"}
    result = renderer.render_all(model(third), live=flatten({"settings": third}))
    assert result.files["empty"].content == b"now\n"
