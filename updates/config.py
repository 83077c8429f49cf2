"""Host-side inputs of updog: `/etc/updog.toml` and the running OS identity.

`updog.toml` is rendered from `settings.updates.*` and has five required keys
(metadata_base_url, targets_base_url, seed, version_lock, ignore_waves), as on Bottlerocket.
"""

from __future__ import annotations

import platform
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

from updates.semver import Version, VersionError, parse_version_lock
from updates.waves import MAX_SEED

# Seconds for one whole file (updog.toml `download_deadline`); here, not in updates.fetcher,
# so that reading the configuration does not load python-tuf's fetcher (urllib3, cryptography)
# into every daemon that only shows update status.
DOWNLOAD_DEADLINE = 600

U32_MAX = 2**32 - 1
_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


class ConfigError(ValueError):
    """updog.toml or os-release is missing, malformed or incomplete."""


@dataclass(frozen=True)
class UpdogConfig:
    """The parsed `updog.toml`."""

    metadata_base_url: str
    targets_base_url: str
    seed: int
    version_lock: str  # "latest" or a FriendlyVersion; parsed when used
    ignore_waves: bool
    max_download_rate: int | None = None  # bytes/s (ours: settings.updates.max-download-rate)
    download_deadline: int = DOWNLOAD_DEADLINE  # s per file (ours: ...updates.download-deadline)

    def locked_version(self) -> Version | None:
        """None for `latest`, else the pinned version (a bad value is an error here)."""
        try:
            return parse_version_lock(self.version_lock)
        except VersionError as e:
            raise ConfigError(f"version_lock {self.version_lock!r}: {e}") from None


def parse_updog_toml(text: str, source: str = "updog.toml") -> UpdogConfig:
    """Parse updog.toml; every key is required, unknown keys are ignored."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    types = {"metadata_base_url": str, "targets_base_url": str, "seed": int,
             "version_lock": str, "ignore_waves": bool}
    for key, kind in types.items():
        if key not in data:
            raise ConfigError(f"{source}: missing key `{key}`")
        value = data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{source}: `{key}` must be a {kind.__name__}")
    if not 0 <= data["seed"] <= U32_MAX:
        raise ConfigError(f"{source}: `seed` must be a u32 (bork picks one in [0, {MAX_SEED}))")
    rate = data.get("max_download_rate")
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or rate < 1):
        raise ConfigError(f"{source}: `max_download_rate` must be a positive integer (bytes/s)")
    deadline = data.get("download_deadline", DOWNLOAD_DEADLINE)
    if not isinstance(deadline, int) or isinstance(deadline, bool) or deadline < 1:
        raise ConfigError(f"{source}: `download_deadline` must be a positive integer (seconds)")
    return UpdogConfig(**{k: data[k] for k in types}, max_download_rate=rate,
                       download_deadline=deadline)


def load_updog_toml(path: Path) -> UpdogConfig:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    return parse_updog_toml(text, str(path))


@dataclass(frozen=True)
class OsIdentity:
    """What the running OS is: its version, variant and architecture."""

    version: Version
    variant: str
    arch: str


def parse_os_release(text: str) -> dict[str, str]:
    """os-release `KEY=value` lines, with shell-style quoting."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw]
        out[key.strip()] = parts[0] if parts else ""
    return out


def machine_arch() -> str:
    """This machine's architecture in Bottlerocket's spelling."""
    arch = platform.machine()
    return _ARCH_ALIASES.get(arch, arch)


def os_identity(
    os_release: Path | None,
    *,
    version: str | None = None,
    variant: str | None = None,
    arch: str | None = None,
) -> OsIdentity:
    """The OS identity from os-release (VERSION_ID, VARIANT_ID), overridden by arguments.

    The architecture is not in os-release on Bottlerocket (it is compiled in): it comes
    from `arch`, else an `ARCH` key if present, else this machine.
    """
    fields: dict[str, str] = {}
    if os_release is not None and (version is None or variant is None):
        try:
            fields = parse_os_release(Path(os_release).read_text())
        except OSError as e:
            raise ConfigError(f"cannot read {os_release}: {e}") from None
    version = version or fields.get("VERSION_ID")
    variant = variant or fields.get("VARIANT_ID")
    if not version or not variant:
        raise ConfigError(f"{os_release}: VERSION_ID and VARIANT_ID are required")
    try:
        parsed = Version.parse(version)
    except VersionError as e:
        raise ConfigError(f"running version: {e}") from None
    return OsIdentity(parsed, variant, arch or fields.get("ARCH") or machine_arch())
