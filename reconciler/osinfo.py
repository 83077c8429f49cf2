"""Identity of the running OS, as ``GET /os`` and the templates' ``os`` see it."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("host-reconciler")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0"


def os_info(variant: str, version_id: str | None = None, build_id: str = "dev") -> dict[str, str]:
    version_id = version_id or package_version()
    return {
        "pretty_name": f"Reconciler Host {version_id} ({variant})",
        "variant_id": variant,
        "version_id": version_id,
        "build_id": build_id,
        "arch": platform.machine() or "x86_64",
    }
