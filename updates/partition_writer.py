"""Writing an OS image into one partition, bypassing the page cache (O_DIRECT).

Why direct: an image is hundreds of MiB that nobody reads before the reboot. Written through the
page cache it would evict the running host's working set (its containers' files) and leave the
flush to writeback throttling at fsync time; written direct from aligned buffers it goes to the
device as it arrives, and memory stays the host's.

Why write-behind: a helper thread writes each full buffer while the caller fills the next one
(and the TUF client hashes), so the device, the hash and the fetch all work at once. At most
`depth` buffers exist; a failed write raises from a later `write()` or from `sync()`.

Where direct I/O is not possible (a filesystem without O_DIRECT, or a partition not aligned to
`ALIGN`), the writer falls back to ordinary buffered writes; `sync()` makes both durable.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from updates.errors import UpdateError

ALIGN = 4096  # covers 512-byte and 4Kn logical blocks, and the page size
BUFFER_SIZE = 1 << 20
DEPTH = 3  # buffers: one filling, up to two being written


class PartitionWriter:
    """A write-only stream into bytes ``[offset, offset + size)`` of a disk or disk image."""

    def __init__(self, path: str, offset: int, size: int, *,
                 buffer_size: int = BUFFER_SIZE, depth: int = DEPTH) -> None:
        if buffer_size % ALIGN:
            raise ValueError(f"buffer_size must be a multiple of {ALIGN}")
        self.offset, self.size = offset, size
        self.written = 0  # bytes accepted by write()
        self._queued = 0  # bytes handed to the writer thread
        self.fd, self.direct = _open(path, direct=offset % ALIGN == 0)
        # Anonymous mappings are page-aligned, as O_DIRECT wants.
        self._free = [mmap.mmap(-1, buffer_size) for _ in range(depth)]
        self._in_flight: deque[tuple[Future[None], mmap.mmap]] = deque()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="partition-writer")
        self._buffer = self._free.pop()
        self._fill = 0

    def write(self, data: bytes | memoryview) -> int:
        if self.written + len(data) > self.size:
            raise UpdateError(f"image larger than its partition ({self.size} bytes)")
        view = memoryview(data)
        while view:
            n = min(len(view), len(self._buffer) - self._fill)
            self._buffer[self._fill:self._fill + n] = view[:n]
            self._fill += n
            self.written += n
            view = view[n:]
            if self._fill == len(self._buffer):
                self._queue_buffer()
        return len(data)

    def sync(self) -> None:
        """Write what is buffered and fsync: on return, every accepted byte is durable."""
        while self._in_flight:
            self._reap_oldest()
        if self._fill:
            if self.direct and self._fill % ALIGN:
                # O_DIRECT needs whole blocks; the tail goes through the page cache instead
                # (the fsync below covers both paths).
                fcntl.fcntl(self.fd, fcntl.F_SETFL,
                            fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                self.direct = False
            _pwrite_all(self.fd, self._buffer, self._fill, self.offset + self._queued)
            self._queued += self._fill
            self._fill = 0
        os.fsync(self.fd)

    def _queue_buffer(self) -> None:
        done = self._writer.submit(_pwrite_all, self.fd, self._buffer, self._fill,
                                   self.offset + self._queued)
        self._in_flight.append((done, self._buffer))
        self._queued += self._fill
        self._fill = 0
        if not self._free:
            self._reap_oldest()
        self._buffer = self._free.pop()

    def _reap_oldest(self) -> None:
        done, buffer = self._in_flight.popleft()
        self._free.append(buffer)
        done.result()  # raises the write's error, if any

    def close(self) -> None:
        if self.fd < 0:
            return
        self._writer.shutdown(wait=True)  # no buffer may be unmapped under a running write
        os.close(self.fd)
        self.fd = -1
        for buffer in [self._buffer, *self._free, *(b for _, b in self._in_flight)]:
            buffer.close()

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _pwrite_all(fd: int, buffer: mmap.mmap, length: int, position: int) -> None:
    with memoryview(buffer)[:length] as view:
        done = 0
        while done < length:
            done += os.pwrite(fd, view[done:], position + done)


def _open(path: str, *, direct: bool) -> tuple[int, bool]:
    if direct:
        try:
            return os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_DIRECT), True
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: this filesystem has no direct I/O
                raise
    return os.open(path, os.O_WRONLY | os.O_CLOEXEC), False
