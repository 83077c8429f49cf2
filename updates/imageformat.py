"""Image formats on the wire: raw, or an LZ4 frame decoded while it streams into a partition.

Bottlerocket publishes its boot, root and hash images as LZ4 frames (`*.lz4`) and updog decodes
them on the way to the disk. Here the TUF client verifies the bytes *as delivered* (the
compressed ones, which is what the targets metadata signs) and hands them to a `DecodingSink`,
which writes the *decoded* bytes to the partition writer.

What is refused, always before the first byte reaches the partition:

* a target in a format we recognise but do not decode (gzip, xz, zstd, bzip2, zip, the legacy
  LZ4 format) or whose name promises LZ4 (`*.lz4`) while its bytes are not an LZ4 frame;
* an LZ4 frame whose header declares a decoded size larger than the partition (`updata` always
  stores that size; a frame without it is bounded while it streams instead, and a set whose
  image stopped half-way is never marked valid);
* a decoded image whose head fails the caller's check (`check_head`: the OS image headers of
  `updates.osimage`).

After the stream, `finish()` refuses a truncated or corrupt frame, trailing bytes after it, and a
decoded length that differs from the one the frame declared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import lz4.frame

from updates.errors import UpdateError

LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
# Formats we can name but do not decode: refused instead of being written as they are.
UNSUPPORTED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\x02\x21\x4c\x18": "legacy LZ4",
    b"PK\x03\x04": "zip",
}
SNIFF_BYTES = 19  # the longest LZ4 frame header (magic, FLG, BD, content size, dict ID, HC)
DECODE_STEP = 4 << 20  # decoded bytes per decompress() call: bounds memory on zero runs


class ImageFormatError(UpdateError):
    """A target is in a format we do not write, or its decoded form is not acceptable."""


class Writer(Protocol):
    def write(self, data: bytes | memoryview, /) -> int: ...


def sniff(head: bytes, name: str) -> str:
    """`"lz4"` or `"raw"` for a target starting with `head` (raises for anything else)."""
    if head.startswith(LZ4_FRAME_MAGIC):
        return "lz4"
    for magic, label in UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            raise ImageFormatError(
                f"target {name} is {label}-compressed; images must be raw or LZ4 frames "
                "(updata add-update --compress lz4)")
    if name.endswith(".lz4"):
        raise ImageFormatError(
            f"target {name} is named .lz4 but does not start with an LZ4 frame "
            f"(magic {LZ4_FRAME_MAGIC.hex()}, got {head[:4].hex() or 'nothing'})")
    return "raw"


def declared_size(head: bytes, name: str) -> int | None:
    """The decoded size an LZ4 frame header declares (None: the frame does not say)."""
    try:
        info = lz4.frame.get_frame_info(head)
    except RuntimeError as e:
        raise ImageFormatError(f"target {name}: bad LZ4 frame header: {e}") from None
    return info["content_size"] or None


def preflight(head: bytes, name: str, length: int, capacity: int) -> int | None:
    """Check a target by its first bytes before anything is written; the decoded size if known.

    `length` is the signed (delivered) length; `capacity` the partition's size.
    """
    fmt = sniff(head, name)
    size = length if fmt == "raw" else declared_size(head, name)
    if size is not None and size > capacity:
        decoded = "" if fmt == "raw" else "decoded "
        raise ImageFormatError(f"target {name}: {decoded}size {size} bytes does not fit its "
                               f"partition ({capacity} bytes)")
    return size


class DecodingSink:
    """Takes a target's bytes as delivered and writes its decoded image to `out`.

    `check_head(head)` is called with the first `head_size` decoded bytes (or all of them, when
    the image is shorter) before any of them is written; it raises to refuse the image.
    """

    def __init__(self, out: Writer, capacity: int, name: str, *,
                 check_head: Callable[[bytes], None] | None = None,
                 head_size: int = 0) -> None:
        self.out, self.capacity, self.name = out, capacity, name
        self.check_head, self.head_size = check_head, head_size if check_head else 0
        self.format: str | None = None
        self.decoded = 0
        self.expected: int | None = None
        self._sniffed = bytearray()
        self._head: bytearray | None = bytearray() if check_head else None
        self._decoder: lz4.frame.LZ4FrameDecompressor | None = None

    # -- the delivered stream

    def write(self, data: bytes | memoryview) -> int:
        if self.format is None:
            self._sniffed += data
            if len(self._sniffed) < SNIFF_BYTES:
                return len(data)
            self._start(bytes(self._sniffed))
            data, self._sniffed = bytes(self._sniffed), bytearray()
        self._feed(data)
        return len(data)

    def finish(self) -> int:
        """Everything delivered: check the frame ended cleanly; returns the decoded length."""
        if self.format is None:
            self._start(bytes(self._sniffed))
            self._feed(bytes(self._sniffed))
        if self._decoder is not None and not self._decoder.eof:
            raise ImageFormatError(f"target {self.name}: the LZ4 frame is truncated")
        if self.expected is not None and self.decoded != self.expected:
            raise ImageFormatError(f"target {self.name}: decoded {self.decoded} bytes, the "
                                   f"frame declared {self.expected}")
        if self._head is not None:  # an image shorter than the head
            self._release_head()
        return self.decoded

    # -- internals

    def _start(self, head: bytes) -> None:
        self.format = sniff(head, self.name)
        if self.format == "lz4":
            self.expected = preflight(head, self.name, 0, self.capacity)
            self._decoder = lz4.frame.LZ4FrameDecompressor()

    def _feed(self, data: bytes | memoryview) -> None:
        if self._decoder is None:
            self._emit(data)
            return
        if self._decoder.eof:
            if data:
                raise ImageFormatError(f"target {self.name}: bytes after the end of its LZ4 frame")
            return
        try:
            out = self._decoder.decompress(data, max_length=DECODE_STEP)
            self._emit(out)
            while not self._decoder.needs_input and not self._decoder.eof:
                self._emit(self._decoder.decompress(b"", max_length=DECODE_STEP))
        except RuntimeError as e:
            raise ImageFormatError(f"target {self.name}: corrupt LZ4 frame: {e}") from None
        if self._decoder.eof and self._decoder.unused_data:
            raise ImageFormatError(f"target {self.name}: bytes after the end of its LZ4 frame")

    def _emit(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self.decoded += len(data)
        if self.decoded > self.capacity:
            raise ImageFormatError(f"target {self.name}: decoded image exceeds its partition "
                                   f"({self.capacity} bytes)")
        if self._head is not None:
            self._head += data
            if len(self._head) >= self.head_size:
                self._release_head()
            return
        self.out.write(data)

    def _release_head(self) -> None:
        head, self._head = bytes(self._head or b""), None
        assert self.check_head is not None
        self.check_head(head)
        if head:
            self.out.write(head)
