"""One receipt step type for every part a pass converges: files, services, containers, updates.

Why one type: the receipt is what ``GET /status``, ``apiclient``, events and metrics read, so
every step has the same core (kind, name, result, detail) and one ``drift`` flag, whichever
executor made it. Optional fields are left out of ``as_dict`` when unset, so a file step does
not grow container fields.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

FAILED = "failed"


@dataclass(frozen=True)
class Step:
    kind: str  # file | service | container | update | <executor> (an executor that crashed)
    name: str
    result: str  # written | failed | restarted | applied | skipped | created | recreated |
    # removed | started | not-installed
    detail: str = ""
    path: str | None = None  # file
    drift: bool | None = None  # file: always set when written; container: True when drifted
    reason: str | None = None  # service
    commands: tuple[tuple[str, ...], ...] | None = None  # service
    unit: str | None = None  # service (not-installed)
    source: str | None = None  # container
    superpowered: bool | None = None  # container
    image: str | None = None  # container
    digest: str | None = None  # container
    exit_code: int | None = None  # container (crash-looping)

    @property
    def failed(self) -> bool:
        return self.result == FAILED

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None and item.name not in ("kind", "name", "result", "detail"):
                continue
            if item.name == "commands":
                value = [list(command) for command in value]
            answer[item.name] = value
        return answer
