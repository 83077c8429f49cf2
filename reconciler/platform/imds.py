"""An EC2 instance metadata service (IMDSv2) client with one overall deadline.

Why a deadline and not a retry count: a host with no metadata service (a laptop, a metal host
given ``--imds-endpoint`` by mistake, a VPC that blocks it) must still boot on its local user
data, and an operator wants to know the worst case: boot waits at most ``deadline`` seconds for
the whole conversation (token, user data, identity), however the service misbehaves (no answer,
5xx, a connection reset, a slow drip). Within the deadline, failures are retried with
exponential back-off, as AWS's SDKs do.

IMDSv2 as AWS documents it: ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds``
returns a session token; every ``GET`` carries it in ``X-aws-ec2-metadata-token``; 401 means the
token is missing, expired or wrong (we fetch a new one, once); 404 means the item does not
exist (no user data is a normal answer, not an error). Standard library only: the boot path must
not depend on an event loop.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

DEFAULT_ENDPOINT = "http://169.254.169.254"
IPV6_ENDPOINT = "http://[fd00:ec2::254]"
DEFAULT_DEADLINE = 30.0
TOKEN_TTL = 21600  # seconds; the most IMDSv2 grants
_MAX_BODY = 16 * 1024 * 1024 + 1  # EC2 user data is at most 16 KiB; metadata is small
_ATTEMPT_TIMEOUT = 5.0
_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 2.0


class ImdsUnavailable(Exception):
    """The metadata service did not give an answer within the deadline (or refused us)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


Transport = Callable[[str, str, dict[str, str], float], Answer]


def check_endpoint(endpoint: str) -> SplitResult:
    """``endpoint`` split, or ValueError saying what an endpoint looks like."""
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as error:
        raise ValueError(f"{endpoint!r}: {error}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(
            f"{endpoint!r}: an IMDS endpoint is an http:// URL, e.g. {DEFAULT_ENDPOINT} "
            f"or {IPV6_ENDPOINT}"
        )
    return parts


def http_transport(endpoint: str) -> Transport:
    """The real transport: one HTTP/1.1 request on a fresh connection, bounded by ``timeout``."""
    parts = check_endpoint(endpoint)
    host, port = parts.hostname or "", parts.port or 80
    prefix = parts.path.rstrip("/")

    def send(method: str, path: str, headers: dict[str, str], timeout: float) -> Answer:
        # ``timeout`` bounds the whole exchange, not each recv: a server dripping a byte at a
        # time must not hold the boot past its deadline.
        end = time.monotonic() + timeout
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request(method, prefix + path, headers=headers)
            response = connection.getresponse()
            chunks: list[bytes] = []
            size = 0
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"answer not complete within {timeout:g} s")
                if connection.sock is not None:
                    connection.sock.settimeout(left)
                chunk = response.read1(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size >= _MAX_BODY:
                    raise ImdsUnavailable(
                        f"{endpoint}{path}: answer larger than {_MAX_BODY - 1} bytes"
                    )
            return Answer(response.status, b"".join(chunks))
        finally:
            connection.close()

    return send


class ImdsClient:
    """IMDSv2 with a session token and one deadline over all requests of this client.

    The deadline starts at the first request. Once it has passed, every further request fails
    at once with :class:`ImdsUnavailable`, so the boot pipeline never waits twice.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        deadline: float = DEFAULT_DEADLINE,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.deadline = deadline
        self._send = transport or http_transport(self.endpoint)
        self._clock = clock
        self._sleep = sleep
        self._expires: float | None = None
        self._token: str | None = None
        self.attempts = 0

    def get(self, path: str) -> bytes | None:
        """The item at ``path`` (e.g. ``/latest/user-data``), or None when IMDS says 404."""
        for renewed in (False, True):
            token = self._session_token()
            answer = self._request("GET", path, {"X-aws-ec2-metadata-token": token})
            if answer.status == 200:
                return answer.body
            if answer.status == 404:
                return None
            if answer.status == 401 and not renewed:
                self._token = None  # expired or revoked: one new session, then give up
                continue
            raise ImdsUnavailable(f"{self.endpoint}{path}: HTTP {answer.status}")
        raise ImdsUnavailable(f"{self.endpoint}{path}: the session token was refused")

    def get_text(self, path: str) -> str | None:
        body = self.get(path)
        return None if body is None else body.decode("utf-8", "replace").strip()

    def _session_token(self) -> str:
        if self._token is None:
            answer = self._request(
                "PUT",
                "/latest/api/token",
                {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)},
            )
            if answer.status != 200 or not answer.body.strip():
                raise ImdsUnavailable(
                    f"{self.endpoint}: no IMDSv2 session token (HTTP {answer.status})"
                )
            self._token = answer.body.decode("ascii", "replace").strip()
        return self._token

    def _remaining(self) -> float:
        now = self._clock()
        if self._expires is None:
            self._expires = now + self.deadline
        return self._expires - now

    def _request(self, method: str, path: str, headers: dict[str, str]) -> Answer:
        """One answer that is not a server error, retried with back-off until the deadline."""
        backoff = _FIRST_BACKOFF
        last = "no answer"
        while True:
            remaining = self._remaining()
            if remaining <= 0:
                raise ImdsUnavailable(
                    f"{self.endpoint} did not answer within {self.deadline:g} s ({last})"
                )
            self.attempts += 1
            try:
                answer = self._send(method, path, headers, min(remaining, _ATTEMPT_TIMEOUT))
                if answer.status < 500 and answer.status != 429:
                    return answer
                last = f"{method} {path}: HTTP {answer.status}"
            except (TimeoutError, OSError, http.client.HTTPException) as error:
                last = f"{method} {path}: {error or type(error).__name__}"
            pause = min(backoff, max(0.0, self._remaining()))
            if pause > 0:
                self._sleep(pause)
            backoff = min(backoff * 2, _MAX_BACKOFF)


def on_ec2(sys_root: Path = Path("/sys")) -> bool:
    """Whether this machine is an EC2 instance, by its firmware (as cloud-init tells)."""
    dmi = sys_root / "class/dmi/id"
    for name, expected in (("sys_vendor", "Amazon EC2"), ("board_vendor", "Amazon EC2")):
        try:
            if (dmi / name).read_text().strip() == expected:
                return True
        except OSError:
            pass
    try:
        return (sys_root / "hypervisor/uuid").read_text().strip().lower().startswith("ec2")
    except OSError:
        return False
