"""Template helpers, after Bottlerocket's schnauzer, plus escaping for each file syntax.

Why escaping helpers: a value placed in a file must not change the file's structure (a quote in a
TOML string, a newline in an env file). Each helper validates its input and raises HelperError
with a message naming the problem; an undefined setting passed in raises the undefined error that
names the dotted key (see ``render.SettingUndefined``).
"""

from __future__ import annotations

import base64
import binascii
import json as _json
import math
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Undefined
from jinja2.exceptions import TemplateRuntimeError


class HelperError(TemplateRuntimeError):
    """A helper got a value it cannot place in the file; the message says why."""


def is_missing(value: Any) -> bool:
    """Undefined (absent setting) and None (null) both mean "not set"."""
    return value is None or isinstance(value, Undefined)


def _require(value: Any, helper: str) -> Any:
    """Return value; an undefined raises its own error (naming the key), None a HelperError."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if value is None:
        raise HelperError(f"{helper}: value is not set")
    return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


# --- Bottlerocket's helpers -------------------------------------------------------------------


def default(value: Any, fallback: Any) -> Any:
    """``value`` when set, else ``fallback`` (works on undefined; usable as filter or function)."""
    return fallback if is_missing(value) else value


def base64_decode(value: Any) -> str:
    """Decode standard base64 (padding allowed) to UTF-8 text, e.g. the cluster CA."""
    text = _require(value, "base64_decode")
    if not isinstance(text, str):
        raise HelperError(f"base64_decode: expected a string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise HelperError(f"base64_decode: invalid base64 or not UTF-8 text: {exc}") from exc


def join_map(
    mapping: Any, kv_sep: str, pair_sep: str, fail_if_missing: bool = True
) -> str:
    """Render a map as ``k<kv_sep>v`` pairs joined by ``pair_sep``, sorted by key.

    A missing map is an error (naming the key) or the empty string, per ``fail_if_missing``.
    Sorting keeps the output byte-stable between passes, so no spurious restarts.
    """
    if is_missing(mapping):
        if fail_if_missing:
            _require(mapping, "join_map")
        return ""
    if not isinstance(mapping, Mapping):
        raise HelperError(f"join_map: expected a map, got {type(mapping).__name__}")
    pairs = []
    for key in sorted(mapping):
        value = mapping[key]
        if not _is_scalar(value):
            raise HelperError(f"join_map: value of {key!r} is not a scalar")
        pairs.append(f"{key}{kv_sep}{_scalar_text(value)}")
    return pair_sep.join(pairs)


def k8s_taints(mapping: Any) -> str:
    """Node taints for kubelet ``--register-with-taints``: ``key=value:Effect`` joined by ``,``.

    Each value is one taint (Bottlerocket's 2020 form) or a list of them (its 2022 form, one
    entry per effect); keys sorted, list order kept, so the text is byte-stable between passes.
    """
    if is_missing(mapping):
        return ""
    if not isinstance(mapping, Mapping):
        raise HelperError(f"k8s_taints: expected a map, got {type(mapping).__name__}")
    taints = []
    for key in sorted(mapping):
        values = mapping[key]
        for value in [values] if isinstance(values, str) else list(values):
            if not isinstance(value, str):
                raise HelperError(f"k8s_taints: taint of {key!r} is not a string")
            taints.append(f"{key}={value}")
    return ",".join(taints)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- escaping -----------------------------------------------------------------------------------

_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}
_TOML_NEEDS = re.compile(r'["\\\x00-\x1f\x7f]')


def toml_string(value: Any) -> str:
    """A TOML basic string (quoted, escaped)."""
    text = _require(value, "toml_string")
    if not isinstance(text, str):
        raise HelperError(f"toml_string: expected a string, got {type(text).__name__}")
    return '"' + _TOML_NEEDS.sub(
        lambda m: _TOML_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04X}"), text
    ) + '"'


_BARE_TOML_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(value: Any) -> str:
    """A TOML key: bare when possible, else a quoted string."""
    text = _require(value, "toml_key")
    if isinstance(text, str) and _BARE_TOML_KEY.fullmatch(text):
        return text
    return toml_string(text)


def toml(value: Any) -> str:
    """Any settings value (scalar, list, map) as a TOML inline value."""
    value = _require(value, "toml")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{toml_key(k)} = {toml(v)}" for k, v in sorted(value.items()))
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    raise HelperError(f"toml: cannot encode {type(value).__name__}")


def json(value: Any) -> str:
    """Any settings value as compact JSON with sorted keys (also a valid YAML flow value)."""
    value = _require(value, "json")
    try:
        return _json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise HelperError(f"json: cannot encode value: {exc}") from exc


_YAML_NEEDS = re.compile('["\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]')
_YAML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r",
                 "\x00": "\\0"}


def yaml_string(value: Any) -> str:
    """A YAML double-quoted scalar; non-printables escaped so no value can add structure."""
    text = _require(value, "yaml_string")
    if not isinstance(text, str):
        if not _is_scalar(text):
            raise HelperError(f"yaml_string: expected a scalar, got {type(text).__name__}")
        text = _scalar_text(text)

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char in _YAML_ESCAPES:
            return _YAML_ESCAPES[char]
        code = ord(char)
        return f"\\x{code:02X}" if code <= 0xFF else f"\\u{code:04X}"

    return '"' + _YAML_NEEDS.sub(escape, text) + '"'


_LINE_BREAKS = re.compile("[\n\r\v\f\x85\u2028\u2029\x00]")


def shell_quote(value: Any) -> str:
    """POSIX single-quoting for env files (systemd ``EnvironmentFile=``, ``sh``); one line only."""
    text = _require(value, "shell_quote")
    if not isinstance(text, str):
        if not _is_scalar(text):
            raise HelperError(f"shell_quote: expected a scalar, got {type(text).__name__}")
        text = _scalar_text(text)
    if _LINE_BREAKS.search(text):
        raise HelperError("shell_quote: value contains a line break or NUL")
    return shlex.quote(text)


_WORD = re.compile(r"[^\s#;\"'\\\x00-\x1f\x7f]+")


def word(value: Any) -> str:
    """A bare token for formats without quoting (chrony.conf): refuse spaces, quotes, comments."""
    text = _require(value, "word")
    text = text if isinstance(text, str) else _scalar_text(text)
    if not _WORD.fullmatch(text):
        raise HelperError(f"word: {text!r} is not a single bare token")
    return text


HELPERS: Mapping[str, Callable[..., Any]] = {
    "default": default,
    "base64_decode": base64_decode,
    "join_map": join_map,
    "k8s_taints": k8s_taints,
    "toml_string": toml_string,
    "toml_key": toml_key,
    "toml": toml,
    "json": json,
    "yaml_string": yaml_string,
    "shell_quote": shell_quote,
    "word": word,
    "is_missing": is_missing,
}
"""Registered both as globals (``default(x, 1)``) and as filters (``x | default(1)``)."""
