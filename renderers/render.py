"""Render configuration files from the settings model in a Jinja2 sandbox.

Why a sandbox: templates get the whole model and must not reach Python internals or mutate the
model shared between files. Why a custom Undefined: an absent setting must fail with its dotted
key (``'settings.kubernetes.api-server' is not set``), not with Jinja's "dict object has no
attribute"; it stays chainable so ``settings.kubernetes["max-pods"] is defined`` and
``default(...)`` work even when the whole section is absent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from hostcore.keys import InvalidKeyError, join_key, split_key
from renderers.helpers import HELPERS
from renderers.hostfiles import HOST_HELPERS

if TYPE_CHECKING:
    from renderers.catalog import Catalog

TEMPLATES_DIR = Path(__file__).parent / "templates"


class _Node(dict):
    """A settings table that knows its key path, so a missing child can name its dotted key."""

    __slots__ = ("_path",)

    def __init__(self, items: Iterable[tuple[str, Any]], path: tuple[str, ...]) -> None:
        super().__init__(items)
        self._path = path


def _wrap(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, Mapping):
        return _Node(((k, _wrap(v, (*path, k))) for k, v in value.items()), path)
    if isinstance(value, list | tuple):
        return tuple(_wrap(v, path) for v in value)
    return value


def wrap_model(model: Mapping[str, Any]) -> _Node:
    """Prepare a model once per render pass (tables become path-aware, lists tuples)."""
    return _wrap(model, ())


def _dotted(path: tuple[str, ...]) -> str:
    try:
        return join_key(path)
    except ValueError:
        return ".".join(path)


class SettingUndefined(StrictUndefined):
    """Strict on use, chainable on lookup, and its error names the dotted key."""

    __slots__ = ("_key_path",)

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateError] = UndefinedError,
    ) -> None:
        super().__init__(hint, obj, name, exc)
        base: tuple[str, ...] | None = None
        if obj is missing:
            base = ()
        elif isinstance(obj, _Node):
            base = obj._path
        elif isinstance(obj, SettingUndefined):
            base = obj._key_path
        self._key_path = (*base, name) if base is not None and isinstance(name, str) else None

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, name: Any) -> Any:
        return self._child(name)

    def _child(self, name: Any) -> Any:
        # Only a plain missing setting extends its key; a security refusal or any other
        # undefined keeps its own error, so chaining never hides why it failed.
        if self._key_path is None or self._undefined_hint is not None:
            return self
        if not isinstance(name, str) or name[:2] == "__":
            return self
        return type(self)(obj=self, name=name)

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint is None and self._key_path:
            return f"{_dotted(self._key_path)!r} is not set"
        return super()._undefined_message


class _Environment(ImmutableSandboxedEnvironment):
    """Settings tables are looked up by item only: ``settings.items`` is a setting, not a method."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, _Node):
            return self._node_item(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, _Node):
            return self._node_item(obj, argument)
        return super().getitem(obj, argument)

    def _node_item(self, obj: _Node, name: Any) -> Any:
        reads = _READS.paths
        if reads is not None:  # a ``Renderer`` is recording what this template reads
            reads.append((*obj._path, name))
        try:
            return obj[name]
        except (KeyError, TypeError):
            return self.undefined(obj=obj, name=name)


# --- what a template read: rendering again only when it changed ---------------------------------

_READS = threading.local()  # .paths: the model paths the template being rendered looked up
_READS.paths = None
_ABSENT = object()
_ROOTS = ("settings", "os", "host")  # the model's tables (Reconciler.model)
_NOT_CACHEABLE = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def _reads_only_through_lookups(template: Template) -> bool:
    """True when every use of the model in ``template`` is a lookup (``settings.x``,
    ``os["y"]``), with no include or import: then the lookups ``_node_item`` records are all
    it can depend on. A bare ``settings`` (passed whole to a helper, looped over, assigned)
    makes the template's output depend on everything, so it is rendered every time."""
    env, name = template.environment, template.name
    if env.loader is None or name is None:
        return False
    try:
        source = env.loader.get_source(env, name)[0]
        tree = env.parse(source)
    except Exception:
        return False

    def ok(node: nodes.Node, parent: nodes.Node | None) -> bool:
        if isinstance(node, _NOT_CACHEABLE):
            return False
        if isinstance(node, nodes.Name) and node.name in _ROOTS:
            looked_up = isinstance(parent, nodes.Getattr | nodes.Getitem) and parent.node is node
            if not looked_up:
                return False
        return all(ok(child, node) for child in node.iter_child_nodes())

    return ok(tree, None)


def _at(model: Mapping[str, Any], path: tuple[Any, ...]) -> Any:
    value: Any = model
    for part in path:
        if not isinstance(value, Mapping):
            return _ABSENT
        try:
            value = value[part]
        except (KeyError, TypeError):
            return _ABSENT
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types, all the way down: 1, 1.0 and true render differently."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a is b or a == b


def _changed_paths(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> list[tuple[str, ...]] | None:
    """The model paths of the flat settings keys whose values differ (types too); None when a
    key cannot be split (then every read is compared)."""
    try:
        return [
            split_key(key) for key in before.keys() | after.keys()
            if not _same(before.get(key, _ABSENT), after.get(key, _ABSENT))
        ]
    except InvalidKeyError:
        return None


def _touches(path: tuple[Any, ...], changed: list[tuple[str, ...]]) -> bool:
    """True when a changed key lies at, under or above ``path``: the value there changed."""
    return any(path[:len(key)] == key or key[:len(path)] == path for key in changed)


def _still_valid(
    reads: tuple[tuple[tuple[Any, ...], Any], ...],
    model: Mapping[str, Any],
    changed: list[tuple[str, ...]] | None,
) -> bool:
    """Every recorded read holds the same value in ``model``. With ``changed`` (the settings
    paths changed since the last render, for which every remembered read held), a settings
    read no change touches is known to hold and is not compared; ``os`` and ``host`` always are."""
    for path, value in reads:
        if changed is not None and path[0] == "settings" and not _touches(path, changed):
            continue
        if not _same(_at(model, path), value):
            return False
    return True


def make_environment(templates: Path = TEMPLATES_DIR) -> ImmutableSandboxedEnvironment:
    """The one template environment: sandboxed, strict, no autoescape, newlines kept."""
    env = _Environment(
        loader=FileSystemLoader(str(templates)),
        undefined=SettingUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=-1,
    )
    env.globals.update(HELPERS)
    env.globals.update(HOST_HELPERS)
    env.filters.update(HELPERS)
    return env


def compile_templates(templates: Path, names: Iterable[str]) -> dict[str, Template]:
    """Load and compile each named template once; Jinja errors propagate to the caller."""
    env = make_environment(templates)
    return {name: env.get_template(name) for name in sorted(set(names))}


@dataclass(frozen=True)
class Rendered:
    name: str
    path: str
    content: bytes
    mode: int


@dataclass(frozen=True)
class RenderResult:
    """Rendered files and, per file name, why a file could not be rendered."""

    files: Mapping[str, Rendered]
    errors: Mapping[str, str]


def describe_error(exc: BaseException) -> str:
    """A message for the receipt: the missing key, the refused operation, or the helper's reason."""
    if isinstance(exc, SecurityError):
        return f"template tried an unsafe operation: {exc}"
    if isinstance(exc, TemplateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Renderer:
    """Renders a catalog's files; templates compiled once, at construction.

    Why it remembers: a pass renders every file, and most settings changes concern one or two
    of them. For a template whose every read of the model is a lookup, the renderer records
    the paths it looked up (and what was there); the next render reuses the bytes when all of
    them hold the same values (same types too), and renders again otherwise.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        compiled = dict(catalog.compiled)
        wanted = {f.template for f in catalog.files.values()}
        if not wanted <= compiled.keys():
            templates = catalog.templates_dir or TEMPLATES_DIR
            compiled.update(compile_templates(templates, wanted - compiled.keys()))
        self._templates: Mapping[str, Template] = compiled
        self._cacheable = {name: _reads_only_through_lookups(t) for name, t in compiled.items()}
        # file name -> ((path, value) read, bytes rendered from them)
        self._last: dict[str, tuple[tuple[tuple[tuple[Any, ...], Any], ...], bytes]] = {}
        # The pass and a dry run may render at once: one render at a time, so that every
        # remembered file held for the last render's model, whose flat settings are ``_base``
        # (None: unknown, e.g. after a dry run's or a partial render).
        self._lock = threading.Lock()
        self._base: dict[str, Any] | None = None
        self.reused = 0  # files whose bytes were reused (tests, metrics)

    def render_all(
        self,
        model: Mapping[str, Any],
        names: Iterable[str] | None = None,
        live: Mapping[str, Any] | None = None,
    ) -> RenderResult:
        """Render the named files (default: all); one failing template does not stop the others.

        ``model`` is ``{"settings": nested settings, "os": {...}}``. ``live``, when given, is
        the flat form of ``model["settings"]`` (dotted keys under ``settings``, as the store
        holds them): a remembered file is then checked only against the settings that changed
        since the last render, not against every read of its template (a pass changes one or
        two keys of many).
        """
        with self._lock:
            return self._render_all(model, names, live)

    def _render_all(
        self,
        model: Mapping[str, Any],
        names: Iterable[str] | None,
        live: Mapping[str, Any] | None,
    ) -> RenderResult:
        changed = None
        if live is not None and names is None and self._base is not None:
            changed = _changed_paths(self._base, live)
        context: _Node | None = None
        selected = sorted(self._catalog.files if names is None else set(names))
        files: dict[str, Rendered] = {}
        errors: dict[str, str] = {}
        for name in selected:
            spec = self._catalog.files.get(name)
            if spec is None:
                errors[name] = f"unknown configuration file {name!r}"
                continue
            last = self._last.pop(name, None)  # back only if it holds for this model
            if last is not None and _still_valid(last[0], model, changed):
                self._last[name] = last
                self.reused += 1
                if not (spec.optional and not last[1]):  # an empty optional file stays unwritten
                    files[name] = Rendered(name, spec.path, last[1], spec.mode)
                continue
            if context is None:
                context = wrap_model(model)
            cacheable = self._cacheable.get(spec.template, False)
            reads: list[tuple[Any, ...]] = []
            _READS.paths = reads if cacheable else None
            try:
                text = self._templates[spec.template].render(context)
                content = text.encode("utf-8")
            except Exception as exc:  # a template's failure is that file's error, never the pass's
                errors[name] = describe_error(exc)
                continue
            finally:
                _READS.paths = None
            if cacheable:
                seen = tuple((p, _at(model, p)) for p in dict.fromkeys(reads))
                self._last[name] = (seen, content)
            if spec.optional and not content:
                continue  # e.g. /etc/resolv.conf without settings.dns: left to DHCP
            files[name] = Rendered(name, spec.path, content, spec.mode)
        # Every remembered file now holds for this model when all of them were looked at.
        self._base = dict(live) if live is not None and names is None else None
        return RenderResult(files, errors)


__all__ = [
    "Rendered",
    "RenderResult",
    "Renderer",
    "SettingUndefined",
    "compile_templates",
    "make_environment",
    "wrap_model",
]
