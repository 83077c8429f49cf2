"""The network seam: one fetcher for `http(s)://` and `file://` repositories.

It appends Bottlerocket's telemetry query parameters (sorted by name) to every HTTP
request, and remembers the last URL so errors can name the role being fetched.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from tuf.api import exceptions as tuf_exc
from tuf.ngclient import FetcherInterface, Urllib3Fetcher

CHUNK_SIZE = 1 << 20  # large chunks keep Python overhead negligible next to hashing


class UpdogFetcher(FetcherInterface):
    """Fetch over HTTP(S) with telemetry query parameters, or straight from `file://`."""

    def __init__(
        self,
        params: Mapping[str, str] | None = None,
        *,
        socket_timeout: int = 30,
        chunk_size: int = CHUNK_SIZE,
        user_agent: str | None = "updog",
    ) -> None:
        self.params: dict[str, str] = dict(params or {})
        self.chunk_size = chunk_size
        self.last_url: str | None = None
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
            return self._http._fetch(self.with_query(url))
        raise tuf_exc.DownloadError(f"unsupported URL scheme {scheme!r} in {url}")

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
