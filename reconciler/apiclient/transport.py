"""apiclient's transport: one HTTP/1.1 connection to the API's Unix socket, and its errors.

Standard library only (``hostcore.unixhttp`` rather than ``http.client``, whose ``email.*``
imports cost more than the rest of a ``get``); shared by ``logdog`` and ``enable-admin-container``.
"""

from __future__ import annotations

import json
import os
import sys

from hostcore import unixhttp  # in the zipapp too (reconciler/toolbox.py)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~2 ms at startup; annotations are not evaluated
    from typing import Any

DEFAULT_SOCKET = "/run/api.sock"
# commit_and_apply?wait=true lasts as long as the reconcile pass; $APICLIENT_TIMEOUT lowers it
REQUEST_TIMEOUT = float(os.environ.get("APICLIENT_TIMEOUT") or 600.0)


class ClientError(Exception):
    """A failure to report on stderr (exit 1)."""


class ResponseError(ClientError):
    """A non-2xx answer: ``Status <code> when <method>ing <uri>: <body>``."""

    def __init__(self, method: str, uri: str, status: int, body: str):
        self.method, self.uri, self.status, self.body = method, uri, status, body
        message = f"Status {status} when {method}ing {uri}: {body}"
        if status in (404, 405) and body.strip() in ("404: Not Found", "405: Method Not Allowed"):
            message += "\n(the API server does not provide this endpoint)"
        super().__init__(message)

    def reason(self, verbose: int = 0) -> str:
        """The server's reason first, the status at the end (with the request under ``-v``);
        the ``transaction '<name>': `` prefix of apiclient's own transactions dropped."""
        text = self.body.strip() or "(no reason given)"
        if text.startswith("transaction '"):
            end = text.find("': ", len("transaction '"))
            if end > 0 and text[len("transaction '"):end].startswith("apiclient-"):
                text = text[end + 3:]
        where = f" when {self.method}ing {self.uri}" if verbose else ""
        if self.status in (404, 405) and text in ("404: Not Found", "405: Method Not Allowed"):
            text = f"the API server does not provide {self.uri.split('?', 1)[0]}"
        return f"{text} (status {self.status}{where})"


class Client:
    """One HTTP/1.1 connection to the API socket, reused across requests."""

    def __init__(self, socket_path: str, verbose: int = 0):
        self.socket_path = socket_path
        self.verbose = verbose
        self._conn: Any = None
        self.content_type = ""  # of the last answer

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = unixhttp.UnixHTTPConnection(self.socket_path, timeout=REQUEST_TIMEOUT)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, uri: str, data: str | bytes | None = None
    ) -> tuple[int, str, str]:
        """Send one request; returns (status, reason, body text). Raises ClientError on I/O."""
        method = method.upper()
        body = data.encode() if isinstance(data, str) else data
        headers = {"Content-Type": "application/json"}
        if self.verbose > 1:
            print(f"> {method} {uri}", file=sys.stderr)
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.connected
            try:
                response = conn.request(method, uri, body=body, headers=headers)
                break
            except ValueError as error:  # a space or line break in the URI
                raise ClientError(f"apiclient: {error}") from None
            except (FileNotFoundError, ConnectionRefusedError, PermissionError) as error:
                self.close()
                raise ClientError(
                    f"Failed to connect to API socket {self.socket_path}: {error.strerror or error}"
                ) from None
            except OSError as error:
                self.close()
                # A kept-alive connection the server had closed: retry once on a fresh one.
                stale = isinstance(
                    error, BrokenPipeError | ConnectionResetError | unixhttp.RemoteDisconnected
                )
                if attempt == 2 or not reused or not stale:
                    raise ClientError(
                        f"Failed to {method} {uri} on {self.socket_path}: {error}"
                    ) from None
        text = response.body.decode("utf-8", errors="replace")
        self.content_type = (response.header("content-type") or "").split(";")[0].strip()
        if self.verbose > 1:
            print(f"< {response.status} {response.reason}", file=sys.stderr)
        return response.status, response.reason, text

    def call(self, method: str, uri: str, data: Any = None) -> Any:
        """Request with a JSON body (when given); JSON answer (None when empty); non-2xx raises."""
        payload = None if data is None else json.dumps(data)
        status, _, text = self.request(method, uri, payload)
        if not 200 <= status < 300:
            raise ResponseError(method.upper(), uri, status, text)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            if self.content_type in ("application/json", "text/html"):  # not what it says, or
                # not the daemon at all (a proxy's page)
                shown = " ".join(text.split())[:60]
                raise ClientError(
                    f"Failed to {method.upper()} {uri} on {self.socket_path}: the answer is not "
                    f"JSON ({self.content_type or 'no content type'}): {shown!r}"
                ) from None
            return text


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~,")


def quote(text: str) -> str:
    """Percent-encode a query value (``urllib.parse.quote`` with ``safe=','``, without its
    import, which costs more than the rest of a ``get``)."""
    return "".join(
        chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


def query(path: str, **params: Any) -> str:
    parts = [
        f"{name}={quote(str(value))}"
        for name, value in params.items()
        if value is not None
    ]
    return path + ("?" + "&".join(parts) if parts else "")


def random_suffix() -> str:
    """A transaction name's unique part."""
    return os.urandom(8).hex()


def socket_path(given: str | None) -> str:
    """``-s/--socket-path``, else ``$APICLIENT_SOCKET``, else ``/run/api.sock``."""
    return given or os.environ.get("APICLIENT_SOCKET") or DEFAULT_SOCKET


def discard(client: Client, tx: str) -> None:
    """Delete a transaction apiclient staged; a failure is a warning (the error that led here
    is the one to report)."""
    try:
        client.call("DELETE", query("/tx", tx=tx))
    except ClientError as error:
        print(f"warning: could not discard transaction {tx!r}: {error}", file=sys.stderr)
