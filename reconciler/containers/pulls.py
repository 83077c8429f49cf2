"""Images for host containers: found locally at once, pulled off the pass with a back-off.

How a source becomes an image, cheapest first:

1. a local archive (``oci-archive:``/``docker-archive:``): loaded in the pass, once per content
   (its inode, size and mtime are remembered);
2. an image already in the engine's store (a local tag such as ``localhost/tiny:1``, or a
   digest): used as it is, never pulled;
3. one of the project's own images (``localhost/host-reconciler/...``) built on this machine by
   ``reconciler images build``: loaded from its archive in the image directory;
4. anything else is a registry pull, run in a thread of its own with its own deadline, so a slow
   or unreachable registry never holds up the pass (files, services and the other containers go
   on). Until it ends the container is ``pending``; when it ends the worker is woken. A failed
   pull is retried with exponential back-off, per container; meanwhile the container's step
   fails at once with one line naming the source, the attempt and the reason.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.containers.engine import ContainerEngine, EngineError, EngineUnavailable, Image
from reconciler.containers.planner import ARCHIVE_TRANSPORTS
from reconciler.logs import get_logger

log = get_logger("pulls")
PULL_DEADLINE = 300.0


class PullPending(EngineError):
    """The pull of a source is under way off the pass; the message says since when."""


@dataclass
class _Job:
    source: str
    attempt: int
    started: float
    image: Image | None = None
    error: str = ""
    done: bool = False
    retry_at: float = 0.0
    thread: threading.Thread | None = None


class Pulls:
    def __init__(
        self,
        engine: ContainerEngine,
        *,
        backoff_start: float = 2.0,
        backoff_max: float = 300.0,
        deadline: float = PULL_DEADLINE,
        grace: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        image_dir: Callable[[], Path] | None = None,
        on_done: Callable[[str], None] = lambda _reason: None,
    ):
        self.engine = engine
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.deadline = deadline
        self.grace = grace  # how long a pass waits for a pull it has just started
        self.clock = clock
        self.image_dir = image_dir
        self.on_done = on_done
        self._lock = threading.Lock()
        self._archives: dict[str, tuple[tuple[int, int, int], Image]] = {}
        self._jobs: dict[tuple[str, str], _Job] = {}

    def image(self, name: str, source: str) -> tuple[Image, bool]:
        """The image for container ``name``'s ``source``, and whether it was known already.

        Raises ``PullPending`` while a registry pull runs, ``EngineError`` when the source
        cannot be had (for a registry: until the back-off lets the next attempt start).
        """
        if source.startswith(ARCHIVE_TRANSPORTS):
            return self._archive(source)
        with self._lock:
            pulling = (name, source) in self._jobs
        if pulling:  # under way or backing off: no engine call at all until it ends
            return self._registry(name, source), False
        local = self._local(source)
        if local is not None:
            return local, True
        built = self._built_archive(source)
        if built is not None:
            self.engine.load(built)
            local = self._local(source)
            if local is None:
                raise EngineError(f"source {source}: {built} holds no image of that name")
            return local, False
        return self._registry(name, source), False

    def forget(self, source: str) -> None:
        """The image of ``source`` went away behind our back: find it again next time."""
        with self._lock:
            self._archives.pop(source, None)

    def keep_only(self, names: set[str]) -> None:
        """Drop the pull state of containers no longer desired (a running pull finishes)."""
        with self._lock:
            for key in [k for k in self._jobs if k[0] not in names]:
                del self._jobs[key]

    # ---- the ways -------------------------------------------------------------------------

    def _local(self, source: str) -> Image | None:
        finder = getattr(self.engine, "local_image", None)
        return finder(source) if finder is not None else None

    def _built_archive(self, source: str) -> Path | None:
        if not source.startswith("localhost/"):
            return None
        from reconciler.hostimages.build import archive_for

        return archive_for(source, self.image_dir() if self.image_dir else None)

    def _archive(self, source: str) -> tuple[Image, bool]:
        try:
            info = os.stat(source.split(":", 1)[1])
            stamp: tuple[int, int, int] | None = (info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError:
            stamp = None  # let the engine say what is wrong with it
        with self._lock:
            known = self._archives.get(source)
        if stamp is not None and known is not None and known[0] == stamp:
            return known[1], True
        try:
            image = self.engine.pull(source)
        except EngineUnavailable:
            raise
        except EngineError as error:
            raise EngineError(f"source {source}: {error}") from None
        if stamp is not None:
            with self._lock:
                self._archives[source] = (stamp, image)
        return image, False

    def _registry(self, name: str, source: str) -> Image:
        key = (name, source)
        now = self.clock()
        with self._lock:
            job = self._jobs.get(key)
            if job is None or (job.done and job.image is None and now >= job.retry_at):
                job = self._start(key, (job.attempt if job else 0) + 1, now)
        if job.thread is not None and not job.done and self.grace > 0:
            job.thread.join(self.grace)
        with self._lock:
            if job.done and job.image is not None:
                self._jobs.pop(key, None)
                return job.image
            if job.done:
                wait = max(0.0, job.retry_at - self.clock())
                raise EngineError(
                    f"source {source}: pull failed (attempt {job.attempt}): {job.error};"
                    f" next attempt in {wait:.0f} s"
                )
            running = self.clock() - job.started
        raise PullPending(f"pulling {source} (attempt {job.attempt}, {running:.0f} s so far)")

    def _start(self, key: tuple[str, str], attempt: int, now: float) -> _Job:
        job = _Job(key[1], attempt, now)
        self._jobs[key] = job
        job.thread = threading.Thread(
            target=self._pull, args=(key, job), name=f"pull-{key[0]}", daemon=True
        )
        job.thread.start()
        return job

    def _pull(self, key: tuple[str, str], job: _Job) -> None:
        try:
            image = self.engine.pull(job.source, timeout=self.deadline)
            error = ""
        except EngineError as failure:
            image, error = None, " ".join(str(failure).split())
        except Exception as failure:  # a bug must not kill the retries silently
            image, error = None, f"{type(failure).__name__}: {failure}"
        with self._lock:
            job.image, job.error, job.done = image, error, True
            if image is None:
                delay = min(self.backoff_max, self.backoff_start * 2 ** (job.attempt - 1))
                job.retry_at = self.clock() + delay
        if image is None:
            log.warning("pull failed", container=key[0], source=job.source,
                        attempt=job.attempt, error=error)
        self.on_done(f"pull of {job.source} for {key[0]} {'done' if image else 'failed'}")
