"""A FleetLock client, as Zincati's ``src/fleet_lock``: what a host uses to take its slot.

Standard library only. 200 is success; anything else is a :class:`LockRejection` carrying the
server's ``{kind, value}``, or ``generic_http_<code>`` when the body is not one (Zincati's rule).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from reconciler.fleet import protocol


@dataclass
class LockRejection(Exception):
    endpoint: str
    status: int
    kind: str
    value: str

    def __str__(self) -> str:
        return f"lock manager {self.endpoint} rejection, code {self.status}: {self.value}"


class FleetLockClient:
    def __init__(self, base_url: str, params: protocol.ClientParams, timeout: float = 30.0):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.params = params
        self.timeout = timeout

    def pre_reboot(self) -> None:
        """Take (or keep) a reboot slot; LockRejection when refused."""
        self._post(protocol.PRE_REBOOT, "pre-reboot")

    def steady_state(self) -> None:
        """Give back the slot if held."""
        self._post(protocol.STEADY_STATE, "steady-state")

    def _post(self, path: str, endpoint: str) -> None:
        request = urllib.request.Request(
            self.base_url + path, data=self.params.body(), method="POST",
            headers={protocol.HEADER: "true"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                document = json.loads(body)
                kind, value = str(document["kind"]), str(document["value"])
            except (ValueError, KeyError, TypeError):
                kind, value = f"generic_http_{error.code}", "(unknown server error)"
            raise LockRejection(endpoint, error.code, kind, value) from None
