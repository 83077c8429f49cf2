"""The imperative shell of `check-update`: read host inputs, fetch the signed manifest, choose.

Everything that decides is in `selection`/`waves`/`manifest` (pure); this module only
gathers inputs (files, TUF repository, clock) and hands them over. `open_client()` is
the seam later update steps use to stream verified images.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from updates.config import OsIdentity, UpdogConfig, load_updog_toml, os_identity
from updates.errors import UpdateError
from updates.fetcher import UpdogFetcher
from updates.manifest import Manifest, Update, parse_manifest
from updates.selection import HostPolicy, NoUpdate, applicable_updates, choose_update, explain
from updates.semver import Version
from updates.timefmt import utcnow
from updates.tuf_client import TufClient

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class HostPaths:
    """Where the host keeps updog's inputs and state."""

    config: Path
    state_dir: Path  # persistent: metadata/ (TUF cache) lives here
    trusted_root: Path
    os_release: Path | None

    @property
    def metadata_dir(self) -> Path:
        return self.state_dir / "metadata"


@dataclass(frozen=True)
class Host:
    """Everything known about this host before talking to the repository."""

    config: UpdogConfig
    identity: OsIdentity
    paths: HostPaths


@dataclass(frozen=True)
class CheckRequest:
    """Per-invocation options (CLI flags)."""

    ignore_waves: bool = False
    image: Version | None = None


def load_host(
    paths: HostPaths, *, version: str | None = None, variant: str | None = None,
    arch: str | None = None,
) -> Host:
    return Host(
        config=load_updog_toml(paths.config),
        identity=os_identity(paths.os_release, version=version, variant=variant, arch=arch),
        paths=paths,
    )


def open_client(host: Host) -> TufClient:
    """A locked TUF client on the host's persistent cache, sending telemetry parameters."""
    try:
        trusted_root = host.paths.trusted_root.read_bytes()
    except OSError as e:
        raise UpdateError(f"cannot read the trusted root {host.paths.trusted_root}: {e}") from e
    fetcher = UpdogFetcher({"seed": str(host.config.seed),
                            "version": str(host.identity.version)},
                           max_rate=host.config.max_download_rate,
                           deadline=host.config.download_deadline)
    return TufClient(
        host.paths.metadata_dir,
        host.config.metadata_base_url,
        trusted_root=trusted_root,
        targets_base_url=host.config.targets_base_url,
        fetcher=fetcher,
    )


def fetch_manifest(client: TufClient) -> Manifest:
    """Refresh the metadata, then read and parse the verified `manifest.json` target."""
    client.refresh()
    return parse_manifest(client.read_target(MANIFEST))


def host_policy(host: Host, request: CheckRequest) -> HostPolicy:
    return HostPolicy(
        variant=host.identity.variant,
        arch=host.identity.arch,
        version=host.identity.version,
        seed=host.config.seed,
        version_lock=host.config.locked_version(),
        ignore_waves=host.config.ignore_waves or request.ignore_waves,
    )


def applicable(host: Host, request: CheckRequest, now: datetime | None = None) -> list[Update]:
    """All updates this host may take now (`check-update --all`)."""
    policy = host_policy(host, request)
    with open_client(host) as client:
        manifest = fetch_manifest(client)
    return applicable_updates(manifest, policy, now or utcnow())


def check_update(
    host: Host, request: CheckRequest, now: datetime | None = None
) -> tuple[Update | None, NoUpdate | None]:
    """The update this host should take now, or (None, why not)."""
    policy = host_policy(host, request)
    with open_client(host) as client:
        manifest = fetch_manifest(client)
    now = now or utcnow()
    chosen = choose_update(manifest, policy, now, request.image)
    return chosen, None if chosen else explain(manifest, policy, now, request.image)


def survey(host: Host, request: CheckRequest, now: datetime | None = None
           ) -> tuple[list[Update], NoUpdate | None]:
    """`check-update --all` and, when nothing would be chosen, why (one manifest fetch)."""
    policy = host_policy(host, request)
    with open_client(host) as client:
        manifest = fetch_manifest(client)
    now = now or utcnow()
    return applicable_updates(manifest, policy, now), explain(manifest, policy, now)
