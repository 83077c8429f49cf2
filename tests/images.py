"""Container images for the host-container tests and benchmark, built locally (no registry).

A rootfs is written straight into a tarball (busybox-static, optionally the host's python3 with
its shared libraries and standard library), imported with ``podman import`` into a throw-away
storage and saved as an ``oci-archive`` or ``docker-archive``: the sources the tests give to
``settings.host-containers.<name>.source``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from reconciler.containers.podman import PodmanEngine

BUSYBOX = Path("/bin/busybox")
PYTHON = Path("/usr/bin/python3")
# Stays up; exits at once on SIGTERM (a shell as PID 1 ignores it otherwise).
COMMAND = '["/bin/sh", "-c", "trap \'exit 0\' TERM; sleep 2147483647 & wait"]'
SKIP_STDLIB = {
    "test", "idlelib", "tkinter", "lib2to3", "ensurepip", "pydoc_data", "dist-packages",
    "site-packages", "turtledemo", "distutils", "unittest",
}


def require_podman() -> None:
    """Host-container tests need podman; they fail (never skip) without it."""
    missing = [tool for tool in ("podman",) if shutil.which(tool) is None]
    if missing or not BUSYBOX.is_file():
        raise AssertionError(
            f"missing {', '.join(missing) or str(BUSYBOX)}: run `make test` (it runs"
            " scripts/install-system-deps.sh) or install podman, runc and busybox-static"
        )
    if "CONTAINERS_CONF" not in os.environ:
        conf = Path(__file__).resolve().parent.parent / "examples" / "containers.conf"
        os.environ["CONTAINERS_CONF"] = str(conf)


def podman(storage: Path, *args: str, timeout: float = 120, check: bool = True) -> str:
    """Run podman against the storage under ``storage`` (a daemon's ``<state>/containers``)."""
    command = PodmanEngine(storage).command(*args)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _shared_libraries(binary: Path) -> list[Path]:
    output = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, check=False
    ).stdout
    libraries = []
    for line in output.splitlines():
        parts = line.split()
        for part in parts:
            if part.startswith("/") and Path(part).exists():
                libraries.append(Path(part))
    return libraries


def write_rootfs(path: Path, version: str, python: bool = False) -> None:
    """A busybox rootfs (``/etc/image-version`` says ``version``), with python3 if asked."""
    with tarfile.open(path, "w") as tar:
        for directory in ("bin", "etc", "proc", "sys", "dev", "run", "root", "usr", "usr/bin",
                          "usr/local", "usr/local/bin", "lib", "lib64", "usr/lib"):
            _add_dir(tar, directory)
        _add_dir(tar, "tmp", 0o1777)
        tar.add(BUSYBOX, "bin/busybox")
        applets = subprocess.run(
            [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            if applet != "busybox":
                _add_link(tar, f"bin/{applet}", "busybox")
        _add_link(tar, "usr/bin/env", "../../bin/busybox")
        _add_bytes(tar, "etc/image-version", f"{version}\n".encode())
        _add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add_bytes(tar, "etc/group", b"root:x:0:\n")
        if python:
            _add_python(tar)


def _add_python(tar: tarfile.TarFile) -> None:
    binary = PYTHON.resolve()
    seen = set(tar.getnames())
    for library in [binary, *_shared_libraries(binary)]:
        name = str(library).lstrip("/")
        if name in seen:
            continue
        seen.add(name)
        for parent in reversed(Path(name).parents[:-1]):
            if str(parent) not in seen:
                seen.add(str(parent))
                _add_dir(tar, str(parent))
        tar.add(library.resolve(), name)
    _add_link(tar, "usr/bin/python3", binary.name)
    stdlib = Path(f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}")
    if not stdlib.is_dir():  # not a Debian python: use the running interpreter's stdlib
        stdlib = Path(os.__file__).parent

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if len(parts) > 3 and (parts[3] in SKIP_STDLIB or parts[3].startswith("config-")):
            return None
        return info

    target = f"usr/lib/{stdlib.name}"
    tar.add(stdlib, target, filter=keep)


def build_image(
    workdir: Path, name: str, version: str, python: bool = False, fmt: str = "oci-archive",
    command: str = COMMAND, ballast: int = 0,
) -> str:
    """Build an image archive under ``workdir``; returns its source (``oci-archive:PATH``).
    ``command`` is its CMD (JSON form; default: stay up until SIGTERM); ``ballast`` bytes of
    random data in ``/opt/ballast`` make an image that takes a while to load."""
    workdir.mkdir(parents=True, exist_ok=True)
    rootfs = workdir / f"{name}-rootfs.tar"
    write_rootfs(rootfs, version, python=python)
    if ballast:
        with tarfile.open(rootfs, "a") as tar:
            _add_dir(tar, "opt")
            _add_bytes(tar, "opt/ballast", os.urandom(ballast))
    storage = workdir / "builder"
    reference = f"localhost/{name}:{version}"
    podman(storage, "import", "--change", f"CMD {command}", str(rootfs), reference)
    archive = workdir / f"{name}-{version}.{fmt}.tar"
    podman(storage, "save", "--format", fmt, "--output", str(archive), reference)
    rootfs.unlink()
    return f"{fmt}:{archive}"


def build_test_images(workdir: Path) -> dict[str, str]:
    """The images the tests use, by role; the builder storage is removed afterwards."""
    try:
        return {
            "v1": build_image(workdir, "busybox", "v1", fmt="oci-archive"),
            "v2": build_image(workdir, "busybox", "v2", fmt="docker-archive"),
            "python": build_image(workdir, "python", "v1", python=True),
        }
    finally:
        reset_storage(workdir / "builder")


def reset_storage(storage: Path) -> None:
    """Remove every container and image under ``storage``, unmount it, drop its run root.

    Containers are killed through runc first, and their conmon awaited: that also ends a
    container podman lost track of (one started while it was being removed by hand, a race
    inside podman), and no late ``podman container cleanup`` remounts the storage after reset.
    """
    marker = f"{storage}/storage/overlay-containers/"
    monitors = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"conmon"):
            continue
        words = [w.decode(errors="replace") for w in argv]
        if "-c" in words and any(w.startswith(marker) for w in words):
            container = words[words.index("-c") + 1]
            subprocess.run(["runc", "kill", container, "KILL"], capture_output=True, check=False)
            monitors.append(proc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in monitors):
        time.sleep(0.05)
    PodmanEngine(storage).reset()


def _alive(proc: Path) -> bool:
    try:
        return (proc / "stat").read_text().split(") ", 1)[1][0] not in "ZX"
    except (OSError, IndexError):
        return False
