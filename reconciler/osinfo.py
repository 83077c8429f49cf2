"""Identity of the running OS, as ``GET /os`` and the templates' ``os`` see it."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


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


def os_release_ids(root: Path) -> list[str]:
    """The distribution names of the system under ``root``: os-release's ID, then its ID_LIKE.

    The catalog applies the facts of the first one it has a ``distributions/`` file for. A root
    without an os-release (a sandbox) names none, and the catalog stays as written.
    """
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (root / candidate).read_text(errors="replace")
        except OSError:
            continue
        fields = {}
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep:
                fields[name.strip()] = value.strip().strip("\"'")
        return [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]
    return []
