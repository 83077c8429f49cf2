"""The test host's image: Debian with systemd, the project's wheel installed as a user would.

Two layers, each cached in podman storage under the cache directory by the hash of its inputs,
so only the first run on a machine pays for each:

* the base: ``mmdebstrap`` of the packages in ``host.toml``, ``podman import``ed (minutes;
  rebuilt only when ``host.toml``'s ``[image]`` changes);
* the host: the base with the install steps of ``examples/systemd/README.md`` run as written,
  against wheels built from this checkout, committed (under a minute; rebuilt when the product,
  the examples or this directory change).

``python -m tests.realhost.build`` builds (or finds) it and prints its reference.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONFIG = HERE / "host.toml"
USER_DATA = HERE / "user-data.toml"
README = REPO / "examples" / "systemd" / "README.md"
BASE_NAME = "localhost/host-reconciler-testhost-base"
NAME = "localhost/host-reconciler-testhost"


def _product() -> tuple[str, ...]:
    """What the wheel is built from: pyproject.toml's packages (its find.include patterns)."""
    with open(REPO / "pyproject.toml", "rb") as handle:
        patterns = tomllib.load(handle)["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted({pattern.rstrip("*").rstrip(".") for pattern in patterns})
    return ("pyproject.toml", "README.md", *packages)


PRODUCT = _product()
EXAMPLES = ("examples/systemd", "examples/containers.conf")
STEPS = re.compile(r"<!-- install-steps:begin -->\s*```sh\n(.*?)```\s*<!-- install-steps:end -->",
                   re.S)
TIMEOUT = 1800


class HostImageError(AssertionError):
    """The test host cannot be made; the message says which step and why."""


def cache_dir() -> Path:
    """Where images and wheels are kept between runs ($HOST_RECONCILER_TEST_CACHE overrides)."""
    default = "/var/tmp/host-reconciler-tests" if os.geteuid() == 0 else \
        str(Path.home() / ".cache" / "host-reconciler-tests")
    return Path(os.environ.get("HOST_RECONCILER_TEST_CACHE", default))


def storage() -> Path:
    """The podman storage holding the images and the test hosts' containers."""
    return cache_dir() / "podman"


def config() -> dict[str, Any]:
    with open(CONFIG, "rb") as handle:
        return tomllib.load(handle)


def _files(paths: Iterable[str]) -> Iterator[Path]:
    for name in paths:
        path = REPO / name
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and
                              "__pycache__" not in p.parts and not p.name.endswith(".pyc"))
        elif path.is_file():
            yield path


def _digest(parts: Iterable[bytes | Path]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(str(part.relative_to(REPO)).encode() + b"\0" + part.read_bytes())
        else:
            digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def base_key(conf: dict[str, Any]) -> str:
    return _digest([repr(sorted(conf["image"].items())).encode()])


def host_key(conf: dict[str, Any]) -> str:
    inputs = [*_files(PRODUCT), *_files(EXAMPLES), Path(__file__).resolve(), CONFIG, USER_DATA]
    return _digest([base_key(conf).encode(), *inputs])


def _run(argv: list[str], what: str, **kwargs: Any) -> str:
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                              check=False, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise HostImageError(f"test host image: {what}: {error}") from None
    print(f"test host image: {what}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise HostImageError(f"test host image: {what} failed (exit {done.returncode}): {tail}")
    return done.stdout


def _engine() -> list[str]:
    from reconciler.containers.podman import PodmanEngine

    return PodmanEngine(storage()).command()


def _require_tools() -> None:
    missing = [tool for tool in ("podman", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        raise HostImageError(
            f"test host image: {', '.join(missing)} not installed: run `make test` (it runs "
            "scripts/install-system-deps.sh) or apt-get install podman runc mmdebstrap")
    if "CONTAINERS_CONF" not in os.environ:
        os.environ["CONTAINERS_CONF"] = str(REPO / "examples" / "containers.conf")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One build at a time per cache (parallel test runs, other checkouts on the machine)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_base(conf: dict[str, Any], reference: str, work: Path) -> None:
    image = conf["image"]
    rootfs = work / "rootfs.tar"
    _run(["mmdebstrap", f"--variant={image['mmdebstrap-variant']}",
          f"--include={','.join(image['packages'])}", image["suite"], str(rootfs)],
         f"mmdebstrap {image['suite']}")
    _run([*_engine(), "import", str(rootfs), reference], "podman import")


def _source_copy(work: Path) -> Path:
    """The files the wheel and the install steps need, copied (no build/ left in the checkout)."""
    checkout = work / "checkout"
    for path in [*_files(PRODUCT), *_files(EXAMPLES)]:
        target = checkout / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    shutil.copy2(USER_DATA, checkout / "user-data.toml")
    return checkout


def _dependency_wheels(checkout: Path) -> Path:
    """Wheels of the project's dependencies, kept by the hash of pyproject's dependency list
    (resolving and downloading them is most of a host layer's build)."""
    with open(REPO / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    directory = cache_dir() / "wheels" / _digest([repr(sorted(dependencies)).encode()])
    if not directory.is_dir():
        partial = Path(tempfile.mkdtemp(dir=cache_dir(), prefix="wheels-"))
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial),
              str(checkout)], "pip wheel of the project's dependencies")
        for own in partial.glob("host_reconciler-*.whl"):
            own.unlink()
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(directory.parent / f"{directory.name}.old", ignore_errors=True)
        partial.rename(directory)
    return directory


def install_steps() -> str:
    """The shell block of examples/systemd/README.md between its install-steps markers."""
    found = STEPS.search(README.read_text())
    if not found:
        raise HostImageError(f"{README}: no ```sh block between the install-steps markers")
    return found.group(1)


def _build_host(base: str, reference: str, work: Path) -> None:
    checkout = _source_copy(work)
    wheels = work / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
          str(wheels), str(checkout)], "pip wheel of the checkout")
    for wheel in _dependency_wheels(checkout).iterdir():
        os.link(wheel, wheels / wheel.name)
    name = f"host-reconciler-build-{reference.rsplit(':', 1)[1]}"
    _run([*_engine(), "rm", "--force", "--ignore", name], "podman rm of a stale build")
    script = "set -euxo pipefail\n" + install_steps()
    try:
        _run([*_engine(), "run", "--name", name, "--network=none",
              "-v", f"{checkout}:/checkout:ro", "-v", f"{wheels}:/wheels:ro", "-w", "/checkout",
              "-e", "WHEELS=/wheels", "-e", "USER_DATA=/checkout/user-data.toml",
              base, "bash", "-c", script],
             "the install steps of examples/systemd/README.md")
        _run([*_engine(), "commit", "--quiet", "--change", 'CMD ["/sbin/init"]', name,
              reference], "podman commit")
    finally:
        subprocess.run([*_engine(), "rm", "--force", "--ignore", name], capture_output=True,
                       check=False)


def _prune(prefix: str, keep: str) -> None:
    """Older images of ours go (those a running test host still uses stay: no --force)."""
    listed = subprocess.run([*_engine(), "images", "--format", "{{.Repository}}:{{.Tag}}"],
                            capture_output=True, text=True, check=False).stdout.split()
    for reference in listed:
        if reference.rsplit(":", 1)[0] == prefix and reference != keep:
            subprocess.run([*_engine(), "rmi", reference], capture_output=True, check=False)


def ensure_image() -> str:
    """The reference of an up-to-date test host image, built first if it is missing."""
    _require_tools()
    conf = config()
    base = f"{BASE_NAME}:{base_key(conf)}"
    host = f"{NAME}:{host_key(conf)}"
    with _locked():
        if _image_exists(host):
            return host
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="build-") as tmp:
            work = Path(tmp)
            if not _image_exists(base):
                _build_base(conf, base, work)
                _prune(BASE_NAME, base)
            _build_host(base, host, work)
        _prune(NAME, host)
    return host


def _image_exists(reference: str) -> bool:
    return subprocess.run([*_engine(), "image", "exists", reference], capture_output=True,
                          check=False).returncode == 0


if __name__ == "__main__":
    print(ensure_image())
