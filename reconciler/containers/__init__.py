"""Host containers on a real engine (podman): pure planner, engine seam, executor.

* ``planner``: ``plan_containers(desired, observed) -> list[ContainerAction]`` and
  ``plan_host_containers(desired, observation) -> ContainerPlan`` (pure: drift, back-off,
  crash-loop budget);
* ``engine``: the ``ContainerEngine`` protocol and the ``RunSpec`` it runs;
* ``podman``: ``PodmanEngine``, the one real engine (CLI, storage under the state dir);
* ``executor``: ``HostContainers``, the reconcile pass's ``containers`` executor, with its
  jobs in ``restarts`` (records, restart timers), ``watch`` (engine events), ``images``
  (running on the pulled image), ``runspec`` (mounts, ``RunSpec``), ``storage`` (persistent
  directories); ``pulls`` (pulls off the pass) and ``bootstrap`` (bootstrap containers).
"""

from __future__ import annotations

from reconciler.containers.engine import ContainerEngine, EngineError, Image, Mount, RunSpec
from reconciler.containers.executor import HostContainers
from reconciler.containers.planner import (
    ContainerAction,
    ContainerPlan,
    DesiredContainer,
    ObservedContainer,
    plan_containers,
    plan_host_containers,
)
from reconciler.containers.podman import PodmanEngine

__all__ = [
    "ContainerAction",
    "ContainerEngine",
    "ContainerPlan",
    "DesiredContainer",
    "EngineError",
    "HostContainers",
    "Image",
    "Mount",
    "ObservedContainer",
    "PodmanEngine",
    "RunSpec",
    "plan_containers",
    "plan_host_containers",
]
