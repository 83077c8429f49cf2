"""dm-verity hash trees through `veritysetup` (Debian's cryptsetup-bin), on plain files.

A root image is paired with a hash image: a verity superblock followed by the hash tree of the
root image's 4 KiB blocks. Its root hash is what the boot image carries (`updates.osimage`), as
Bottlerocket's boot partition carries it on the kernel command line. `veritysetup format` and
`veritysetup verify` both work on files (they read and hash in user space, no device-mapper).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from updates.errors import UpdateError

SUPERBLOCK = struct.Struct("<8sII16s32sIIQH6s256s168s")  # struct verity_sb (512 bytes)
SIGNATURE = b"verity\x00\x00"
BLOCK = 4096
_ROOT_HASH = re.compile(r"^Root hash:\s*([0-9a-f]+)\s*$", re.MULTILINE)


class VerityError(UpdateError):
    """A hash tree could not be made, or it does not match its data."""


@dataclass(frozen=True)
class Superblock:
    algorithm: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int

    @property
    def data_size(self) -> int:
        """Bytes of the data device the tree covers."""
        return self.data_blocks * self.data_block_size


def parse_superblock(raw: bytes) -> Superblock | None:
    """The verity superblock at the start of a hash image (None when there is none)."""
    if len(raw) < SUPERBLOCK.size or not raw.startswith(SIGNATURE):
        return None
    fields = SUPERBLOCK.unpack_from(raw)
    algorithm = fields[4].split(b"\0", 1)[0].decode("ascii", errors="replace")
    return Superblock(algorithm, fields[5], fields[6], fields[7])


def _veritysetup(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("veritysetup") is None:
        raise VerityError("veritysetup not found: install Debian's cryptsetup-bin")
    return subprocess.run(["veritysetup", *args], capture_output=True, text=True, check=False)


def format_tree(data: Path, hash_image: Path) -> str:
    """Write the hash image of `data` (whole 4 KiB blocks) and return its root hash."""
    size = data.stat().st_size
    if size == 0 or size % BLOCK:
        raise VerityError(f"{data}: {size} bytes is not a whole number of {BLOCK}-byte blocks")
    done = _veritysetup("format", str(data), str(hash_image))
    found = _ROOT_HASH.search(done.stdout)
    if done.returncode != 0 or not found:
        raise VerityError(f"veritysetup format {data}: {(done.stderr or done.stdout).strip()}")
    return found[1]


def verify(data: str, hash_image: str, root_hash: str) -> None:
    """Raise unless every block of `data` matches the tree in `hash_image` and `root_hash`."""
    done = _veritysetup("verify", data, hash_image, root_hash)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit {done.returncode}"
        raise VerityError(f"verity check failed: {detail}")
