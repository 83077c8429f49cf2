"""Fixtures: a real TUF repository built by `updata`, served on 127.0.0.1 and via file://."""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lz4.frame
import pytest

from updates import updata
from updates.fetcher import UpdogFetcher
from updates.repo import Repository
from updates.tuf_client import TufClient

VARIANT, ARCH = "aws-dev", "x86_64"
IMAGES = {"boot": b"boot image 1.1.0 " * 64, "root": b"root image 1.1.0 " * 256,
          "hash": b"hash image 1.1.0 " * 16}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, records request paths, can stream endless data for some paths."""

    seen: list[str]
    endless: set[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append(self.path)
        if self.path.split("?")[0] in self.endless:
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b" " * 65536)
            except (BrokenPipeError, ConnectionResetError):
                return
        super().do_GET()


@dataclass
class Server:
    base_url: str
    seen: list[str]
    endless: set[str]


def http_server(directory: Path) -> tuple[Server, http.server.ThreadingHTTPServer]:
    """A static HTTP server for ``directory`` on 127.0.0.1, on a thread of its own; the caller
    shuts the returned server down."""
    seen: list[str] = []
    endless: set[str] = set()
    handler = type("H", (_Handler,), {"seen": seen, "endless": endless})
    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
    )
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    return Server(f"http://127.0.0.1:{srv.server_address[1]}", seen, endless), srv


@pytest.fixture
def serve() -> Iterator[callable]:
    """`serve(directory)` starts an HTTP server on 127.0.0.1 for the test's duration."""
    servers = []

    def start(directory: Path) -> Server:
        server, srv = http_server(directory)
        servers.append(srv)
        return server

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@dataclass
class Env:
    """A published repository plus ways to reach it."""

    path: Path
    server: Server
    trusted_root: bytes
    manifest: Path
    images: dict[str, Path] = field(default_factory=dict)

    @property
    def repo(self) -> Repository:
        return Repository.open(self.path)

    def base(self, transport: str) -> str:
        return self.server.base_url if transport == "http" else self.path.as_uri()

    def client(self, cache: Path, transport: str = "http", **params: str) -> TufClient:
        base = self.base(transport)
        return TufClient(cache, f"{base}/metadata/", trusted_root=self.trusted_root,
                         targets_base_url=f"{base}/targets/", fetcher=UpdogFetcher(params))

    def meta(self, name: str) -> Path:
        return self.path / "metadata" / name

    def stored_target(self, name: str) -> Path:
        info = self.repo.targets()[name]
        return self.path / "targets" / f"{info.hashes['sha256']}.{name}"


def write_host_root(root: Path, trusted_root: bytes, base_url: str, *, seed: int,
                    lock: str = "latest", ignore_waves: bool = False) -> Path:
    """A host filesystem for updog: the shipped root.json and an `etc/updog.toml`."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "usr/share/updog").mkdir(parents=True, exist_ok=True)
    (root / "usr/share/updog/root.json").write_bytes(trusted_root)
    (root / "etc/updog.toml").write_text(
        f'metadata_base_url = "{base_url}/metadata/"\ntargets_base_url = "{base_url}/targets/"\n'
        f'seed = {seed}\nversion_lock = "{lock}"\nignore_waves = {str(ignore_waves).lower()}\n')
    return root


def run_updata(*argv: str | Path) -> None:
    assert updata.main([str(a) for a in argv]) == 0


def build_release(tmp: Path, version: str = "1.1.0", *, waves: str | None = None,
                  start_at: str | None = None) -> tuple[Path, dict[str, Path]]:
    """Manifest + image files for one release, made with updata's manifest commands."""
    manifest = tmp / "work" / "manifest.json"
    if not manifest.exists():
        run_updata("init", manifest)
    names = {k: f"{k}-{version}.lz4" for k in IMAGES}
    files = {}
    for kind, name in names.items():
        files[kind] = tmp / "work" / name
        files[kind].write_bytes(lz4.frame.compress(IMAGES[kind].replace(b"1.1.0",
                                                                       version.encode())))
    run_updata("add-update", manifest, "-f", VARIANT, "-a", ARCH, "-v", version,
               "-b", names["boot"], "-r", names["root"], "-h", names["hash"])
    if waves:
        extra = ["--start-at", start_at] if start_at else []
        run_updata("set-waves", manifest, "-f", VARIANT, "-a", ARCH, "-v", version,
                   "-w", waves, *extra)
    return manifest, files


@pytest.fixture
def env(tmp_path: Path, serve) -> Env:
    """Repository (fresh ed25519 keys) with manifest.json and one release's images."""
    path = tmp_path / "repo"
    run_updata("create", path)
    manifest, files = build_release(tmp_path)
    run_updata("add-targets", path, manifest, *files.values())
    return Env(path, serve(path), (path / "metadata" / "1.root.json").read_bytes(),
               manifest, files)


def cache_state(metadata_dir: Path) -> dict[str, bytes]:
    """Every cached metadata file's bytes (symlinks resolved), for before/after checks."""
    return {
        str(p.relative_to(metadata_dir)): p.read_bytes()
        for p in sorted(metadata_dir.rglob("*.json"))
    }


@pytest.fixture
def loop_device() -> Iterator[Callable[[Path], str]]:
    """Attach a disk image file to a loop device: a real block device (needs root, as CI has)."""
    attached: list[str] = []

    def attach(image: Path) -> str:
        done = subprocess.run(["losetup", "--find", "--show", str(image)],
                              capture_output=True, text=True, check=True)
        attached.append(done.stdout.strip())
        return attached[-1]

    yield attach
    for device in attached:
        subprocess.run(["losetup", "--detach", device], check=True)
