"""Desired-state documents (user data, files of the fleet repository): parse, check, extract.

A document is TOML, YAML or JSON, optionally gzip-compressed (detected by its magic bytes), whose
top level is a table. Only its ``settings`` table matters; everything else is ignored. The result
is always plain JSON data (dict, list, str, int, float, bool, None) with string keys: dates,
times, NaN and other values JSON cannot carry are refused with the key that holds them.

The one parser of settings documents: user data, the fleet repository, desired-state files and
``apiclient apply`` all read through it, so they accept and refuse the same documents with the
same messages. Standard library only (ruamel.yaml is imported for YAML alone, when needed).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import stat
import sys
import tomllib
import zlib
from collections.abc import Iterable, Mapping

from hostcore.keys import display_segment

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at apiclient's start-up; annotations are strings
    from typing import Any

GZIP_MAGIC = b"\x1f\x8b"
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024  # after decompression
MAX_DEPTH = 64  # nested tables and lists (keys are at most 255 bytes anyway)
MAX_VALUES = 1_000_000  # values once YAML aliases are expanded: a "billion laughs" stops here
STDIN = "-"
STDIN_ORIGIN = "<stdin>"
_FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


class DocumentError(ValueError):
    """A document that cannot be used: ``str()`` is ``"<origin>: [line L, column C: ]<reason>"``."""

    def __init__(
        self,
        origin: str,
        reason: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ):
        super().__init__(origin, reason, line, column)
        self.origin = origin
        self.reason = reason
        self.line = line
        self.column = column

    @property
    def detail(self) -> str:
        """The message without the origin."""
        where = ""
        if self.line is not None:
            where = f"line {self.line}" + (f", column {self.column}" if self.column else "") + ": "
        return f"{where}{self.reason}"

    def __str__(self) -> str:
        return f"{self.origin}: {self.detail}"

    def __reduce__(self):  # keyword-only arguments: rebuild explicitly
        return (_rebuild_error, (self.origin, self.reason, self.line, self.column))


def _rebuild_error(origin, reason, line, column) -> DocumentError:
    return DocumentError(origin, reason, line=line, column=column)


def _decompress(data: bytes, origin: str) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    out = bytearray()
    try:
        while data:
            out += inflater.decompress(data, MAX_DOCUMENT_BYTES + 1 - len(out))
            if len(out) > MAX_DOCUMENT_BYTES:
                raise DocumentError(origin, f"decompresses to more than {MAX_DOCUMENT_BYTES} bytes")
            if inflater.eof:
                data = inflater.unused_data
                if data[:2] == GZIP_MAGIC:  # concatenated gzip members, as gzip(1) allows
                    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    continue
                break
            data = inflater.unconsumed_tail
        if not inflater.eof:
            raise DocumentError(origin, "truncated gzip data")
    except zlib.error as exc:
        raise DocumentError(origin, f"invalid gzip data: {exc}") from None
    return bytes(out)


def _format_of(origin: str) -> str | None:
    name = os.path.basename(origin).lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    return _FORMATS.get(os.path.splitext(name)[1])


def _parse_toml(text: str, origin: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DocumentError(origin, f"invalid TOML: {exc}") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise DocumentError(origin, f"invalid TOML: {exc}") from None
    except RecursionError:
        raise DocumentError(origin, "invalid TOML: nested too deeply") from None


def _parse_json(text: str, origin: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, value in items:
            if name in result:
                raise ValueError(f"duplicate key {name!r}")
            result[name] = value
        return result

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            origin, f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno
        ) from None
    except ValueError as exc:
        raise DocumentError(origin, f"invalid JSON: {exc}") from None
    except RecursionError:
        raise DocumentError(origin, "invalid JSON: nested too deeply") from None


def parse_json(data: bytes, origin: str) -> Any:
    """Any JSON value (an API body), held to the rules of documents: UTF-8, no NaN or
    Infinity, no duplicate key, at most MAX_DEPTH levels and MAX_VALUES values."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(origin, f"not UTF-8 text (byte {exc.start})") from None
    return _to_json(_parse_json(text, origin), (), origin)


def _parse_yaml(text: str, origin: str) -> Any:
    try:  # only YAML needs it: TOML and JSON stay standard library (apiclient's zipapp)
        from ruamel.yaml import YAML
        from ruamel.yaml.error import MarkedYAMLError, YAMLError
    except ImportError:
        raise DocumentError(
            origin, "YAML needs the ruamel.yaml package, which is not installed here; "
            "use TOML or JSON"
        ) from None

    loader = YAML(typ="safe", pure=True)
    try:
        documents = list(loader.load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = "; ".join(str(p) for p in (exc.context, exc.problem) if p) or str(exc)
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise DocumentError(origin, f"invalid YAML: {reason}", line=line, column=column) from None
    except YAMLError as exc:
        raise DocumentError(origin, f"invalid YAML: {exc}") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise DocumentError(origin, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise DocumentError(origin, "invalid YAML: nested too deeply") from None
    if len(documents) > 1:
        raise DocumentError(origin, f"holds {len(documents)} YAML documents; expected one")
    return documents[0] if documents else None


def _where(path: tuple[Any, ...]) -> str:
    parts = []
    for segment in path:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
            continue
        parts.append(("." if parts else "") + display_segment(segment))
    return "".join(parts) or "the top level"


def _to_json(
    value: Any, path: tuple[Any, ...], origin: str, budget: list[int] | None = None
) -> Any:
    """A plain JSON copy of ``value``, or DocumentError naming the key of what is not JSON.

    Refuses more than MAX_DEPTH levels (a recursive YAML alias has no end) and more than
    MAX_VALUES values (YAML aliases expand a small text into a huge document)."""
    if budget is None:
        budget = [MAX_VALUES]
    budget[0] -= 1
    if budget[0] < 0:
        raise DocumentError(origin, f"holds more than {MAX_VALUES} values (aliases expanded)")
    if len(path) > MAX_DEPTH:
        raise DocumentError(origin, f"{_where(path[:MAX_DEPTH])}: nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool | str):
        return str(value) if isinstance(value, str) else value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DocumentError(origin, f"{_where(path)}: {value} is not a JSON number")
        return float(value)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for name, child in value.items():
            if not isinstance(name, str):
                raise DocumentError(
                    origin,
                    f"{_where(path)}: the name {name!r} is not a string "
                    f"({type(name).__name__}); quote it",
                )
            result[str(name)] = _to_json(child, (*path, name), origin, budget)
        return result
    if isinstance(value, list | tuple):
        return [_to_json(child, (*path, i), origin, budget) for i, child in enumerate(value)]
    if isinstance(value, datetime.date | datetime.time):
        raise DocumentError(
            origin,
            f"{_where(path)}: {value.isoformat()} is a date/time, which settings cannot hold; "
            "quote it to make it a string",
        )
    raise DocumentError(origin, f"{_where(path)}: a {type(value).__name__} is not a JSON value")


def parse_document(data: bytes, origin: str) -> dict[str, Any]:
    """Parse one document; its format comes from ``origin``'s extension, else from its content."""
    if data[:2] == GZIP_MAGIC:
        data = _decompress(data, origin)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError(origin, f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(origin, f"not UTF-8 text (byte {exc.start})") from None
    kind = _format_of(origin)
    if kind == "toml":
        document = _parse_toml(text, origin)
    elif kind == "json":
        document = _parse_json(text, origin)
    elif kind == "yaml":
        document = _parse_yaml(text, origin)
    elif text.lstrip().startswith("{"):
        document = _parse_json(text, origin)
    else:
        try:
            document = _parse_toml(text, origin)
        except DocumentError as toml_error:
            try:
                document = _parse_yaml(text, origin)
            except DocumentError as yaml_error:
                raise DocumentError(
                    origin,
                    f"neither TOML ({toml_error.detail}) nor YAML ({yaml_error.detail})",
                ) from None
            if not isinstance(document, Mapping):
                raise toml_error from None
    if not isinstance(document, Mapping):
        found = "nothing" if document is None else f"a {type(document).__name__}"
        raise DocumentError(origin, f"the top level must be a table, not {found}")
    return _to_json(document, (), origin)


def load_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse a file (``"-"``: standard input). Unreadable files raise DocumentError."""
    if os.fspath(path) == STDIN:
        return parse_document(sys.stdin.buffer.read(), STDIN_ORIGIN)
    origin = os.fspath(path)
    return parse_document(read_bounded(path, origin), origin)


def read_bounded(path: str | os.PathLike[str], origin: str) -> bytes:
    """A regular file's bytes, at most MAX_DOCUMENT_BYTES of them.

    Opened without blocking and checked to be a regular file first: a FIFO (or a device such as
    ``/dev/zero``) given as a document would block the reader forever or grow it without end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DocumentError(origin, exc.strerror or str(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DocumentError(origin, f"not a regular file (a {_file_kind(mode)})")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= MAX_DOCUMENT_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_DOCUMENT_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise DocumentError(origin, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentError(origin, f"larger than {MAX_DOCUMENT_BYTES} bytes")
    return b"".join(chunks)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return "special file"


def settings_of(document: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """The top-level ``settings`` table of a document (everything else is ignored)."""
    if not isinstance(document, Mapping) or "settings" not in document:
        raise DocumentError(origin, "no top-level 'settings' table")
    settings = document["settings"]
    if not isinstance(settings, Mapping):
        raise DocumentError(origin, f"'settings' must be a table, not a {type(settings).__name__}")
    return dict(settings)


def load_settings(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[str, dict[str, Any]]]:
    """``(origin, settings)`` of each file, in order (later files override earlier ones)."""
    result = []
    for path in paths:
        origin = STDIN_ORIGIN if os.fspath(path) == STDIN else os.fspath(path)
        result.append((origin, settings_of(load_document(path), origin)))
    return result


__all__ = [
    "DocumentError",
    "load_document",
    "load_settings",
    "parse_document",
    "parse_json",
    "settings_of",
]
