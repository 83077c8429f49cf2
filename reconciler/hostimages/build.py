"""Build the admin and control images (see the package docstring); ``reconciler images``."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hostcore.durable import replace_file
from reconciler import toolbox
from reconciler.osinfo import package_version

FILES = Path(__file__).resolve().parent / "files"
SUITE = "bookworm"
# python3 for the tools and the start script; passwd for useradd; procps and iproute2 so that
# an operator finds ps and ip; util-linux (essential) brings nsenter for sheltie.
PACKAGES = ("openssh-server", "sudo", "python3", "passwd", "procps", "iproute2", "less")
ROLES = {
    "admin": ("apiclient", "logdog"),
    "control": ("apiclient", "enable-admin-container"),
}
REPOSITORY = "localhost/host-reconciler"
ENV_DIR = "RECONCILER_IMAGES"
TIMEOUT_BOOTSTRAP = 3600.0
TIMEOUT_PODMAN = 900.0


class BuildError(Exception):
    """A build step failed; the message names the step and its error output."""


def image_dir() -> Path:
    """Where built images live for every daemon of this machine: ``$RECONCILER_IMAGES``, else
    ``/var/lib/host-reconciler/images`` as root, else ``~/.cache/host-reconciler/images``."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    if os.geteuid() == 0:
        return Path("/var/lib/host-reconciler/images")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "host-reconciler" / "images"


def version_tag() -> str:
    return f"v{package_version()}"


def reference(role: str) -> str:
    """``localhost/host-reconciler/admin:v0.1.0``: the default source of that host container."""
    return f"{REPOSITORY}/{role}:{version_tag()}"


def archive_for(source: str, directory: Path | None = None) -> Path | None:
    """The archive built for ``source`` on this machine, when there is one."""
    for role in ROLES:
        if source == reference(role):
            path = (directory or image_dir()) / f"{role}.docker-archive.tar"
            return path if path.is_file() else None
    return None


@dataclass(frozen=True)
class Built:
    role: str
    reference: str
    archive: Path
    cached: bool


def _hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def base_inputs() -> str:
    return _hash(SUITE, json.dumps(PACKAGES))


def role_inputs(role: str, base: str) -> str:
    files = [(FILES / name).read_bytes() for name in ("start-host-container", "sheltie",
                                                      f"Containerfile.{role}")]
    return _hash(base, role, version_tag(), toolbox.fingerprint(), json.dumps(ROLES[role]), *files)


def _run(argv: Sequence[str], what: str, timeout: float, log: Callable[[str], None]) -> str:
    log(f"{what}: {' '.join(argv[:3])} ...")
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise BuildError(f"{what}: {argv[0]} is not installed "
                         "(scripts/install-system-deps.sh installs it)") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: timed out after {timeout:.0f} s") from None
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise BuildError(f"{what} failed (exit {result.returncode}): {tail}")
    return result.stdout


def _podman(storage: Path, *args: str) -> list[str]:
    from reconciler.containers.podman import PodmanEngine

    return PodmanEngine(storage).command(*args)


def _fresh(stamp: Path, inputs: str, *outputs: Path) -> bool:
    return all(p.is_file() for p in outputs) and stamp.is_file() and stamp.read_text() == inputs


def build_base(directory: Path, log: Callable[[str], None]) -> tuple[Path, str, bool]:
    """The Debian rootfs tarball (cached by its package list); its path, inputs, cached?"""
    tarball = directory / "base.tar"
    stamp = directory / "base.inputs"
    inputs = base_inputs()
    if _fresh(stamp, inputs, tarball):
        return tarball, inputs, True
    partial = directory / ".base.tar.partial"
    partial.unlink(missing_ok=True)
    _run(
        [
            "mmdebstrap", "--variant=essential", f"--include={','.join(PACKAGES)}",
            # each container generates its own host keys, kept in its persistent storage
            "--customize-hook=rm -f \"$1\"/etc/ssh/ssh_host_*",
            "--format=tar", SUITE, str(partial),
        ],
        "debian base (mmdebstrap)", TIMEOUT_BOOTSTRAP, log,
    )
    os.replace(partial, tarball)
    replace_file(stamp, inputs.encode(), 0o644)
    return tarball, inputs, False


def build_role(directory: Path, role: str, base_tar: Path, base: str,
               log: Callable[[str], None]) -> Built:
    archive = directory / f"{role}.docker-archive.tar"
    stamp = directory / f"{role}.inputs"
    inputs = role_inputs(role, base)
    tag = reference(role)
    if _fresh(stamp, inputs, archive):
        return Built(role, tag, archive, True)
    storage = directory / "builder"
    base_ref = f"{REPOSITORY}/base:{base[:16]}"
    exists = subprocess.run(_podman(storage, "image", "exists", base_ref),
                            capture_output=True, check=False).returncode == 0
    if not exists:
        _run(_podman(storage, "import", str(base_tar), base_ref), "import base", TIMEOUT_PODMAN,
             log)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".context-") as tmp:
        context = Path(tmp)
        (context / "tools.pyz").write_bytes(toolbox.zipapp_bytes())
        for name in ("start-host-container", "sheltie"):
            shutil.copy(FILES / name, context / name)
            os.chmod(context / name, 0o755)
        os.chmod(context / "tools.pyz", 0o755)
        (context / "links").mkdir()
        for tool in ROLES[role]:
            os.symlink("/usr/lib/host-reconciler/tools.pyz", context / "links" / tool)
        shutil.copy(FILES / f"Containerfile.{role}", context / "Containerfile")
        _run(
            _podman(storage, "build", "--pull=never", "--network=none", "--build-arg",
                    f"BASE={base_ref}", "--label", f"host-reconciler.inputs={inputs}",
                    "--tag", tag, str(context)),
            f"build {role}", TIMEOUT_PODMAN, log,
        )
    partial = directory / f".{role}.partial.tar"
    partial.unlink(missing_ok=True)
    _run(_podman(storage, "save", "--format", "docker-archive", "--output", str(partial), tag),
         f"save {role}", TIMEOUT_PODMAN, log)
    os.replace(partial, archive)
    replace_file(stamp, inputs.encode(), 0o644)
    # the image this one replaced (now untagged) would pile up in the builder storage
    _run(_podman(storage, "image", "prune", "--force"), f"prune after {role}", TIMEOUT_PODMAN, log)
    return Built(role, tag, archive, False)


def build_all(directory: Path | None = None, roles: Sequence[str] = tuple(ROLES),
              log: Callable[[str], None] = lambda _m: None) -> list[Built]:
    directory = Path(directory or image_dir())
    directory.mkdir(parents=True, exist_ok=True)
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise BuildError(f"unknown image {unknown[0]!r}; known: {', '.join(ROLES)}")
    with open(directory / ".lock", "w") as lock:  # two builds at once: the second waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        base_tar, base, _ = build_base(directory, log)
        return [build_role(directory, role, base_tar, base, log) for role in roles]
