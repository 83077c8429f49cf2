"""The OS image format our boot reads: a root image, its dm-verity hash image, a boot image.

This docstring is the one place the format is defined (`updata make-images` writes it, updog
checks it before a set's flags change, the boot reads it). A real root image is an ext4
filesystem whose `/usr/lib/os-release` names the version; a simulated one starts with a header
instead, so the version of a partition set can be read straight from its root partition:

Root image (partition type ROOT), padded to whole 4 KiB blocks:

    RECONCILER-ROOT v1\\n
    VERSION_ID=1.1.0\\n
    VARIANT_ID=aws-dev\\n
    ARCH=x86_64\\n            (optional)
    ...other os-release lines (NAME, PRETTY_NAME)...
    \\0                        (end of header; anything after it is the image payload)

Hash image (partition type HASH): what `veritysetup format ROOT HASH` writes, a verity
superblock (`verity\\0\\0`, sha256, 4 KiB blocks, the salt) followed by the hash tree.

Boot image (partition type BOOT), the stand-in for the kernel and its command line:

    RECONCILER-BOOT v1\\n
    VERSION_ID=1.1.0\\n
    VARIANT_ID=aws-dev\\n
    VERITY_ROOT_HASH=<hex>\\n  (the root hash `veritysetup format` printed for the root image)
    \\0                        (then the payload)

A set is bootable only when all three agree: the boot and root headers name the same version,
the hash image covers the root partition, and `veritysetup verify` accepts the root image with
the boot image's root hash (`updates.setcheck`). Images may be published raw or as LZ4 frames
(`updates.imageformat`). The running OS version of a simulated host is the `VERSION_ID` of the
booted set's root.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from updates import verity
from updates.config import parse_os_release

MAGIC = b"RECONCILER-ROOT v1\n"
BOOT_MAGIC = b"RECONCILER-BOOT v1\n"
MAX_HEADER = 64 * 1024
KINDS = ("root", "boot", "hash")


def _header(magic: bytes, fields: Mapping[str, str]) -> bytes:
    return magic + "".join(f"{k}={v}\n" for k, v in fields.items()).encode() + b"\0"


def root_image(version: str, variant: str, *, arch: str | None = None, payload: bytes = b"",
               size: int | None = None, extra: Mapping[str, str] | None = None) -> bytes:
    """A root image for `version`: header, then `payload`, zero-padded to `size` if given."""
    fields = {"NAME": "Reconciler Host", "VERSION_ID": version, "VARIANT_ID": variant,
              "PRETTY_NAME": f'"Reconciler Host {version} ({variant})"', **(extra or {})}
    if arch:
        fields["ARCH"] = arch
    data = _header(MAGIC, fields) + payload
    if size is not None:
        if len(data) > size:
            raise ValueError(f"root image of {len(data)} bytes exceeds {size}")
        data = data.ljust(size, b"\0")
    return data


def boot_image(version: str, variant: str, root_hash: str, *, payload: bytes = b"") -> bytes:
    """A boot image: the version it boots and the verity root hash of its root image."""
    fields = {"VERSION_ID": version, "VARIANT_ID": variant, "VERITY_ROOT_HASH": root_hash}
    return _header(BOOT_MAGIC, fields) + payload


def _parse(magic: bytes, data: bytes) -> dict[str, str] | None:
    if not data.startswith(magic):
        return None
    end = data.find(b"\0", len(magic))
    if end < 0:
        return None
    return parse_os_release(data[len(magic):end].decode("utf-8", errors="replace"))


def parse_header(data: bytes) -> dict[str, str] | None:
    """The os-release fields of a root image, or None when it has no header."""
    return _parse(MAGIC, data)


def parse_boot_header(data: bytes) -> dict[str, str] | None:
    """The fields of a boot image, or None when it has no header."""
    return _parse(BOOT_MAGIC, data)


def read_header(fd: int, offset: int, size: int) -> dict[str, str] | None:
    """The header of the root image written at `offset` in a disk."""
    return parse_header(os.pread(fd, min(size, MAX_HEADER), offset))


def read_boot_header(fd: int, offset: int, size: int) -> dict[str, str] | None:
    return parse_boot_header(os.pread(fd, min(size, MAX_HEADER), offset))


def head_check(kind: str, name: str) -> tuple[int, Callable[[bytes], None]]:
    """(bytes needed, check) that refuses a decoded image of `kind` lacking its header."""
    from updates.imageformat import ImageFormatError

    def check(head: bytes) -> None:
        ok = {"root": parse_header, "boot": parse_boot_header,
              "hash": verity.parse_superblock}[kind](head) is not None
        if not ok:
            expected = {"root": MAGIC, "boot": BOOT_MAGIC, "hash": verity.SIGNATURE}[kind]
            raise ImageFormatError(
                f"target {name} is not a {kind} image: it does not start with {expected!r} "
                "(build images with `updata make-images`)")

    return (verity.SUPERBLOCK.size if kind == "hash" else MAX_HEADER), check


@dataclass(frozen=True)
class ImageSet:
    """The three images of one release, in memory."""

    root: bytes
    boot: bytes
    hash: bytes
    root_hash: str


def build_set(version: str, variant: str, *, arch: str | None = None, payload: bytes = b"",
              boot_payload: bytes = b"") -> ImageSet:
    """Root image (padded to whole blocks), its verity hash image and the boot image."""
    root = root_image(version, variant, arch=arch, payload=payload)
    root = root.ljust(-(-len(root) // verity.BLOCK) * verity.BLOCK, b"\0")
    with tempfile.TemporaryDirectory(prefix="osimage-") as tmp:
        data, tree = Path(tmp) / "root", Path(tmp) / "hash"
        data.write_bytes(root)
        root_hash = verity.format_tree(data, tree)
        hash_image = tree.read_bytes()
    return ImageSet(root, boot_image(version, variant, root_hash, payload=boot_payload),
                    hash_image, root_hash)


def image_names(variant: str, version: str) -> dict[str, str]:
    """The file (and target) names `updata make-images` gives a release's images."""
    return {kind: f"{variant}-{version}-{kind}.img" for kind in KINDS}
