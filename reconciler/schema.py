"""The settings schema: JSON Schema files under ``schemas/``, composed per variant.

``schemas/<section>.json`` holds one top-level section each (draft 2020-12), ``schemas/types.json``
the shared value types they ``$ref``, ``schemas/variants.toml`` which sections each variant has and
``schemas/defaults.toml`` the default settings. All of it is data: editors and CI of a fleet
repository validate with the same files (load every ``*.json`` by its ``$id``).

Conventions of the files, relied on here:

* every object has ``additionalProperties: false`` (fixed names) or an ``additionalProperties``
  schema with ``propertyNames`` (maps such as node labels);
* ``x-rule`` is the human-readable rule of a value type (``"a Kubernetes label key: ..."``);
  messages say ``must be <x-rule>`` instead of echoing a regular expression;
* ``x-secret: true`` marks a value to redact (:meth:`Schema.secret_keys`);
* patterns are anchored ``^...$`` and valid in ECMA-262 and Python; a final ``$`` is read as the
  end of the text, as in ECMA-262 (Python's ``$`` would also match before a trailing newline);
* ``integer`` means a JSON integer: ``true`` and ``110.0`` are not integers.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
import threading
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from hostcore.keys import (
    MAX_KEY_BYTES,
    InvalidKeyError,
    check_segment,
    display_segment,
    split_key,
)

PREFIX = "settings"
LIST_ITEMS = "[]"  # in a secret path: every entry of a list (lists are leaves: one key)
SCHEMA_PACKAGE = "schemas"


def _read_text(name: str) -> str:
    return resources.files(SCHEMA_PACKAGE).joinpath(name).read_text(encoding="utf-8")


_VARIANTS_TABLE = tomllib.loads(_read_text("variants.toml"))
_VARIANT_SECTIONS: dict[str, tuple[str, ...]] = {
    name: tuple(spec["sections"]) for name, spec in _VARIANTS_TABLE["variants"].items()
}
VARIANTS: tuple[str, ...] = tuple(sorted(_VARIANT_SECTIONS))
DEFAULT_VARIANT = "aws-dev"
assert DEFAULT_VARIANT in VARIANTS, "schemas/variants.toml lacks the default variant"
_BOTTLEROCKET_NAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rule["pattern"]), rule["family"])
    for rule in _VARIANTS_TABLE.get("bottlerocket-names", [])
)
assert all(f in _VARIANT_SECTIONS for _, f in _BOTTLEROCKET_NAMES), "variants.toml: bad family"
# Bottlerocket sections left out on purpose -> why (refused with that reason).
LEFT_OUT: dict[str, str] = dict(_VARIANTS_TABLE.get("left-out", {}))
VARIANT_HELP = (
    f"{', '.join(VARIANTS)} or a Bottlerocket variant name such as aws-k8s-1.30, aws-ecs-2, "
    "metal-k8s-1.30 or vmware-k8s-1.31"
)


class UnknownVariant(ValueError):
    """A variant name that is neither a family nor a Bottlerocket name; the message is one line."""


def variant_family(variant: str) -> str:
    """The family (a ``[variants.*]`` table) of a variant name: itself, or a Bottlerocket name's.

    Raises :class:`UnknownVariant` naming the valid choices.
    """
    if variant in _VARIANT_SECTIONS:
        return variant
    if isinstance(variant, str):
        for pattern, family in _BOTTLEROCKET_NAMES:
            if pattern.fullmatch(variant):
                return family
    raise UnknownVariant(f"unknown variant {variant!r}; valid variants: {VARIANT_HELP}")


@dataclass(frozen=True, order=True)
class Problem:
    """One broken rule: the full dotted key of the offending value and what is wrong."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class InvalidSettings(ValueError):
    """Settings that break the schema; ``problems`` lists every broken rule."""

    def __init__(self, problems: list[Problem], origin: str | None = None):
        super().__init__(problems, origin)
        self.problems = list(problems)
        self.origin = origin

    def __str__(self) -> str:
        lead = f"{self.origin}: " if self.origin else ""
        if not self.problems:
            return f"{lead}invalid settings"
        return "\n".join(f"{lead}{problem}" for problem in self.problems)


# --- the validator: draft 2020-12 with three adjustments (see the module docstring) -------------

_PATTERN_CACHE: dict[str, re.Pattern[str]] = {}


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    compiled = _PATTERN_CACHE.get(pattern)
    if compiled is None:
        source = pattern
        backslashes = len(source[:-1]) - len(source[:-1].rstrip("\\"))
        if source.endswith("$") and backslashes % 2 == 0:
            source = source[:-1] + r"\Z"
        compiled = _PATTERN_CACHE[pattern] = re.compile(source)
    return compiled


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _compile_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _property_names(validator, names, instance, schema):
    # As the standard keyword, but errors point at the offending name (path=name).
    # Names that are not strings are left to the key-segment check (they cannot be keys).
    if validator.is_type(instance, "object"):
        for name in instance:
            if isinstance(name, str):
                yield from validator.descend(instance=name, schema=names, path=name)


_TYPES = (
    Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)
    )
    .redefine("object", lambda _, v: isinstance(v, Mapping))
    .redefine("array", lambda _, v: isinstance(v, list | tuple))
)
_Validator = validators.extend(
    Draft202012Validator,
    {"pattern": _pattern, "propertyNames": _property_names},
    type_checker=_TYPES,
)
_FORMATS = Draft202012Validator.FORMAT_CHECKER


class _Files:
    """Every schema file of the package, read once, in one referencing.Registry."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}  # file stem -> contents
        resources_ = []
        for entry in sorted(resources.files(SCHEMA_PACKAGE).iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                contents = json.loads(entry.read_text(encoding="utf-8"))
                _Validator.check_schema(contents)
                self.documents[entry.name[: -len(".json")]] = contents
                resources_.append((contents["$id"], DRAFT202012.create_resource(contents)))
        self.registry: Registry = Registry().with_resources(resources_)
        self.defaults: dict[str, Any] = tomllib.loads(_read_text("defaults.toml"))["settings"]
        self._validators: dict[str, Any] = {}
        self._secrets: dict[str, tuple[tuple[str, ...], ...]] = {}
        self._lock = threading.Lock()

    def section(self, name: str) -> dict[str, Any]:
        try:
            return self.documents[name]
        except KeyError:
            raise RuntimeError(f"schemas/{name}.json is missing") from None

    def validator(self, name: str):
        found = self._validators.get(name)
        if found is None:
            with self._lock:
                found = self._validators.get(name)
                if found is None:
                    found = _Validator(
                        self.section(name), registry=self.registry, format_checker=_FORMATS
                    )
                    self._validators[name] = found
        return found

    def secret_paths(self, name: str) -> tuple[tuple[str, ...], ...]:
        """Paths (``*`` = any map entry) below section ``name`` whose values are secret."""
        found = self._secrets.get(name)
        if found is None:
            schema = self.section(name)
            resolver = self.registry.resolver(base_uri=schema["$id"])
            found = tuple(self._walk_secrets(schema, resolver, (name,), 0))
            self._secrets[name] = found
        return found

    def _walk_secrets(self, schema, resolver, path, depth) -> Iterator[tuple[str, ...]]:
        if not isinstance(schema, Mapping) or depth > 32:
            return
        if schema.get("x-secret"):
            yield path
            return
        if "$ref" in schema:
            resolved = resolver.lookup(schema["$ref"])
            yield from self._walk_secrets(resolved.contents, resolved.resolver, path, depth + 1)
        for child, sub in schema.get("properties", {}).items():
            yield from self._walk_secrets(sub, resolver, (*path, child), depth + 1)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            yield from self._walk_secrets(extra, resolver, (*path, "*"), depth + 1)
        items = schema.get("items")
        if isinstance(items, Mapping):  # a secret inside list entries: the list's key is secret
            yield from self._walk_secrets(items, resolver, (*path, LIST_ITEMS), depth + 1)

    def defines(self, name: str, below: tuple[str, ...]) -> bool:
        """Whether section ``name``'s schema allows a value at the path ``below`` inside it."""
        schema = self.section(name)
        return _allows(schema, self.registry.resolver(base_uri=schema["$id"]), below, 0)


_COMBINATORS = ("allOf", "anyOf", "oneOf")


def _allows(schema: Any, resolver: Any, below: tuple[str, ...], depth: int) -> bool:
    """Whether a JSON Schema lets a document hold something at the path ``below``."""
    if not below:
        return schema is not False
    if schema is True:
        return True
    if not isinstance(schema, Mapping) or depth > 64:
        return False
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        if _allows(resolved.contents, resolved.resolver, below, depth + 1):
            return True
    branches = [b for c in _COMBINATORS for b in schema.get(c, ())]
    branches += [schema[k] for k in ("then", "else") if k in schema]
    if any(_allows(b, resolver, below, depth + 1) for b in branches):
        return True
    name, rest = below[0], below[1:]
    properties = schema.get("properties", {})
    if name in properties:
        return _allows(properties[name], resolver, rest, depth + 1)
    for pattern, sub in schema.get("patternProperties", {}).items():
        if _compile_pattern(pattern).search(name) and _allows(sub, resolver, rest, depth + 1):
            return True
    extra = schema.get("additionalProperties")
    if extra is None:  # unconstrained only where the schema describes an object at all
        return schema.get("type") == "object" and not properties
    return _allows(extra, resolver, rest, depth + 1)


_files: _Files | None = None
_files_lock = threading.Lock()


def _schema_files() -> _Files:
    global _files
    if _files is None:
        with _files_lock:
            if _files is None:
                _files = _Files()
    return _files


# --- keys and messages ---------------------------------------------------------------------------


def display_key(segments: Iterable[Any]) -> str:
    """The dotted key of a path below ``settings``, quoting names that are not valid segments."""
    return ".".join([PREFIX, *(display_segment(s) for s in segments)])


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "object": "a table",
    "array": "a list",
    "null": "null",
}
_RULED = {
    "anyOf", "oneOf",
    "type", "pattern", "format", "enum", "const", "not", "minLength", "maxLength",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
}  # fmt: skip


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: quote it escaped, or no message could carry it
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _keyword_message(error: ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    keyword, value = error.validator, error.validator_value
    rule = schema.get("x-rule")
    if rule and keyword in _RULED:
        return f"must be {rule}"
    if keyword == "type":
        expected = [value] if isinstance(value, str) else list(value)
        return "must be " + " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
    if keyword == "enum":
        return "must be one of " + ", ".join(_short(v) for v in value)
    if keyword == "const":
        return f"must be {_short(value)}"
    if keyword == "minimum":
        return f"must be at least {value}"
    if keyword == "maximum":
        return f"must be at most {value}"
    if keyword == "exclusiveMinimum":
        return f"must be more than {value}"
    if keyword == "exclusiveMaximum":
        return f"must be less than {value}"
    if keyword == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters long"
    if keyword == "maxLength":
        return f"must be at most {value} characters long"
    if keyword == "minItems":
        return f"must have at least {value} entries"
    if keyword == "maxItems":
        return f"must have at most {value} entries"
    if keyword == "uniqueItems":
        return "must not repeat an entry"
    if keyword == "pattern":
        return f"must match the pattern {value}"
    if keyword == "format":
        return f"must be a valid {value}"
    return error.message


def _unknown_message(name: Any, allowed: Iterable[str], path: tuple[Any, ...]) -> str:
    allowed = sorted(allowed)
    if not isinstance(name, str):
        return f"unknown setting (a name must be a string, not {type(name).__name__})"
    folded = {a.lower(): a for a in allowed}
    match = folded.get(name.lower())
    if match is None:
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        match = close[0] if close else None
    if match is not None:
        return f"unknown setting; did you mean '{display_key((*path, match))}'?"
    if allowed:
        names = ", ".join(f"'{display_key((*path, a))}'" for a in allowed[:12])
        more = ", ..." if len(allowed) > 12 else ""
        return f"unknown setting; valid names here: {names}{more}"
    return "unknown setting"


def _matches(pattern: tuple[str, ...], path: tuple[Any, ...]) -> bool:
    """True when ``path`` is at or below ``pattern`` (``*`` matching any map entry)."""
    head = path[: len(pattern)]
    return len(head) == len(pattern) and all(
        p in ("*", n) for p, n in zip(pattern, head, strict=True)
    )


# --- the schema of a variant ---------------------------------------------------------------------


class Schema:
    """The settings schema of one variant. Get it with :meth:`Schema.load` (cached)."""

    _cache: dict[str, Schema] = {}
    _cache_lock = threading.Lock()

    variant: str
    family: str
    sections: tuple[str, ...]

    def __init__(self, variant: str, sections: tuple[str, ...], files: _Files):
        self.variant = variant
        self.family = variant_family(variant)
        self.sections = sections
        self._section_set = frozenset(sections)
        self._files = files
        self._defaults: dict[str, Any] | None = None
        self._defaults_json: str | None = None  # the same as JSON, when it is JSON
        for section in sections:  # compile every validator now: fail at load, not mid-request
            files.validator(section)
            files.secret_paths(section)

    def __repr__(self) -> str:
        return f"Schema(variant={self.variant!r}, sections={self.sections!r})"

    @classmethod
    def load(cls, variant: str = DEFAULT_VARIANT) -> Schema:
        found = cls._cache.get(variant)
        if found is not None:
            return found
        family = variant_family(variant)
        with cls._cache_lock:
            found = cls._cache.get(variant)
            if found is None:
                found = cls(variant, _VARIANT_SECTIONS[family], _schema_files())
                cls._cache[variant] = found
        return found

    # validation

    def validate(
        self, settings: Mapping[str, Any], sections: Iterable[str] | None = None
    ) -> list[Problem]:
        """Every problem of ``settings`` (the inside of the ``settings`` table), sorted.

        With ``sections``, only those top-level sections are validated; names that are not
        sections of this variant are reported whatever ``sections`` says.
        """
        if not isinstance(settings, Mapping):
            return [Problem(PREFIX, f"must be a table of settings, not {_short(settings)}")]
        wanted = self._section_set if sections is None else frozenset(sections)
        problems: set[Problem] = set()
        for name in settings:
            if name not in self._section_set:
                problems.add(Problem(display_key((name,)), self._unknown_section(name)))
        for name in self.sections:
            if name in wanted and name in settings:
                problems.update(self._validate_section(name, settings[name]))
        return sorted(problems)

    def check(
        self,
        settings: Mapping[str, Any],
        sections: Iterable[str] | None = None,
        origin: str | None = None,
    ) -> None:
        """Raise :class:`InvalidSettings` when :meth:`validate` finds any problem."""
        problems = self.validate(settings, sections)
        if problems:
            raise InvalidSettings(problems, origin)

    def _unknown_section(self, name: Any) -> str:
        if name in LEFT_OUT:
            return (
                f"not supported: Bottlerocket's '{name}' section is left out here; "
                f"it {LEFT_OUT[name]} (see schemas/README.md)"
            )
        owners = [v for v in VARIANTS if name in _VARIANT_SECTIONS[v]]
        if owners:
            return (
                f"unknown setting: '{name}' is not part of variant {self.variant} "
                f"(it is part of {', '.join(owners)})"
            )
        return _unknown_message(name, self.sections, ())

    def _validate_section(self, section: str, value: Any) -> set[Problem]:
        problems: set[Problem] = set()
        for error in self._files.validator(section).iter_errors(value):
            problems.update(self._convert(section, value, error))
        flagged = {p.key for p in problems}
        checks = [_value_problems(value, (section,))]
        if isinstance(value, Mapping):
            checks.append(_name_problems(value, (section,)))
        for found in checks:
            for problem in found:
                if problem.key not in flagged:
                    problems.add(problem)
        return problems

    def _convert(self, section: str, value: Any, error: ValidationError) -> Iterator[Problem]:
        names, item = _split_path(section, value, error.absolute_path)
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        if error.validator == "additionalProperties" and error.validator_value is False:
            allowed = schema.get("properties", {})
            for extra in error.instance:
                if extra not in allowed:
                    message = _unknown_message(extra, allowed, names)
                    yield Problem(display_key((*names, extra)), message)
            return
        if error.validator == "required":
            for missing in error.validator_value:
                if missing not in error.instance:
                    yield Problem(display_key((*names, missing)), "required setting is missing")
            return
        message = _keyword_message(error)
        if "propertyNames" in error.absolute_schema_path:
            message = f"invalid name: {message}"
        elif not isinstance(error.instance, Mapping | list | tuple) and not self._is_secret(names):
            message = f"{message} (got {_short(error.instance)})"
        if item is not None:
            message = f"item {item}: {message}"
        yield Problem(display_key(names), message)

    def _is_secret(self, path: tuple[Any, ...]) -> bool:
        # a path into a list stops at the list's key: any secret inside makes the list secret
        return any(
            _matches(p[: p.index(LIST_ITEMS)] if LIST_ITEMS in p else p, path)
            for p in self._files.secret_paths(path[0])
        )

    # the rest of the public API

    def defaults(self) -> dict[str, Any]:
        """Nested default settings (inside ``settings``) of this variant's sections."""
        if self._defaults is None:
            chosen = {k: v for k, v in self._files.defaults.items() if k in self._section_set}
            problems = self.validate(chosen)
            if problems:
                raise InvalidSettings(problems, "schemas/defaults.toml")
            self._defaults = chosen
            try:  # a JSON round trip copies in C: each PATCH and commit asks for a copy
                text = json.dumps(chosen)
                self._defaults_json = text if json.loads(text) == chosen else None
            except (TypeError, ValueError):
                self._defaults_json = None
        if self._defaults_json is not None:
            return json.loads(self._defaults_json)
        return copy.deepcopy(self._defaults)

    def secret_keys(self, settings: Mapping[str, Any]) -> set[str]:
        """Full dotted keys of the values in ``settings`` that the schema marks secret."""
        found: set[str] = set()
        if not isinstance(settings, Mapping):
            return found
        for section in self.sections:
            if section not in settings:
                continue
            for pattern in self._files.secret_paths(section):
                _collect(settings[section], pattern[1:], (section,), found)
        return found

    def secret_strings(self, settings: Mapping[str, Any]) -> set[str]:
        """The secret values themselves (strings) in ``settings``, for scrubbing free text.

        Unlike :meth:`secret_keys`, this goes inside lists: only the marked fields of each entry
        (a registry credential's password, not its registry name) are secret text.
        """
        found: set[str] = set()
        if not isinstance(settings, Mapping):
            return found
        for section in self.sections:
            if section in settings:
                for pattern in self._files.secret_paths(section):
                    _collect_strings(settings[section], pattern[1:], found)
        return found

    def secret_sections(self) -> tuple[str, ...]:
        """The sections that hold at least one secret setting (where to look for secrets)."""
        return tuple(s for s in self.sections if self._files.secret_paths(s))

    def defines(self, key: str) -> bool:
        """Whether ``key`` (``settings.<section>...``) is a setting, or a table of settings, that
        this variant's schema allows: what renderer metadata's affected-by prefixes must name."""
        try:
            segments = split_key(key)
        except InvalidKeyError:
            return False
        if segments[0] != PREFIX:
            return False
        if len(segments) == 1:
            return True
        if segments[1] not in self._section_set:
            return False
        return self._files.defines(segments[1], segments[2:])

    def section_schema(self, section: str) -> dict:
        """A copy of the JSON Schema of one section of this variant."""
        if section not in self._section_set:
            raise KeyError(
                f"{section!r} is not a section of variant {self.variant} "
                f"(sections: {', '.join(self.sections)})"
            )
        return copy.deepcopy(self._files.section(section))


def _split_path(section: str, value: Any, path: Iterable[Any]) -> tuple[tuple[Any, ...], Any]:
    """(names down to the key, index in the list value or None) of an error's instance path."""
    names: list[Any] = [section]
    node = value
    for step in path:
        if isinstance(node, list | tuple):
            return tuple(names), step  # lists are leaves: the key is the list's
        names.append(step)
        node = node.get(step) if isinstance(node, Mapping) else None
    return tuple(names), None


def _collect(node: Any, pattern: tuple[str, ...], path: tuple[Any, ...], found: set[str]) -> None:
    if not pattern:
        if isinstance(node, Mapping):
            for name, child in node.items():
                _collect(child, (), (*path, name), found)
        else:
            found.add(display_key(path))
        return
    if pattern[0] == LIST_ITEMS:  # a leaf (the list, or a stand-in value) at a list's key
        if not isinstance(node, Mapping):
            found.add(display_key(path))
        return
    if not isinstance(node, Mapping):
        return
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        for name, child in node.items():
            _collect(child, rest, (*path, name), found)
    elif head in node:
        _collect(node[head], rest, (*path, head), found)


def _collect_strings(node: Any, pattern: tuple[str, ...], found: set[str]) -> None:
    if not pattern:
        stack = [node]
        while stack:
            value = stack.pop()
            if isinstance(value, Mapping):
                stack.extend(value.values())
            elif isinstance(value, list | tuple):
                stack.extend(value)
            elif isinstance(value, str):
                found.add(value)
            elif value is not None and not isinstance(value, bool):
                found.add(str(value))
        return
    head, rest = pattern[0], pattern[1:]
    if head == LIST_ITEMS:
        if isinstance(node, list | tuple):
            for entry in node:
                _collect_strings(entry, rest, found)
    elif isinstance(node, Mapping):
        for name, child in node.items():
            if head in ("*", name):
                _collect_strings(child, rest, found)


def _name_problems(node: Mapping[str, Any], path: tuple[Any, ...]) -> Iterator[Problem]:
    """Names that cannot be key segments, and keys longer than the datastore allows."""
    for name, child in node.items():
        here = (*path, name)
        if not isinstance(name, str):
            yield Problem(display_key(here), f"a name must be a string, not {type(name).__name__}")
            continue
        try:
            check_segment(name)
        except InvalidKeyError as exc:
            yield Problem(display_key(here), f"invalid name: {exc}")
            continue
        key = display_key(here)
        if len(key.encode()) > MAX_KEY_BYTES:
            yield Problem(key, f"key is longer than {MAX_KEY_BYTES} bytes")
        elif isinstance(child, Mapping):
            yield from _name_problems(child, here)


def _text_problem(text: str) -> str | None:
    """Why a string cannot be a setting: a NUL ends it for every C program and command line;
    a lone surrogate (JSON ``"\\ud800"``) cannot be written as UTF-8, so no file could hold it."""
    if "\0" in text:
        return "must not contain a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"must be valid Unicode text (character {exc.start}, "
            f"{text[exc.start]!r}, is a lone surrogate, which UTF-8 cannot encode)"
        )
    return None


def _value_problems(node: Any, path: tuple[Any, ...], item: int | None = None
                    ) -> Iterator[Problem]:
    """Values no schema keyword catches: NaN and Infinity (every comparison with NaN is false,
    so ``minimum`` and ``maximum`` pass it), NUL characters and lone surrogates, in values and
    in names. Lists are leaves: their problems name the list's key and the item."""
    where = "" if item is None else f"item {item}: "
    if isinstance(node, float) and not math.isfinite(node):
        yield Problem(display_key(path), f"{where}must be a finite number (got {node})")
    elif isinstance(node, str):
        reason = _text_problem(node)
        if reason:
            yield Problem(display_key(path), f"{where}{reason}")
    elif isinstance(node, Mapping):
        for name, child in node.items():
            reason = _text_problem(name) if isinstance(name, str) else None
            if reason and item is None:
                yield Problem(display_key((*path, name.encode("ascii", "backslashreplace")
                                           .decode("ascii"))), f"invalid name: {reason}")
                continue
            yield from _value_problems(child, path if item is not None else (*path, name), item)
    elif isinstance(node, list | tuple):
        for index, child in enumerate(node):
            yield from _value_problems(child, path, index if item is None else item)
