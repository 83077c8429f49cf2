"""The catalog of configuration files and services, loaded from ``renderers/metadata.toml``.

Why checked at load: Bottlerocket's chronyd/ntp name mismatch went unnoticed for two years. Every
reference (service -> file, file -> template, affected-by -> settings key) is resolved here, so a
dangling name is an error at start-up, never a silent no-op during a pass. Settings keys belong to
the schema, which this package does not import: ``Catalog.load(defines=schema.defines)`` checks
affected-by prefixes against it.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jinja2 import Template, TemplateError

from hostcore.keys import InvalidKeyError, is_under, join_key, split_key
from renderers.render import TEMPLATES_DIR, make_environment

METADATA_PATH = Path(__file__).parent / "metadata.toml"
DISTRIBUTIONS = "distributions"  # beside metadata.toml: <name>.toml, facts of one distribution
DEFAULT_TIMEOUT = 60.0
_MODE = re.compile(r"0?[0-7]{3}")
_UNIT = re.compile(r"[A-Za-z0-9:_.\\@-]+\.(service|socket|target|timer|path|mount)")

_FILE_KEYS = {"path", "template", "mode", "variants", "optional"}
_SERVICE_KEYS = {
    "configuration-files", "affected-by", "restart-commands", "reload-commands", "timeout",
    "sandbox-safe", "variants", "unit",
}
# What a distribution file may change: where a program reads its file, and how it picks it up.
_OVERLAY_KEYS = {
    "configuration-files": {"path", "mode"},
    "services": {"unit", "restart-commands", "reload-commands", "timeout"},
}


class CatalogError(ValueError):
    """Renderer metadata is inconsistent; names the metadata file, the entry and the reason."""

    def __init__(self, source: Path | str, entry: str, reason: str) -> None:
        super().__init__(f"{source}: {entry}: {reason}")
        self.source, self.entry, self.reason = str(source), entry, reason


@dataclass(frozen=True)
class ConfigFile:
    name: str
    path: str
    template: str
    mode: int
    variants: tuple[str, ...] | None = None
    optional: bool = False  # rendered empty = not ours to manage (left as it is on disk)


@dataclass(frozen=True)
class Service:
    name: str
    configuration_files: tuple[str, ...] = ()
    affected_by: tuple[str, ...] = ()
    restart_commands: tuple[tuple[str, ...], ...] = ()
    reload_commands: tuple[tuple[str, ...], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    sandbox_safe: bool = False
    variants: tuple[str, ...] | None = None
    unit: str | None = None  # the systemd unit the commands act on (None: no unit)

    @property
    def commands(self) -> tuple[tuple[str, ...], ...]:
        """What applying a change runs: the reload commands when declared, else the restarts."""
        return self.reload_commands or self.restart_commands


def _in_variant(variants: tuple[str, ...] | None, variant: str) -> bool:
    return variants is None or variant in variants


@dataclass(frozen=True)
class Catalog:
    """Files and services of one variant, cross-checked; ``compiled`` caches its templates."""

    files: Mapping[str, ConfigFile]
    services: Mapping[str, Service]
    variant: str = ""
    templates_dir: Path | None = None
    distribution: str | None = None  # the distributions/<name>.toml applied, if any
    compiled: Mapping[str, Template] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    @classmethod
    def load(
        cls,
        variant: str,
        metadata: Path | None = None,
        templates: Path | None = None,
        known_variants: Iterable[str] | None = None,
        defines: Callable[[str], bool] | None = None,
        distributions: Iterable[str] = (),
    ) -> Catalog:
        """Parse, check and filter the metadata for ``variant``; raise CatalogError if wrong.

        ``known_variants`` (e.g. from ``schemas/``) additionally rejects unknown variant names;
        ``defines`` (the variant's ``Schema.defines``) rejects an affected-by prefix that names
        no setting of the variant, so a typo such as ``settings.mtod`` is a start-up error
        instead of a service that silently never restarts.
        ``distributions`` (the host's os-release ID, then its ID_LIKE) picks the first
        ``distributions/<name>.toml`` beside the metadata that exists, and applies its facts
        (paths, units, pick-up commands) over the entries it names.
        """
        source = metadata or METADATA_PATH
        templates_dir = templates or TEMPLATES_DIR
        document = _read_toml(source)
        unknown = set(document) - {"configuration-files", "services"}
        if unknown:
            raise CatalogError(source, "metadata", f"unknown top-level tables {sorted(unknown)}")
        distribution = _apply_distribution(source, document, distributions)

        files = {n: _parse_file(source, n, e)
                 for n, e in _table(source, document, "configuration-files").items()}
        services = {n: _parse_service(source, n, e)
                    for n, e in _table(source, document, "services").items()}
        _check_variants(source, variant, files, services, known_variants)
        _check_references(source, files, services)
        _check_paths(source, files)

        files = {n: f for n, f in files.items() if _in_variant(f.variants, variant)}
        services = {n: s for n, s in services.items() if _in_variant(s.variants, variant)}
        _check_variant_references(source, variant, files, services)
        if defines is not None:
            _check_affected_by(source, variant, services, defines)
        compiled = _compile(source, templates_dir, files)
        return cls(
            MappingProxyType(dict(sorted(files.items()))),
            MappingProxyType(dict(sorted(services.items()))),
            variant,
            templates_dir,
            distribution,
            MappingProxyType(compiled),
        )

    def affected_services(self, keys: Iterable[str]) -> dict[str, list[str]]:
        """``{key: sorted service names}`` for keys that concern a service; others omitted.

        A key concerns a service when one of its affected-by prefixes covers the key, or the key
        is a prefix of it (a whole subtree was set or deleted).
        """
        result: dict[str, list[str]] = {}
        for key in keys:
            names = sorted(
                service.name
                for service in self.services.values()
                if any(is_under(key, p) or is_under(p, key) for p in service.affected_by)
            )
            if names:
                result[key] = names
        return result

    def services_for_files(self, file_names: Iterable[str]) -> set[str]:
        """Names of the services fed by any of the given files."""
        wanted = set(file_names)
        return {s.name for s in self.services.values() if wanted & set(s.configuration_files)}


# --- parsing ------------------------------------------------------------------------------------


def _read_toml(source: Path) -> dict[str, Any]:
    try:
        with open(source, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(source, "metadata", f"cannot read: {exc}") from exc


def _apply_distribution(
    source: Path, document: dict[str, Any], names: Iterable[str]
) -> str | None:
    """Merge the first existing ``distributions/<name>.toml`` into ``document`` (in place).

    Why a separate file: the catalog's paths are Bottlerocket's (``/etc/chrony.conf``); Debian's
    chronyd reads ``/etc/chrony/chrony.conf`` and its unit is ``chrony.service``. Such facts are
    configuration of the host, not of the renderer. Every entry named must exist in the metadata
    and may change only the fields in ``_OVERLAY_KEYS``.
    """
    for name in names:
        if not name or "/" in name or name.startswith("."):
            continue
        overlay_path = Path(source).parent / DISTRIBUTIONS / f"{name}.toml"
        if not overlay_path.is_file():
            continue
        overlay = _read_toml(overlay_path)
        for table, entries in overlay.items():
            if table not in _OVERLAY_KEYS:
                raise CatalogError(overlay_path, table, f"unknown table; allowed: "
                                   f"{sorted(_OVERLAY_KEYS)}")
            if not isinstance(entries, Mapping):
                raise CatalogError(overlay_path, table, "must be a table")
            for entry, fields in entries.items():
                base = document.get(table, {}).get(entry)
                if not isinstance(base, dict):
                    raise CatalogError(overlay_path, f"{table}.{entry}",
                                       f"no such entry in {source}")
                if not isinstance(fields, Mapping):
                    raise CatalogError(overlay_path, f"{table}.{entry}", "must be a table")
                _unknown_keys(overlay_path, f"{table}.{entry}", fields, _OVERLAY_KEYS[table])
                base.update(fields)
        return name
    return None


def _table(source: Path, document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = document.get(name, {})
    if not isinstance(table, Mapping):
        raise CatalogError(source, name, "must be a table")
    for entry, value in table.items():
        if not isinstance(value, Mapping):
            raise CatalogError(source, f"{name}.{entry}", "must be a table")
    return table


def _unknown_keys(source: Path, entry: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise CatalogError(source, entry, f"unknown field(s) {extra}; allowed: {sorted(allowed)}")


def _variants(source: Path, entry: str, raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) and v for v in raw):
        raise CatalogError(source, entry, "variants must be a non-empty list of names")
    return tuple(raw)


def _mode(source: Path, entry: str, raw: Any) -> int:
    if isinstance(raw, str) and _MODE.fullmatch(raw):
        return int(raw, 8)
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 0o777:
        return raw
    raise CatalogError(source, entry, f"mode {raw!r} is not an octal permission like \"0644\"")


def _parse_file(source: Path, name: str, raw: Mapping[str, Any]) -> ConfigFile:
    entry = f"configuration-files.{name}"
    _unknown_keys(source, entry, raw, _FILE_KEYS)
    path, template = raw.get("path"), raw.get("template")
    if not isinstance(path, str) or not path:
        raise CatalogError(source, entry, "path is required (an absolute path string)")
    if not isinstance(template, str) or not template:
        raise CatalogError(source, entry, "template is required (a file under templates/)")
    if template.startswith("/") or ".." in template.split("/"):
        raise CatalogError(source, entry, f"template {template!r} must be relative, without '..'")
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise CatalogError(source, entry, "optional must be true or false")
    return ConfigFile(
        name, path, template, _mode(source, entry, raw.get("mode", "0644")),
        _variants(source, entry, raw.get("variants")), optional,
    )


def _commands(source: Path, entry: str, field_name: str, raw: Any) -> tuple[tuple[str, ...], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(
        isinstance(argv, list) and argv and all(isinstance(a, str) and a for a in argv)
        for argv in raw
    ):
        raise CatalogError(
            source, entry, f"{field_name} must be a list of argv lists of non-empty strings"
        )
    return tuple(tuple(argv) for argv in raw)


def _parse_service(source: Path, name: str, raw: Mapping[str, Any]) -> Service:
    entry = f"services.{name}"
    _unknown_keys(source, entry, raw, _SERVICE_KEYS)
    files = raw.get("configuration-files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise CatalogError(source, entry, "configuration-files must be a list of names")
    if len(set(files)) != len(files):
        raise CatalogError(source, entry, "configuration-files lists a file twice")
    affected = raw.get("affected-by", [])
    if not isinstance(affected, list):
        raise CatalogError(source, entry, "affected-by must be a list of settings keys")
    prefixes = []
    for key in affected:
        try:
            segments = split_key(key)
        except (InvalidKeyError, TypeError) as exc:
            raise CatalogError(source, entry, f"affected-by {key!r}: {exc}") from exc
        if segments[0] != "settings":
            raise CatalogError(source, entry, f"affected-by {key!r} is not under 'settings'")
        prefixes.append(join_key(segments))
    timeout = raw.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise CatalogError(source, entry, f"timeout {timeout!r} must be a positive number")
    sandbox_safe = raw.get("sandbox-safe", False)
    if not isinstance(sandbox_safe, bool):
        raise CatalogError(source, entry, "sandbox-safe must be true or false")
    unit = raw.get("unit")
    if unit is not None and (not isinstance(unit, str) or not _UNIT.fullmatch(unit)):
        raise CatalogError(source, entry, f"unit {unit!r} is not a systemd unit name "
                           "like \"chronyd.service\"")
    return Service(
        name,
        tuple(files),
        tuple(prefixes),
        _commands(source, entry, "restart-commands", raw.get("restart-commands")),
        _commands(source, entry, "reload-commands", raw.get("reload-commands")),
        float(timeout),
        sandbox_safe,
        _variants(source, entry, raw.get("variants")),
        unit,
    )


# --- cross-checks -------------------------------------------------------------------------------


def _check_variants(
    source: Path,
    variant: str,
    files: Mapping[str, ConfigFile],
    services: Mapping[str, Service],
    known: Iterable[str] | None,
) -> None:
    if not variant:
        raise CatalogError(source, "variant", "a variant name is required")
    if known is None:
        return
    known_set = set(known)
    if variant not in known_set:
        raise CatalogError(source, "variant", f"unknown variant {variant!r}")
    entries: list[tuple[str, tuple[str, ...] | None]] = [
        (f"configuration-files.{n}", f.variants) for n, f in files.items()
    ] + [(f"services.{n}", s.variants) for n, s in services.items()]
    for entry, variants in entries:
        for name in variants or ():
            if name not in known_set:
                raise CatalogError(source, entry, f"unknown variant {name!r}")


def _check_references(
    source: Path, files: Mapping[str, ConfigFile], services: Mapping[str, Service]
) -> None:
    """Across all variants: every service's file exists."""
    for service in services.values():
        for name in service.configuration_files:
            if name not in files:
                raise CatalogError(
                    source, f"services.{service.name}",
                    f"configuration file {name!r} is not defined in [configuration-files]",
                )


def _check_paths(source: Path, files: Mapping[str, ConfigFile]) -> None:
    """Absolute, normalized, no '..', no two files on one path or one inside another."""
    seen: dict[str, str] = {}
    for spec in files.values():
        entry = f"configuration-files.{spec.name}"
        path = spec.path
        if (
            not path.startswith("/")
            or path.startswith("//")
            or posixpath.normpath(path) != path
            or ".." in path.split("/")
            or path == "/"
            or "\x00" in path
        ):
            raise CatalogError(
                source, entry, f"path {path!r} must be absolute, normalized and without '..'"
            )
        if path in seen:
            raise CatalogError(source, entry, f"path {path} is also the path of {seen[path]!r}")
        seen[path] = spec.name
    for path, name in seen.items():
        parent = posixpath.dirname(path)
        while parent != "/":
            if parent in seen:
                raise CatalogError(
                    source, f"configuration-files.{name}",
                    f"path {path} lies inside the file {parent} of {seen[parent]!r}",
                )
            parent = posixpath.dirname(parent)


def _check_variant_references(
    source: Path, variant: str, files: Mapping[str, ConfigFile], services: Mapping[str, Service]
) -> None:
    """Within the variant: services' files are present, every file is fed by a service."""
    fed: set[str] = set()
    for service in services.values():
        for name in service.configuration_files:
            if name not in files:
                raise CatalogError(
                    source, f"services.{service.name}",
                    f"configuration file {name!r} does not exist in variant {variant!r}",
                )
            fed.add(name)
    for name in files:
        if name not in fed:
            raise CatalogError(
                source, f"configuration-files.{name}",
                f"no service in variant {variant!r} lists this file in configuration-files",
            )


def _check_affected_by(
    source: Path, variant: str, services: Mapping[str, Service], defines: Callable[[str], bool]
) -> None:
    """Within the variant: every affected-by prefix names a setting its schema allows."""
    for service in services.values():
        for prefix in service.affected_by:
            if not defines(prefix):
                raise CatalogError(
                    source, f"services.{service.name}",
                    f"affected-by {prefix!r} is not a setting of variant {variant!r} "
                    "(the schema under schemas/ defines none there)",
                )


def _compile(
    source: Path, templates_dir: Path, files: Mapping[str, ConfigFile]
) -> dict[str, Template]:
    env = make_environment(templates_dir)
    compiled: dict[str, Template] = {}
    for spec in sorted(files.values(), key=lambda f: f.name):
        if spec.template in compiled:
            continue
        if not (templates_dir / spec.template).is_file():
            raise CatalogError(
                source, f"configuration-files.{spec.name}",
                f"template {spec.template!r} not found in {templates_dir}",
            )
        try:
            compiled[spec.template] = env.get_template(spec.template)
        except TemplateError as exc:
            where = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
            raise CatalogError(
                source, f"configuration-files.{spec.name}",
                f"template {spec.template!r} does not compile{where}: {exc}",
            ) from exc
    return compiled
