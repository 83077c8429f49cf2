"""What a simulated OS image carries: an os-release header at the start of its root image.

A real root image is an ext4 filesystem whose `/usr/lib/os-release` names the version. Our disk
images and demo releases use a small, documented header instead, so the version of a partition
set can be read straight from the bytes written to its root partition:

    RECONCILER-ROOT v1\\n
    VERSION_ID=1.1.0\\n
    VARIANT_ID=aws-dev\\n
    ...other os-release lines...
    \\0                        (end of header; anything after it is the image payload)

The running OS version of a simulated host is the `VERSION_ID` of the booted set's root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from updates.config import parse_os_release

MAGIC = b"RECONCILER-ROOT v1\n"
MAX_HEADER = 64 * 1024


def root_image(version: str, variant: str, *, arch: str | None = None, payload: bytes = b"",
               size: int | None = None, extra: Mapping[str, str] | None = None) -> bytes:
    """A root image for `version`: header, then `payload`, zero-padded to `size` if given."""
    fields = {"NAME": "Reconciler Host", "VERSION_ID": version, "VARIANT_ID": variant,
              "PRETTY_NAME": f'"Reconciler Host {version} ({variant})"', **(extra or {})}
    if arch:
        fields["ARCH"] = arch
    text = "".join(f"{k}={v}\n" for k, v in fields.items()).encode()
    data = MAGIC + text + b"\0" + payload
    if size is not None:
        if len(data) > size:
            raise ValueError(f"root image of {len(data)} bytes exceeds {size}")
        data = data.ljust(size, b"\0")
    return data


def parse_header(data: bytes) -> dict[str, str] | None:
    """The os-release fields of a root image, or None when it has no header."""
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\0", len(MAGIC))
    if end < 0:
        return None
    return parse_os_release(data[len(MAGIC):end].decode("utf-8", errors="replace"))


def read_header(fd: int, offset: int, size: int) -> dict[str, str] | None:
    """The header of the root image written at `offset` in a disk."""
    return parse_header(os.pread(fd, min(size, MAX_HEADER), offset))
