"""The TUF client: python-tuf's ngclient with a persistent cache, a lock and streaming targets.

`TufClient` is the imperative shell around `tuf.ngclient.Updater` (whose
`TrustedMetadataSet` does the pure verification). It adds what an OS updater needs:

* a persistent metadata cache (`metadata_dir`), so rollback and freeze protection hold
  across runs, guarded by an exclusive lock;
* explicit size limits (python-tuf's defaults are too small for a long-lived repository);
* a fetcher that also reads `file://` repositories and sends telemetry query parameters;
* streaming target download: bytes go to a sink or a file on disk (never the whole image
  in memory), with length and every signed hash checked before the result is trusted;
* errors classified per attack (`updates.errors`).

`copy_target()` is the seam for writing an image straight into a partition: it raises
unless the streamed bytes matched, so the caller marks a partition valid only after it
returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import Updater, UpdaterConfig

from hostcore.durable import fsync_directory, replace_file, replacing
from updates.errors import (
    EndlessDataError,
    TamperedTargetError,
    TargetNotFoundError,
    UpdateError,
    classify,
)
from updates.fetcher import UpdogFetcher, role_of
from updates.lock import FileLock

MiB = 1 << 20
TOP_LEVEL_ROLES = ("root", "timestamp", "snapshot", "targets")


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what the repository may make us download (tough's defaults)."""

    root_max_length: int = 1 * MiB
    timestamp_max_length: int = 1 * MiB
    snapshot_max_length: int = 10 * MiB  # used only when the timestamp gives no length
    targets_max_length: int = 10 * MiB  # used only when the snapshot gives no length
    max_root_rotations: int = 1024
    max_delegations: int = 32
    small_target_max_length: int = 16 * MiB  # targets read into memory (manifest.json)

    def updater_config(self) -> UpdaterConfig:
        return UpdaterConfig(
            max_root_rotations=self.max_root_rotations,
            max_delegations=self.max_delegations,
            root_max_length=self.root_max_length,
            timestamp_max_length=self.timestamp_max_length,
            snapshot_max_length=self.snapshot_max_length,
            targets_max_length=self.targets_max_length,
            app_user_agent="updog",
        )


def _digest(algorithm: str) -> Any:
    if algorithm == "blake2b-256":
        return hashlib.blake2b(digest_size=32)
    try:
        return hashlib.new(algorithm)
    except (ValueError, TypeError):
        raise TamperedTargetError(
            f"cannot verify target: unsupported hash algorithm {algorithm!r}"
        ) from None


class _Verifier:
    """Counts and hashes a stream incrementally against one TargetFile."""

    def __init__(self, info: TargetFile) -> None:
        self.info = info
        self.length = 0
        self.digests = {alg: _digest(alg) for alg in info.hashes}

    def update(self, chunk: bytes) -> None:
        self.count(chunk)
        self.digest(chunk)

    def count(self, chunk: bytes) -> None:
        """Add `chunk` to the length; an overlong stream stops here, before anyone uses it."""
        self.length += len(chunk)
        if self.length > self.info.length:
            raise EndlessDataError(
                f"target {self.info.path}: received more than its signed length of "
                f"{self.info.length} bytes; refusing it"
            )

    def digest(self, chunk: bytes) -> None:
        for d in self.digests.values():
            d.update(chunk)

    def check(self) -> None:
        if self.length != self.info.length:
            raise TamperedTargetError(
                f"target {self.info.path}: got {self.length} bytes, signed length is "
                f"{self.info.length}"
            )
        for alg, d in self.digests.items():
            if not hmac.compare_digest(d.hexdigest(), self.info.hashes[alg].lower()):
                raise TamperedTargetError(
                    f"target {self.info.path}: {alg} {d.hexdigest()} does not match the "
                    f"signed {self.info.hashes[alg]}"
                )


class DurableUpdater(Updater):
    """python-tuf's Updater whose metadata cache survives a power cut.

    Upstream replaces cache files without fsync, and swaps the ``root.json`` link by removing it
    first: a crash could leave an empty file or no trusted root at all. Here every cached file is
    fsynced before the rename, the directory after it, and the link is swapped atomically.
    """

    def _persist_file(self, filename: str, data: bytes) -> None:
        replace_file(filename, data)

    def _update_root_symlink(self) -> None:
        linkname = os.path.join(self._dir, "root.json")
        current = os.path.join("root_history", f"{self._trusted_set.root.version}.root.json")
        temporary = os.path.join(self._dir, f".root.json.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        os.symlink(current, temporary)
        os.replace(temporary, linkname)
        fsync_directory(self._dir)

class TufClient:
    """One verified session with a TUF repository (one refresh, like ngclient's Updater).

    `trusted_root` is the root shipped with the OS (bytes); python-tuf re-anchors on it
    and then walks forward through cached and remote roots. Pass `None` to trust the
    cache's own `root.json` (what the conformance CLI does after `init`).
    Use as a context manager: the cache lock is held until `close()`.
    """

    def __init__(
        self,
        metadata_dir: Path,
        metadata_base_url: str,
        *,
        trusted_root: bytes | None,
        targets_base_url: str | None = None,
        fetcher: UpdogFetcher | None = None,
        limits: Limits = Limits(),  # noqa: B008 - frozen dataclass, safe as a default
        lock_timeout: float = 0.0,
    ) -> None:
        self.metadata_dir = Path(metadata_dir)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_base_url = targets_base_url
        self.fetcher = fetcher or UpdogFetcher()
        self.limits = limits
        self._lock = FileLock(self.metadata_dir / ".lock", timeout=lock_timeout).acquire()
        try:
            self._updater = DurableUpdater(
                str(self.metadata_dir),
                metadata_base_url,
                fetcher=self.fetcher,
                config=limits.updater_config(),
                bootstrap=trusted_root,
            )
        except FileNotFoundError as e:
            self._lock.release()
            raise UpdateError(f"no trusted root: {e}") from e
        except Exception as e:
            self._lock.release()
            raise classify(e, "trusted root metadata") from e
        self._refreshed = False
        self._refresh_error: UpdateError | None = None
        self._root: Root | None = None

    # -- lifecycle

    def close(self) -> None:
        """Release the cache lock."""
        self._lock.release()

    def __enter__(self) -> TufClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- metadata

    def refresh(self) -> None:
        """Run the TUF client workflow for the top-level roles (once per client)."""
        if self._refresh_error is not None:
            raise self._refresh_error  # one attempt per client, as in ngclient
        if self._refreshed:
            return
        try:
            self._updater.refresh()
        except Exception as e:
            self._refresh_error = classify(e, self._fetching())
            raise self._refresh_error from e
        self._refreshed = True
        self._root = None

    def _fetching(self) -> str:
        role = role_of(self.fetcher.last_url)
        return f"{role} metadata" if role else "metadata"

    def trusted_root(self) -> Root:
        """The root this client trusts now (after `refresh()`, the newest one)."""
        if self._root is None:
            self._root = Metadata[Root].from_file(str(self.metadata_dir / "root.json")).signed
        return self._root

    def trusted_versions(self) -> dict[str, int]:
        """Versions of the top-level metadata in the cache (the last good state)."""
        out = {}
        for role in TOP_LEVEL_ROLES:
            path = self.metadata_dir / f"{role}.json"
            if path.exists():
                out[role] = Metadata.from_file(str(path)).signed.version
        return out

    def get_target(self, name: str) -> TargetFile:
        """Signed information about target `name` (refreshing first if needed)."""
        self.refresh()
        try:
            info = self._updater.get_targetinfo(name)
        except Exception as e:
            raise classify(e, self._fetching()) from e
        if info is None:
            raise TargetNotFoundError(f"{name!r} is not listed in the signed targets metadata")
        return info

    # -- targets

    def target_url(self, info: TargetFile, base_url: str | None = None) -> str:
        """Where `info` lives: `<base>/<dir>/<first hash>.<name>` with consistent snapshots."""
        base = base_url or self.targets_base_url
        if base is None:
            raise ValueError("no targets base URL configured")
        base = base if base.endswith("/") else base + "/"
        path = info.path
        if self.trusted_root().consistent_snapshot:
            dirname, sep, basename = path.rpartition("/")
            path = f"{dirname}{sep}{next(iter(info.hashes.values()))}.{basename}"
        return base + path

    def peek(self, info: TargetFile, size: int, *, base_url: str | None = None) -> bytes:
        """The first `size` bytes of target `info`, *unverified*: only for refusing it early
        (its format, its declared size), never for trusting it."""
        head = bytearray()
        try:
            stream = self.fetcher.fetch(self.target_url(info, base_url))
            try:
                for chunk in stream:
                    head += chunk
                    if len(head) >= size:
                        break
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
        except UpdateError:
            raise
        except Exception as e:
            raise classify(e, f"target {info.path}") from e
        return bytes(head[:size])

    def copy_target(
        self,
        info: TargetFile,
        sink: BinaryIO,
        *,
        base_url: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Stream target `info` into `sink`, then verify length and hashes.

        Bytes reach `sink` before the verdict: treat them as untrusted unless this returns.
        More bytes than the signed length stop the download at once.
        """
        verifier = _Verifier(info)  # fails early on an unknown hash algorithm
        url = self.target_url(info, base_url)
        try:
            # Hashing (hashlib) and writing (the sink's syscalls) both release the GIL: a helper
            # thread hashes each chunk while the sink takes it and the next one is fetched; it
            # may run one chunk behind, never more (that bounds the memory held).
            with ThreadPoolExecutor(max_workers=1) as hasher:
                behind: Future[None] | None = None
                for chunk in self.fetcher.fetch_target(url, info.length):
                    verifier.count(chunk)
                    hashed = hasher.submit(verifier.digest, chunk)
                    sink.write(chunk)
                    if behind:
                        behind.result()
                    behind = hashed
                    if progress:
                        progress(verifier.length, info.length)
                if behind:
                    behind.result()
        except UpdateError:
            raise
        except Exception as e:
            raise classify(e, f"target {info.path}") from e
        verifier.check()

    def read_target(self, name: str) -> bytes:
        """A small target (e.g. `manifest.json`), verified, in memory."""
        info = self.get_target(name)
        if info.length > self.limits.small_target_max_length:
            raise EndlessDataError(
                f"target {name}: signed length {info.length} exceeds the in-memory limit "
                f"of {self.limits.small_target_max_length} bytes"
            )
        buf = io.BytesIO()
        self.copy_target(info, buf)
        return buf.getvalue()

    def download_target(
        self,
        info: TargetFile,
        dest: Path,
        *,
        base_url: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Download `info` to `dest` atomically: nothing appears at `dest` unless verified.

        Streams to a temporary file next to `dest` (same filesystem, not `$TMPDIR`), fsyncs
        it, and renames it into place only after length and hashes matched.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with replacing(dest) as f:
            self.copy_target(info, f, base_url=base_url, progress=progress)
        return dest

    @staticmethod
    def is_cached(info: TargetFile, path: Path) -> bool:
        """Whether `path` already holds exactly target `info` (streamed, not loaded)."""
        try:
            with open(path, "rb") as f:
                verifier = _Verifier(info)
                while chunk := f.read(1 << 20):
                    verifier.update(chunk)
                verifier.check()
        except (OSError, UpdateError):
            return False
        return True


def target_filename(name: str) -> str:
    """A safe local file name for target path `name` (URL-quoted, as python-tuf does).

    Always one path component: `/` is quoted, and so are the dots of `.` and `..`, which
    quoting alone leaves as they are (a target named `..` would be the parent directory)."""
    if not name:
        raise ValueError("a target name cannot be empty")
    quoted = urllib.parse.quote(name, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted
