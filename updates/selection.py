"""Choosing an update for this host (updog's `update_required`), as pure functions.

Inputs are plain data (the manifest, the host's identity and policy, the time), so every
rule can be tested without a repository.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from updates.manifest import Manifest, Update
from updates.semver import Version
from updates.timefmt import format_time
from updates.waves import place, update_ready

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


def applicable_updates(manifest: Manifest, host: HostPolicy, now: datetime) -> list[Update]:
    """Updates for this variant and arch, within their ceiling, whose wave has reached us.

    Highest version first. Includes versions at or below the running one.
    """
    found = [
        u for u in manifest.updates
        if u.variant == host.variant
        and u.arch == host.arch
        and u.version <= u.max_version
        and (host.ignore_waves or update_ready(dict(u.waves), host.seed, now))
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


# ---------------------------------------------------------------------------- why not


UP_TO_DATE = "up-to-date"
NO_RELEASE = "no-release"
WAVE = "wave"
VERSION_LOCK = "version-lock"
MAX_VERSION = "max-version"
MAINTENANCE_WINDOW = "maintenance-window"
UNCONFIRMED_BOOT = "unconfirmed-boot"
REASONS = (UP_TO_DATE, NO_RELEASE, WAVE, VERSION_LOCK, MAX_VERSION, MAINTENANCE_WINDOW,
           UNCONFIRMED_BOOT)


@dataclass(frozen=True)
class NoUpdate:
    """Why no update is offered: `kind` (one of `REASONS`), a sentence, and its facts."""

    kind: str
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, **self.detail}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NoUpdate:
        detail = {k: v for k, v in data.items() if k not in ("kind", "message")}
        return cls(str(data.get("kind", "")), str(data.get("message", "")), detail)


def explain(manifest: Manifest, host: HostPolicy, now: datetime,
            image: Version | None = None) -> NoUpdate | None:
    """None when `choose_update` picks something; otherwise why it does not (pure)."""
    if choose_update(manifest, host, now, image) is not None:
        return None
    running = host.version
    ours = sorted((u for u in manifest.updates
                   if u.variant == host.variant and u.arch == host.arch),
                  key=lambda u: u.version, reverse=True)
    if not ours:
        return NoUpdate(NO_RELEASE, f"the repository has no release for {host.variant} "
                        f"{host.arch}", {"variant": host.variant, "arch": host.arch})
    lock = host.version_lock
    if image is not None:
        wanted = [u for u in ours if u.version == image]
    elif lock is not None:
        if lock == running:
            newer = [str(u.version) for u in ours if u.version > running]
            also = f" ({', '.join(newer)} offered)" if newer else ""
            return NoUpdate(VERSION_LOCK, f"version-lock {lock} is the running version{also}",
                            {"version_lock": str(lock), "running": str(running)})
        wanted = [u for u in ours if u.version == lock]
        if not wanted:
            return NoUpdate(VERSION_LOCK, f"version-lock {lock}: no such release (offered: "
                            f"{', '.join(str(u.version) for u in ours)})",
                            {"version_lock": str(lock), "running": str(running)})
    else:
        wanted = [u for u in ours if running < u.version or running > u.max_version]
    within = [u for u in wanted if u.version <= u.max_version]
    if wanted and not within:
        best = wanted[0]
        return NoUpdate(MAX_VERSION, f"{best.version} is above its max_version ceiling "
                        f"{best.max_version}", {"version": str(best.version),
                                                "max_version": str(best.max_version)})
    if within and not host.ignore_waves:
        best = within[0]
        where = place(dict(best.waves), host.seed)
        if where.ready_at is not None and now < where.ready_at:
            return NoUpdate(WAVE, f"{best.version} is in {where.describe()}; for seed "
                            f"{host.seed} it opens at {format_time(where.ready_at)}",
                            {"version": str(best.version), "seed": host.seed,
                             "wave_start_seed": where.start_seed or 0,
                             "wave_end_seed": where.end_seed,
                             "wave_starts": format_time(where.starts) if where.starts else None,
                             "opens_at": format_time(where.ready_at)})
    if image is not None:
        return NoUpdate(NO_RELEASE, f"no release {image} for {host.variant} {host.arch}",
                        {"version": str(image)})
    return NoUpdate(UP_TO_DATE, f"running {running}, the newest release for {host.variant} "
                    f"{host.arch} is {ours[0].version}",
                    {"running": str(running), "newest": str(ours[0].version)})
