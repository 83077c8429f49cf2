"""The network seam: one fetcher for `http(s)://` and `file://` repositories.

It appends Bottlerocket's telemetry query parameters (sorted by name) to every HTTP
request, and remembers the last URL so errors can name the role being fetched.

Targets (images) are fetched by `fetch_target`: a download cut part-way resumes where it stopped
with an HTTP `Range: bytes=N-` request (a server that ignores it answers 200 and the bytes
already received are skipped), so the caller sees one uninterrupted stream and verifies the
whole target as usual; and `max_rate` (bytes/s, `settings.updates.max-download-rate`) caps the
rate by sleeping between chunks.

Every file, metadata or target, has an overall `deadline` (seconds, `download_deadline` in
updog.toml, `settings.updates.download-deadline`): the socket timeout alone bounds each read,
so a server dripping one byte every few seconds would keep a download (and updog, and the
API's 423) going for ever. When the deadline passes, a watchdog shuts the connection down
(which ends a read blocked in the kernel) and the download fails with `SlowRetrievalError`
naming the file and the deadline. A resumed target shares its first request's deadline.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import urllib3
from tuf.api import exceptions as tuf_exc
from tuf.ngclient import FetcherInterface, Urllib3Fetcher

from updates.config import DOWNLOAD_DEADLINE

CHUNK_SIZE = 1 << 20  # large chunks keep Python overhead negligible next to hashing
RESUMES = 5  # cut downloads resumed per target before giving up
_CUT = (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
        urllib3.exceptions.SSLError, ConnectionError)


class UpdogFetcher(FetcherInterface):
    """Fetch over HTTP(S) with telemetry query parameters, or straight from `file://`."""

    def __init__(
        self,
        params: Mapping[str, str] | None = None,
        *,
        socket_timeout: int = 30,
        chunk_size: int = CHUNK_SIZE,
        user_agent: str | None = "updog",
        max_rate: int | None = None,
        deadline: float = DOWNLOAD_DEADLINE,
    ) -> None:
        self.params: dict[str, str] = dict(params or {})
        self.deadline = deadline
        self.user_agent = user_agent or "updog"
        self.chunk_size = chunk_size
        self.max_rate = max_rate
        self.socket_timeout = socket_timeout
        self.last_url: str | None = None
        self.resumed_at: list[int] = []  # offsets a cut target download resumed from
        self.sleep = time.sleep  # the rate cap's pause (tests record it)
        self._http = Urllib3Fetcher(
            socket_timeout=socket_timeout, chunk_size=chunk_size, app_user_agent=user_agent
        )

    def with_query(self, url: str) -> str:
        """`url` with the telemetry parameters appended, keys sorted by name."""
        if not self.params:
            return url
        query = urllib.parse.urlencode(sorted(self.params.items()))
        return f"{url}{'&' if '?' in url else '?'}{query}"

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.last_url = url
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme == "file":
            return self._file_chunks(url)
        if scheme in ("http", "https"):
            return self._whole(url)
        raise tuf_exc.DownloadError(f"unsupported URL scheme {scheme!r} in {url}")

    def fetch_target(self, url: str, length: int) -> Iterator[bytes]:
        """The bytes of a target of signed `length`: resumed when cut, capped to `max_rate`."""
        self.last_url = url
        start = time.monotonic()
        got = 0
        chunks = self._resuming(url, length) if urllib.parse.urlsplit(url).scheme in (
            "http", "https") else self.fetch(url)
        for chunk in chunks:
            got += len(chunk)
            yield chunk
            if self.max_rate:
                ahead = got / self.max_rate - (time.monotonic() - start)
                if ahead > 0:
                    self.sleep(ahead)

    def _whole(self, url: str) -> Iterator[bytes]:
        """One plain GET (metadata), within the deadline; HTTP errors raise here, before the
        first chunk (the root-version walk ends on a 404)."""
        ends = time.monotonic() + self.deadline
        response = self._open_http(url, 0, ends)
        return self._whole_chunks(url, response, ends)

    def _whole_chunks(self, url: str, response: urllib3.BaseHTTPResponse,
                      ends: float) -> Iterator[bytes]:
        try:
            yield from self._within(url, response, ends)
        except urllib3.exceptions.TimeoutError as e:
            raise tuf_exc.SlowRetrievalError(f"{url}: {e}") from e
        except _CUT as e:
            raise tuf_exc.DownloadError(f"{url}: download cut: {e}") from e
        finally:
            response.release_conn()

    def _within(self, url: str, response: urllib3.BaseHTTPResponse,
                ends: float) -> Iterator[bytes]:
        """The response's chunks; past `ends` the connection is shut down and the download
        fails with SlowRetrievalError (a read blocked in the kernel returns then)."""
        late = threading.Event()

        def cut() -> None:
            late.set()
            response.shutdown()

        watchdog = threading.Timer(max(ends - time.monotonic(), 0.0), cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            for chunk in response.stream(self.chunk_size):
                if late.is_set() or time.monotonic() > ends:
                    break
                yield chunk
        except Exception:
            if not late.is_set():
                raise
        finally:
            watchdog.cancel()
        if late.is_set() or time.monotonic() > ends:
            raise tuf_exc.SlowRetrievalError(
                f"{url}: not downloaded within its deadline of {self.deadline:g} s "
                f"(download_deadline)")

    def _resuming(self, url: str, length: int) -> Iterator[bytes]:
        got, cuts = 0, 0
        ends = time.monotonic() + self.deadline
        while True:
            response = self._open_http(url, got, ends)
            skip = got if got and response.status != 206 else 0  # Range ignored: skip ahead
            try:
                for chunk in self._within(url, response, ends):
                    if skip:
                        drop = min(skip, len(chunk))
                        chunk, skip = chunk[drop:], skip - drop
                        if not chunk:
                            continue
                    got += len(chunk)
                    yield chunk
                    if got > length:
                        return  # the caller refuses an overlong target
            except _CUT as e:
                cuts += 1
                if cuts > RESUMES:
                    raise tuf_exc.DownloadError(
                        f"{url}: download cut {cuts} times, last at byte {got}: {e}") from e
                self.resumed_at.append(got)
                continue
            finally:
                response.release_conn()
            if got >= length or response.status not in (200, 206):
                return
            cuts += 1  # ended early without an error: resume too
            if cuts > RESUMES:
                return  # the caller sees the short length and refuses it
            self.resumed_at.append(got)

    def _open_http(self, url: str, offset: int, ends: float) -> urllib3.BaseHTTPResponse:
        headers = {"User-Agent": self.user_agent}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        left = ends - time.monotonic()
        if left <= 0:
            raise tuf_exc.SlowRetrievalError(
                f"{url}: not downloaded within its deadline of {self.deadline:g} s "
                f"(download_deadline)")
        try:
            response = self._http._proxy_env.request(
                "GET", self.with_query(url), headers=headers, preload_content=False,
                timeout=urllib3.Timeout(min(self.socket_timeout, left)),
                retries=urllib3.Retry(3))
        except urllib3.exceptions.MaxRetryError as e:
            if isinstance(e.reason, urllib3.exceptions.TimeoutError):
                raise tuf_exc.SlowRetrievalError(f"{url}: {e.reason}") from e
            raise tuf_exc.DownloadError(f"{url}: {e.reason}") from e
        if response.status >= 400:
            response.close()
            raise tuf_exc.DownloadHTTPError(f"HTTP error occurred with status "
                                            f"{response.status}", response.status)
        return response

    def _file_chunks(self, url: str) -> Iterator[bytes]:
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        try:
            f: BinaryIO = path.open("rb")
        except FileNotFoundError:
            # 404 is what ends the root-version walk, so a missing file must say so.
            raise tuf_exc.DownloadHTTPError(f"{path} not found", 404) from None
        except IsADirectoryError:
            raise tuf_exc.DownloadHTTPError(f"{path} is a directory", 404) from None
        except PermissionError:
            raise tuf_exc.DownloadHTTPError(f"{path}: permission denied", 403) from None
        return self._read_chunks(f)

    def _read_chunks(self, f: BinaryIO) -> Iterator[bytes]:
        with f:
            while chunk := f.read(self.chunk_size):
                yield chunk


def role_of(url: str | None) -> str | None:
    """The TUF role a metadata URL names: `.../3.snapshot.json?x=y` gives `snapshot`."""
    if not url:
        return None
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not name.endswith(".json"):
        return None
    stem = name[: -len(".json")]
    head, _, rest = stem.partition(".")
    return rest if head.isdigit() and rest else stem
