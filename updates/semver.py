"""Strict semantic versions (semver 2.0.0), as Bottlerocket's manifest uses them.

Versions are compared by semver precedence; build metadata is ignored for ordering and
equality, as the Rust `semver` crate that updog used did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

_NUM = r"0|[1-9]\d*"
_PRE_ID = r"0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*"
_SEMVER = re.compile(
    rf"^(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>(?:{_PRE_ID})(?:\.(?:{_PRE_ID}))*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


class VersionError(ValueError):
    """A string is not a strict semantic version."""


@total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """A parsed semantic version; `str()` gives back the canonical text."""

    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    build: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse `X.Y.Z[-pre][+build]`; no leading `v`, no leading zeros."""
        m = _SEMVER.match(text) if isinstance(text, str) else None
        if m is None:
            raise VersionError(f"invalid semantic version {text!r}")
        pre = tuple(m["pre"].split(".")) if m["pre"] else ()
        build = tuple(m["build"].split(".")) if m["build"] else ()
        return cls(int(m["major"]), int(m["minor"]), int(m["patch"]), pre, build)

    def _key(self) -> tuple:
        # A release sorts after all of its pre-releases; numeric identifiers sort
        # numerically and before alphanumeric ones.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre)
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            text += "-" + ".".join(self.pre)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"


LATEST = "latest"


def parse_version_lock(text: str) -> Version | None:
    """Parse a FriendlyVersion: `latest` gives None, else semver with an optional `v`."""
    text = text.strip()
    if text == LATEST:
        return None
    return Version.parse(text[1:] if text.startswith("v") else text)
