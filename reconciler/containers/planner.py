"""The pure half of host containers: desired entries, observed containers, and the plan between.

``plan_containers(desired, observed)`` takes ``settings.host-containers`` (name -> entry) and the
containers the engine reports in our storage, and returns one action per name: create, recreate,
start, remove or keep, each with a reason. It reads no clock and touches nothing, so the dry run
(``POST /tx/plan``) and the real pass share it.

A desired container's *identity* is a hash of what shapes it (source, superpowered, user-data).
It is stored on the container as a label, so "this container is out of date" is decided from the
observed labels alone, across daemon restarts, without any other record.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Labels that mark a container as ours and describe what it was made from.
LABEL_MANAGED = "reconciler.managed"
LABEL_NAME = "reconciler.name"
LABEL_IDENTITY = "reconciler.identity"
LABEL_SOURCE = "reconciler.source"
LABEL_SUPERPOWERED = "reconciler.superpowered"
LABEL_USER_DATA = "reconciler.user-data"  # a short hash, never the (secret) data itself
LABEL_GENERATION = "reconciler.generation"

SECTION = "host-containers"
ARCHIVE_TRANSPORTS = ("oci-archive:", "docker-archive:", "oci:", "dir:")  # local, never pulled

CREATE, RECREATE, START, REMOVE, KEEP, INVALID, CONFLICT = (
    "create",
    "recreate",
    "start",
    "remove",
    "keep",
    "invalid",
    "conflict",
)


@dataclass(frozen=True)
class DesiredContainer:
    name: str
    source: str
    superpowered: bool = False
    user_data: str | None = None  # base64, as in the settings

    @property
    def user_data_hash(self) -> str:
        return _short_hash(self.user_data or "")

    @property
    def identity(self) -> str:
        return identity(self.source, self.superpowered, self.user_data)

    def labels(self, generation: int) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_NAME: self.name,
            LABEL_IDENTITY: self.identity,
            LABEL_SOURCE: self.source,
            LABEL_SUPERPOWERED: "true" if self.superpowered else "false",
            LABEL_USER_DATA: self.user_data_hash,
            LABEL_GENERATION: str(generation),
        }

    def decoded_user_data(self) -> bytes | None:
        if self.user_data is None:
            return None
        return base64.b64decode(self.user_data, validate=True)


@dataclass(frozen=True)
class ObservedContainer:
    """One container in our storage, as the engine reports it."""

    name: str
    id: str = ""
    state: str = "running"  # running | exited | created | paused | stopped | ...
    labels: Mapping[str, str] = field(default_factory=dict)
    image_id: str = ""
    exit_code: int | None = None

    @property
    def managed(self) -> bool:
        return self.labels.get(LABEL_MANAGED) == "true"

    @property
    def identity(self) -> str:
        return self.labels.get(LABEL_IDENTITY, "")

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class ContainerAction:
    name: str
    action: str  # create | recreate | start | remove | keep | invalid | conflict
    reason: str
    desired: DesiredContainer | None = None
    observed: ObservedContainer | None = None

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"name": self.name, "action": self.action, "reason": self.reason}
        if self.desired is not None:
            answer["source"] = self.desired.source
            answer["superpowered"] = self.desired.superpowered
        return answer


def identity(source: str, superpowered: bool, user_data: str | None) -> str:
    document = json.dumps(
        {"source": source, "superpowered": bool(superpowered), "user-data": user_data or ""},
        sort_keys=True,
    )
    return hashlib.sha256(document.encode()).hexdigest()[:32]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else ""


def desired_containers(
    entries: Mapping[str, Any] | None,
) -> tuple[dict[str, DesiredContainer], dict[str, str]]:
    """The enabled entries of ``settings.host-containers``, and the invalid ones with why."""
    desired: dict[str, DesiredContainer] = {}
    invalid: dict[str, str] = {}
    for name, entry in sorted((entries or {}).items()):
        if not isinstance(entry, Mapping) or not entry.get("enabled", False):
            continue
        problems = entry_problems(name, entry)
        if problems:
            invalid[name] = "; ".join(problems)
            continue
        user_data = entry.get("user-data")
        desired[name] = DesiredContainer(
            name=name,
            source=str(entry["source"]),
            superpowered=bool(entry.get("superpowered", False)),
            user_data=None if user_data is None else str(user_data),
        )
    return desired, invalid


def entry_problems(name: Any, entry: Any) -> list[str]:
    """What the settings schema refuses in one host container, its name included.

    The schema is the only rule of what a host container is (a name that is a plain directory
    and container name, an image reference that cannot read as an option, a local archive by
    absolute path, base64 user-data). Committed settings passed it already; asking it again here
    guards what reached the store another way (a migration is not validated) before a name
    becomes a directory or a source becomes a podman argument.
    """
    from reconciler.schema import DEFAULT_VARIANT, Schema  # every variant has this section

    settings = {SECTION: {name: entry}}
    return [str(p) for p in Schema.load(DEFAULT_VARIANT).validate(settings, sections=(SECTION,))]


def _changes(desired: DesiredContainer, observed: ObservedContainer) -> str:
    labels = observed.labels
    changes = []
    if labels.get(LABEL_SOURCE) != desired.source:
        changes.append(f"source {labels.get(LABEL_SOURCE, '?')} -> {desired.source}")
    was_super = labels.get(LABEL_SUPERPOWERED) == "true"
    if was_super != desired.superpowered:
        old, new = str(was_super).lower(), str(desired.superpowered).lower()
        changes.append(f"superpowered {old} -> {new}")
    if labels.get(LABEL_USER_DATA, "") != desired.user_data_hash:
        changes.append("user-data changed")
    return ", ".join(changes) or "definition changed"


def plan_containers(
    desired: Mapping[str, Any] | None, observed: Iterable[ObservedContainer]
) -> list[ContainerAction]:
    """One action per host container name, removals first, then by name.

    ``desired`` is the ``settings.host-containers`` map (entries not enabled are not desired);
    ``observed`` lists every container in our storage, managed or not. Containers without our
    label are never acted on: a desired name taken by one of them is a ``conflict``.
    """
    wanted, invalid = desired_containers(desired)
    seen: dict[str, ObservedContainer] = {}
    for container in observed:
        seen.setdefault(container.name, container)
    actions: list[ContainerAction] = []

    for name, container in sorted(seen.items()):
        if not container.managed or name in wanted:
            continue
        entry = (desired or {}).get(name)
        if name in invalid:
            reason = f"invalid settings: {invalid[name]}"
        elif isinstance(entry, Mapping):
            reason = "disabled"
        else:
            reason = "no longer in settings"
        actions.append(ContainerAction(name, REMOVE, reason, observed=container))

    for name, problem in sorted(invalid.items()):
        actions.append(ContainerAction(name, INVALID, problem))

    for name, want in sorted(wanted.items()):
        current = seen.get(name)
        if current is None:
            actions.append(ContainerAction(name, CREATE, "not running: no container", want))
        elif not current.managed:
            actions.append(
                ContainerAction(
                    name,
                    CONFLICT,
                    f"a container named {name!r} exists that is not ours; left alone",
                    want,
                    current,
                )
            )
        elif current.identity != want.identity:
            actions.append(ContainerAction(name, RECREATE, _changes(want, current), want, current))
        elif not current.running:
            code = "" if current.exit_code is None else f" (exit code {current.exit_code})"
            actions.append(
                ContainerAction(name, START, f"not running: {current.state}{code}", want, current)
            )
        else:
            actions.append(ContainerAction(name, KEEP, "running", want, current))
    return actions
