"""A simulated host for A/B update tests: a GPT disk image, a host root, a served repository.

`Sim.publish(version, migrations=...)` builds a release whose root image carries the version
header (`updates.osimage`), adds it (and its migration documents) to the manifest with
`updata`, and publishes everything as signed TUF targets.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lz4.frame

from tests.tufserver import Server
from tests.updates.conftest import ARCH, VARIANT, run_updata, write_host_root
from updates import osimage
from updates.partitions import OsDisk, create_os_disk

DISK_SIZE = 8 << 20
REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=32)
def image_set(version: str, root_size: int = 96 * 1024, boot_size: int = 0,
              variant: str = VARIANT) -> osimage.ImageSet:
    """A release's three images (root with header, its verity tree, boot with the root hash)."""
    payload = (f"root {version} ".encode() * (root_size // 8))[:root_size]
    boot = (f"boot {version} ".encode() * (boot_size // 8))[:boot_size]
    return osimage.build_set(version, variant, arch=ARCH, payload=payload, boot_payload=boot)


def image_bytes(version: str, kind: str, sizes: dict[str, int] | None = None) -> bytes:
    sizes = sizes or {}
    images = image_set(version, sizes.get("root", 96 * 1024), sizes.get("boot", 0))
    data = getattr(images, kind)
    return data.ljust(sizes.get("hash", 0), b"\0") if kind == "hash" else data


@dataclass
class Sim:
    tmp: Path
    repo: Path
    server: Server
    trusted_root: bytes
    disk: Path
    root: Path  # the host's filesystem prefix (etc/updog.toml, usr/share/updog/root.json)
    state: Path  # the daemon's state dir (store.db)
    migrations: dict[str, list[str]] = field(default_factory=dict)
    last_version: str = "1.0.0"

    @property
    def manifest(self) -> Path:
        return self.tmp / "work" / "manifest.json"

    def publish(self, version: str, *, migrations: dict[str, dict[str, Any]] | None = None,
                from_version: str | None = None, sizes: dict[str, int] | None = None,
                lz4: bool = False, images: dict[str, bytes] | None = None) -> None:
        """Publish `version`: its images (LZ4 frames with `lz4`; `images` replaces some, as
        published bytes), its migrations, the manifest, all signed."""
        work = self.tmp / "work"
        suffix = ".img.lz4" if lz4 else ".img"
        names = {k: f"{VARIANT}-{version}-{k}{suffix}" for k in ("boot", "root", "hash")}
        files = []
        for kind, name in names.items():
            path = work / name
            data = image_bytes(version, kind, sizes)
            if lz4:
                data = lz4_frame(data)
            path.write_bytes((images or {}).get(kind, data))
            files.append(path)
        run_updata("add-update", self.manifest, "-f", VARIANT, "-a", ARCH, "-v", version,
                   "-b", names["boot"], "-r", names["root"], "-h", names["hash"])
        from_version = from_version or self.last_version
        self.last_version = version
        docs = []
        for name, doc in (migrations or {}).items():
            path = work / name
            path.write_text(json.dumps(doc))
            docs.append(name)
            files.append(path)
        self.migrations[f"({from_version}, {version})"] = docs
        release = work / "Release.toml"
        lines = [f'version = "{version}"', "[migrations]"]
        lines += [f'"{k}" = {json.dumps(v)}' for k, v in self.migrations.items()]
        release.write_text("\n".join(lines) + "\n")
        run_updata("set-migrations", "-f", release, "-t", self.manifest)
        run_updata("add-targets", self.repo, self.manifest, *files)

    # -- host operations (each in its own process, like the real tools)

    def tool(self, module: str, *args: str | Path, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                              capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        if check and done.returncode != 0:
            raise AssertionError(f"{module} {args} -> {done.returncode}\n{done.stdout}\n"
                                 f"{done.stderr}")
        return done

    def updog(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.tool("updates.updog", *args, "--root", self.root, "--disk", self.disk,
                         check=check)

    def signpost(self, *args: str | Path, check: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        return self.tool("updates.signpost", "--disk", self.disk, *args, check=check)

    def reboot(self) -> str:
        """The simulated bootloader: returns "A", "B" or "None"."""
        out = self.signpost("boot", check=False).stdout.strip()
        return out.removeprefix("Set ")

    def running_version(self) -> str | None:
        with OsDisk(self.disk, writable=False) as d:
            return d.running_version()

    def flags(self) -> dict[str, Any]:
        with OsDisk(self.disk, writable=False) as d:
            return {"A": d.flags("A"), "B": d.flags("B"), "active": d.active,
                    "next": d.state().next()}


def lz4_frame(data: bytes) -> bytes:
    """An LZ4 frame as `updata add-update --compress lz4` writes it (decoded size stored)."""
    return lz4.frame.compress(data, store_size=True)


def make_sim(tmp: Path, serve, *, version: str = "1.0.0", seed: int = 100) -> Sim:
    repo = tmp / "repo"
    run_updata("create", repo)
    (tmp / "work").mkdir(parents=True, exist_ok=True)
    run_updata("init", tmp / "work" / "manifest.json")
    server = serve(repo)
    trusted_root = (repo / "metadata" / "1.root.json").read_bytes()
    root = write_host_root(tmp / "host-root", trusted_root, server.base_url, seed=seed,
                           ignore_waves=True)
    disk = tmp / "disk.img"
    create_os_disk(disk, DISK_SIZE, version=version, variant=VARIANT, arch=ARCH)
    return Sim(tmp, repo, server, trusted_root, disk, root, tmp / "state")
