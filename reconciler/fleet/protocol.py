"""The FleetLock wire protocol (coreos/zincati ``docs/development/fleetlock/protocol.md``).

Two JSON ``POST``s under a base URL, ``v1/pre-reboot`` (RecursiveLock) and ``v1/steady-state``
(UnlockIfHeld), each with the header ``fleet-lock-protocol: true`` and the body
``{"client_params": {"id": "...", "group": "..."}}``. 200 is success; anything else is a refusal,
whose body should be ``{"kind": ..., "value": ...}`` with a ``kind`` of bounded cardinality
(Zincati uses it as a metrics label). Zincati sends the body pretty-printed and without a
``Content-Type``, so a server must not insist on one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

HEADER = "fleet-lock-protocol"
PRE_REBOOT = "v1/pre-reboot"
STEADY_STATE = "v1/steady-state"
DEFAULT_GROUP = "default"
GROUP = re.compile(r"^[a-zA-Z0-9.-]+$")
MAX_BODY = 64 * 1024

# Error kinds: airlock's, plus ours for a full semaphore (the protocol's own example).
BAD_REQUEST = "bad_request"
INVALID_IDENTITY = "invalid_client_identity"
UNKNOWN_GROUP = "unknown_group"
SEMAPHORE_FULL = "failed_lock_semaphore_full"
FAILED_LOCK = "failed_lock"
FAILED_UNLOCK = "failed_unlock"


class ProtocolError(ValueError):
    """A refusal: HTTP ``status`` with the protocol's ``{kind, value}`` body."""

    def __init__(self, status: int, kind: str, value: str):
        super().__init__(f"{kind}: {value}")
        self.status, self.kind, self.value = status, kind, value

    def body(self) -> dict[str, str]:
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class ClientParams:
    id: str
    group: str = DEFAULT_GROUP

    def body(self) -> bytes:
        """The request body, pretty-printed as Zincati sends it."""
        return json.dumps({"client_params": {"id": self.id, "group": self.group}},
                          indent=2).encode()


def check_group(group: str) -> str:
    if not GROUP.fullmatch(group):
        raise ProtocolError(400, INVALID_IDENTITY,
                            f"group {group!r} does not match {GROUP.pattern}")
    return group


def parse_request(headers: Any, body: bytes) -> ClientParams:
    """The client's parameters, or ProtocolError naming what is wrong."""
    if headers.get(HEADER) != "true":
        raise ProtocolError(400, BAD_REQUEST, f"missing header '{HEADER}: true'")
    try:
        document = json.loads(body)
    except ValueError:
        raise ProtocolError(400, BAD_REQUEST, "the body is not JSON") from None
    params = document.get("client_params") if isinstance(document, dict) else None
    if not isinstance(params, dict):
        raise ProtocolError(400, BAD_REQUEST, "the body has no 'client_params' object")
    client_id, group = params.get("id"), params.get("group", DEFAULT_GROUP)
    if not isinstance(client_id, str) or not client_id:
        raise ProtocolError(400, INVALID_IDENTITY, "client_params.id must be a non-empty string")
    if not isinstance(group, str):
        raise ProtocolError(400, INVALID_IDENTITY, "client_params.group must be a string")
    return ClientParams(client_id, check_group(group))
