"""Host containers' persistent storage: ``<state-dir>/host-containers/<name>``.

Each container gets its own directory (mode 0700, never a symbolic link, never outside the base)
mounted at ``/.bottlerocket/host-containers/<name>``, with its ``user-data`` file written whole
(``hostcore.durable.replace_file``) or removed when the settings have none.

With a ``quota`` (bytes, ``reconciler serve --host-container-quota``), each directory is the
mount point of a file system of its own: an ext4 image of exactly ``quota`` bytes under
``<base>/.filesystems/``, allocated in full when it is made (so it never grows afterwards) and
loop-mounted ``nodev,nosuid``. A container that fills its storage then gets ENOSPC inside it;
the state disk holding the store keeps its space. Files from before the quota are copied in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hostcore.durable import replace_file
from reconciler.containers.planner import DesiredContainer


class ContainerStorage:
    """The persistent directories under ``base``."""

    def __init__(self, base: Path, quota: int | None = None):
        self.base = Path(base)
        self.quota = quota

    def dir(self, name: str) -> Path:
        """``<base>/<name>``; refuses anything that would leave it."""
        base = self.base.resolve()
        path = (base / name).resolve()
        if path.parent != base or name in ("", ".", ".."):
            raise OSError(f"host container name {name!r} escapes {base}")
        return path

    def prepare(self, want: DesiredContainer) -> Path:
        """The container's directory, made if missing, with its ``user-data`` as asked."""
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.dir(want.name)
        if path.is_symlink():
            raise OSError(f"{path} is a symbolic link; refusing to use it")
        path.mkdir(mode=0o700, exist_ok=True)
        if self.quota:
            self._own_filesystem(path, want.name)
        os.chmod(path, 0o700)
        target = path / "user-data"
        data = want.decoded_user_data()
        if data is None:
            if target.is_file() or target.is_symlink():
                target.unlink()
        else:
            replace_file(target, data, 0o600)
        return path

    def _own_filesystem(self, path: Path, name: str) -> None:
        """Mount ``name``'s quota-sized file system on ``path`` (made on first use)."""
        if os.path.ismount(path):
            return
        assert self.quota
        images = self.base / ".filesystems"
        images.mkdir(mode=0o700, exist_ok=True)
        image = images / f"{name}.ext4"
        if not image.is_file():
            tmp = images / f".{name}.ext4.tmp"
            try:
                with open(tmp, "wb") as f:
                    os.posix_fallocate(f.fileno(), 0, self.quota)  # all of it, now
                # nodiscard: mkfs would otherwise punch the allocation back out of the file
                _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", str(tmp)], name)
                os.replace(tmp, image)
            except OSError as error:
                tmp.unlink(missing_ok=True)
                raise OSError(f"cannot make the {self.quota}-byte file system of host container"
                              f" {name!r} at {image}: {error}") from None
        if any(path.iterdir()):  # storage from before the quota: carried over
            staging = images / f".{name}.mnt"
            staging.mkdir(mode=0o700, exist_ok=True)
            _run(["mount", "-o", "loop,nodev,nosuid", str(image), str(staging)], name)
            try:
                shutil.copytree(path, staging, symlinks=True, dirs_exist_ok=True)
            finally:
                _run(["umount", str(staging)], name)
            for entry in path.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        _run(["mount", "-o", "loop,nodev,nosuid", str(image), str(path)], name)

    def release(self, name: str) -> None:
        """Unmount ``name``'s own file system, if mounted (its image and files are kept)."""
        path = self.dir(name)
        if os.path.ismount(path):
            _run(["umount", str(path)], name)


def _run(argv: list[str], name: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OSError(f"host container {name!r} storage: {argv[0]}: {error}") from None
    if done.returncode != 0:
        raise OSError(f"host container {name!r} storage: {' '.join(argv[:1] + argv[-1:])}: "
                      f"{(done.stderr or done.stdout).strip()[-300:]}")
