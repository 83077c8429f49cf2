"""Choosing an update for this host (updog's `update_required`), as pure functions.

Inputs are plain data (the manifest, the host's identity and policy, the time), so every
rule can be tested without a repository.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from updates.manifest import Manifest, Update
from updates.semver import Version
from updates.waves import update_ready

T = TypeVar("T")


@dataclass(frozen=True)
class HostPolicy:
    """What this host is and how it wants updates."""

    variant: str
    arch: str
    version: Version  # the running OS version
    seed: int
    version_lock: Version | None = None  # None means "latest"
    ignore_waves: bool = False
    absolute_seed: bool = False  # reproduce upstream's wave-position quirk


def applicable_updates(manifest: Manifest, host: HostPolicy, now: datetime) -> list[Update]:
    """Updates for this variant and arch, within their ceiling, whose wave has reached us.

    Highest version first. Includes versions at or below the running one.
    """
    found = [
        u for u in manifest.updates
        if u.variant == host.variant
        and u.arch == host.arch
        and u.version <= u.max_version
        and (host.ignore_waves
             or update_ready(dict(u.waves), host.seed, now, absolute_seed=host.absolute_seed))
    ]
    return sorted(found, key=lambda u: u.version, reverse=True)


def choose_update(
    manifest: Manifest, host: HostPolicy, now: datetime, image: Version | None = None
) -> Update | None:
    """The update this host should move to, or None.

    `image` forces a version (even older or equal); a version lock pins one (even a
    downgrade); otherwise the newest newer version wins, or - the regret path - the
    newest one within the ceiling when the running version is above it.
    """
    candidates = applicable_updates(manifest, host, now)
    if image is not None:
        return next((u for u in candidates if u.version == image), None)
    return pick(candidates, host.version, host.version_lock,
                version=lambda u: u.version, max_version=lambda u: u.max_version)


def pick(ordered: Sequence[T], running: Version, version_lock: Version | None, *,
         version: Callable[[T], Version], max_version: Callable[[T], Version]) -> T | None:
    """The lock and regret rule over candidates ordered newest first (updog and the API).

    A version lock pins one version (even a downgrade; none when it is already running);
    otherwise the newest newer version wins, or the newest one within the ceiling when the
    running version is above it.
    """
    if version_lock is not None:
        if version_lock == running:
            return None
        return next((u for u in ordered if version(u) == version_lock), None)
    return next((u for u in ordered if running < version(u) or running > max_version(u)), None)
