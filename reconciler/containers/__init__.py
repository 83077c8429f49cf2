"""Host containers on a real engine (podman): pure planner, engine seam, executor.

* ``planner``: ``plan_containers(desired, observed) -> list[ContainerAction]`` (pure);
* ``engine``: the ``ContainerEngine`` protocol and the ``RunSpec`` it runs;
* ``podman``: ``PodmanEngine``, the one real engine (CLI, storage under the state dir);
* ``executor``: ``HostContainers``, the reconcile pass's ``containers`` executor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.containers.engine import ContainerEngine, EngineError, Image, Mount, RunSpec
from reconciler.containers.executor import HostContainers
from reconciler.containers.planner import (
    ContainerAction,
    DesiredContainer,
    ObservedContainer,
    plan_containers,
)
from reconciler.containers.podman import PodmanEngine

__all__ = [
    "ContainerAction",
    "ContainerEngine",
    "DesiredContainer",
    "EngineError",
    "HostContainers",
    "Image",
    "Mount",
    "ObservedContainer",
    "PodmanEngine",
    "RunSpec",
    "attach",
    "plan_containers",
]


def attach(
    executors: list[Any], socket: Path, wake: Callable[[str], None], events: Any
) -> Callable[[], None]:
    """Hand the daemon's API socket, worker wake-up and event journal to the host-containers
    executors; returns the function that detaches them (stops their event watch)."""
    ours = [e for e in executors if isinstance(e, HostContainers)]
    for executor in ours:
        executor.attach(socket, wake, events)

    def detach() -> None:
        for executor in ours:
            executor.close()

    return detach
