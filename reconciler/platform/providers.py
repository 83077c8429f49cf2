"""User-data providers, tried in the order Bottlerocket's early-boot-config uses.

Bottlerocket runs the executables of ``data-providers.d`` in the lexical order of their names;
each one that finds user data has it applied over the earlier ones. Ours are objects with the
same names and order, chosen by the variant's platform (the part of the variant name before the
first ``-``: ``aws``, ``vmware``, ``metal``...):

==========================  ==============================================  =================
provider                    reads                                           platforms
==========================  ==============================================  =================
``10-local-defaults``       ``<root>/local/user-data-defaults.toml``        all
``20-local-file``           ``--user-data FILE...``, else                   all
                            ``<root>/var/lib/bottlerocket/user-data.toml``
``40-ec2-imds``             ``GET /latest/user-data`` over IMDSv2           aws
``45-vmware-guestinfo``     ``vmware-rpctool "info-get guestinfo.userdata"``  vmware
``99-local-overrides``      ``<root>/local/user-data-overrides.toml``       all
==========================  ==============================================  =================

A provider answers with its settings, with ``None`` (it has no user data: a missing file, IMDS
404), or raises :class:`Unavailable` (it could not tell: IMDS did not answer in its deadline,
``vmware-rpctool`` failed). Bottlerocket's identity-document provider (``aws.region``) is a
setting generator here, so that user data always wins over it.

Bodies may be gzip-compressed (detected by magic bytes) or base64-encoded (EC2 user data given
base64 twice, VMware's ``guestinfo.userdata.encoding``), as Bottlerocket accepts them.
"""

from __future__ import annotations

import base64
import binascii
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hostcore.documents import DocumentError, load_document, parse_document, settings_of
from reconciler.platform.imds import (
    DEFAULT_DEADLINE,
    DEFAULT_ENDPOINT,
    ImdsClient,
    ImdsUnavailable,
    on_ec2,
)

USER_DATA_PATH = "/latest/user-data"
LOCAL_DEFAULTS = "local/user-data-defaults.toml"
LOCAL_FILE = "var/lib/bottlerocket/user-data.toml"
LOCAL_OVERRIDES = "local/user-data-overrides.toml"
RPCTOOL = "vmware-rpctool"
_RPCTOOL_TIMEOUT = 10.0


class Unavailable(Exception):
    """The provider could not say whether there is user data."""


@dataclass(frozen=True)
class UserData:
    origin: str  # where it was read: a path, a URL, a guestinfo key
    settings: dict[str, Any]


class Provider(Protocol):
    name: str

    def describe(self) -> str:
        """Where it looks, for ``reconciler validate --help`` and status."""
        ...

    def read(self) -> list[UserData]:
        """The documents found (none: no user data); raises Unavailable or DocumentError."""
        ...


def decode(data: bytes, origin: str) -> dict[str, Any]:
    """The ``settings`` of a user-data body: plain, gzip, base64 or base64 of gzip."""
    stripped = b"".join(data.split())
    if stripped and data[:2] != b"\x1f\x8b":
        try:
            decoded = base64.b64decode(stripped, validate=True)
        except (binascii.Error, ValueError):
            decoded = None
        if decoded:  # a TOML/YAML/JSON document is never valid base64 (it has "=", "[" or ":")
            data = decoded
    return settings_of(parse_document(data, origin), origin)


@dataclass(frozen=True)
class LocalFile:
    """A file on the host; absent is no user data (unless the operator named it explicitly)."""

    name: str
    paths: tuple[Path, ...]
    required: bool = False

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths)

    def read(self) -> list[UserData]:
        found = []
        for path in self.paths:
            if not self.required and not path.exists():
                continue
            found.append(UserData(str(path), settings_of(load_document(path), str(path))))
        return found


@dataclass
class Ec2Imds:
    """EC2 user data over IMDSv2 (404: the instance was launched without user data)."""

    imds: ImdsClient
    name: str = "40-ec2-imds"

    def describe(self) -> str:
        return self.imds.endpoint + USER_DATA_PATH

    def read(self) -> list[UserData]:
        try:
            body = self.imds.get(USER_DATA_PATH)
        except ImdsUnavailable as error:
            raise Unavailable(str(error)) from None
        if body is None or not body.strip():
            return []
        origin = self.describe()
        return [UserData(origin, decode(body, origin))]


@dataclass(frozen=True)
class VmwareGuestinfo:
    """VMware's guestinfo.userdata, read with open-vm-tools' ``vmware-rpctool``."""

    name: str = "45-vmware-guestinfo"
    rpctool: str = RPCTOOL

    def describe(self) -> str:
        return f"{self.rpctool} 'info-get guestinfo.userdata'"

    def _get(self, key: str) -> str | None:
        try:
            done = subprocess.run(
                [self.rpctool, f"info-get {key}"],
                capture_output=True,
                timeout=_RPCTOOL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise Unavailable(f"{self.rpctool}: {error}") from None
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()
            if "No value found" in message:
                return None
            raise Unavailable(f"{self.rpctool} exited {done.returncode}: {message}")
        return done.stdout.decode(errors="replace").strip() or None

    def read(self) -> list[UserData]:
        if shutil.which(self.rpctool) is None:
            raise Unavailable(f"{self.rpctool} is not installed (Debian: open-vm-tools)")
        body = self._get("guestinfo.userdata")
        if body is None:
            return []
        encoding = (self._get("guestinfo.userdata.encoding") or "").lower()
        origin = "guestinfo.userdata"
        data = body.encode()
        if encoding in ("base64", "b64", "gzip+base64", "gz+b64"):
            try:
                data = base64.b64decode(b"".join(data.split()), validate=True)
            except (binascii.Error, ValueError):
                raise DocumentError(origin, f"not valid {encoding}") from None
        elif encoding:
            raise DocumentError(origin, f"unknown guestinfo.userdata.encoding {encoding!r}")
        return [UserData(origin, settings_of(parse_document(data, origin), origin))]


def platform_of(variant: str) -> str:
    """The platform of a variant: ``aws-k8s-1.30`` -> ``aws``, ``vmware-k8s-1.31`` -> ``vmware``."""
    return variant.split("-", 1)[0]


def providers_for(
    variant: str,
    root: Path,
    user_data: Sequence[str | Path] = (),
    imds: ImdsClient | None = None,
) -> list[Provider]:
    """The providers of ``variant``'s platform, in order. ``imds`` None: not on EC2."""
    platform = platform_of(variant)
    local = (
        LocalFile("20-local-file", tuple(Path(p) for p in user_data), required=True)
        if user_data
        else LocalFile("20-local-file", (root / LOCAL_FILE,))
    )
    providers: list[Provider] = [LocalFile("10-local-defaults", (root / LOCAL_DEFAULTS,)), local]
    if platform == "aws" and imds is not None:
        providers.append(Ec2Imds(imds))
    if platform == "vmware":
        providers.append(VmwareGuestinfo())
    providers.append(LocalFile("99-local-overrides", (root / LOCAL_OVERRIDES,)))
    return providers


@dataclass(frozen=True)
class Platform:
    """How this host reaches its platform's metadata (``serve --imds-endpoint/--imds-deadline``).

    On an ``aws-*`` variant the metadata service is used when the operator names its endpoint,
    or when the firmware says this is an EC2 instance; elsewhere (a laptop, CI, a metal host
    running an aws variant) it is not tried at all, so that boot never waits for an address
    nothing answers.
    """

    imds_endpoint: str | None = None
    imds_deadline: float = DEFAULT_DEADLINE

    def imds(self, variant: str) -> ImdsClient | None:
        if platform_of(variant) != "aws":
            return None
        if self.imds_endpoint:
            return ImdsClient(self.imds_endpoint, self.imds_deadline)
        if on_ec2():
            return ImdsClient(DEFAULT_ENDPOINT, self.imds_deadline)
        return None
