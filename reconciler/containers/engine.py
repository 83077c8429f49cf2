"""The container-runtime seam: what the executor needs from an engine, and nothing more.

One real implementation: ``reconciler.containers.podman.PodmanEngine``. Tests of the executor's
logic may pass any object with these methods.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler.containers.planner import ObservedContainer


class EngineError(Exception):
    """An engine command failed; the message says which and why (stderr tail)."""


class EngineUnavailable(EngineError):
    """The engine is not installed or cannot start at all."""


@dataclass(frozen=True)
class Image:
    id: str  # the local image id (config digest, hex)
    digest: str = ""  # the manifest digest, sha256:...


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class RunSpec:
    """How to run one host container; the engine maps it onto its own flags."""

    name: str
    image: str  # image id
    labels: Mapping[str, str]
    mounts: Sequence[Mount] = ()
    privileged: bool = False
    host_pid: bool = False
    host_network: bool = False
    env: Mapping[str, str] = field(default_factory=dict)


class ContainerEngine(Protocol):
    def available(self) -> str | None:
        """None when usable, else why not (checked without side effects)."""
        ...

    def initialized(self) -> bool:
        """True once the engine's storage exists (before that, there is nothing to list)."""
        ...

    def list(self) -> list[ObservedContainer]:
        """Every container in our storage, managed or not."""
        ...

    def pull(self, source: str, timeout: float = ...) -> Image:
        """Pull a registry reference or load a local archive; the resolved image."""
        ...

    def local_image(self, reference: str) -> Image | None:
        """The image a local tag or digest names in the engine's store, or None."""
        ...

    def load(self, archive: Path) -> None:
        """Load an image archive, with the names it carries."""
        ...

    def run(self, spec: RunSpec) -> str:
        """Create and start a container; its id."""
        ...

    def start(self, name: str) -> None: ...

    def remove(self, name: str) -> None:
        """Stop (with a grace period) and remove; a missing container is not an error."""
        ...

    def logs(self, name: str, lines: int = 20) -> str: ...

    def events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """Events of managed containers (dicts with Name, Status...) until ``stop`` is set."""
        ...
