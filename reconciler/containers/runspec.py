"""How a host container is run: its mounts (persistent storage, the API socket and its
directory, the bundled apiclient, the host's root for a superpowered one) and its ``RunSpec``.

The socket's directory entry in the container outlives a daemon restart only through a
directory mount: ``<state-dir>/containers/api/api.sock`` is a hard link to the live socket,
renewed when the daemon starts, and the bundled apiclient is pointed at it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from hostcore.durable import replace_file
from reconciler import toolbox
from reconciler.containers.engine import Image, Mount, RunSpec
from reconciler.containers.planner import DesiredContainer
from reconciler.logs import get_logger

log = get_logger("containers")

PERSISTENT_TARGET = "/.bottlerocket/host-containers"
ROOTFS_TARGET = "/.bottlerocket/rootfs"
SOCKET_TARGET = "/run/api.sock"
API_DIR_TARGET = "/run/reconciler"
APICLIENT_TARGET = "/usr/local/bin/apiclient"


class ApiAccess:
    """The API socket and the tools zipapp, as any container of ours sees them (host and
    bootstrap containers alike)."""

    def __init__(self, engine_dir: Path):
        self.apiclient_path = Path(engine_dir) / "bin" / "apiclient"
        self.api_dir = Path(engine_dir) / "api"
        self.socket: Path | None = None

    def link_socket(self) -> bool:
        """Point ``<state-dir>/containers/api/api.sock`` at the live socket (a hard link)."""
        if self.socket is None or not self.socket.is_socket():
            return False
        try:
            self.api_dir.mkdir(parents=True, exist_ok=True)
            link = self.api_dir / "api.sock"
            if link.exists() and os.path.samefile(link, self.socket):
                return True
            tmp = self.api_dir / f".api.sock.{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.link(self.socket, tmp)
            os.replace(tmp, link)
            # sheltie's fallback where PID 1 cannot be entered: the daemon's namespaces
            replace_file(self.api_dir / "host-pid", f"{os.getpid()}\n".encode(), 0o644)
            return True
        except OSError as error:  # another file system: the file mount alone has to do
            log.warning("cannot link the API socket for host containers", error=str(error))
            return False

    def mounts(self) -> tuple[list[Mount], dict[str, str]]:
        """The API socket (and its directory, which outlives a daemon restart) and the tools
        zipapp as apiclient; the environment that goes with them."""
        mounts, env = [], {}
        if self.socket is not None and self.socket.exists():
            mounts.append(Mount(self.socket, SOCKET_TARGET))
            if self.link_socket():
                mounts.append(Mount(self.api_dir, API_DIR_TARGET, read_only=True))
                env["APICLIENT_SOCKET"] = f"{API_DIR_TARGET}/api.sock"
        mounts.append(Mount(self.apiclient(), APICLIENT_TARGET, read_only=True))
        return mounts, env

    def apiclient(self) -> Path:
        """The tools zipapp (``reconciler.toolbox``), rebuilt when a bundled module changes."""
        return toolbox.ensure_zipapp(self.apiclient_path)


def run_spec(want: DesiredContainer, image: Image, storage: Path, generation: int,
             api: ApiAccess) -> RunSpec:
    """The ``RunSpec`` of host container ``want`` on ``image``."""
    mounts = [Mount(storage, f"{PERSISTENT_TARGET}/{want.name}")]
    api_mounts, env = api.mounts()
    mounts += api_mounts
    if want.superpowered:
        mounts.append(Mount(Path("/"), ROOTFS_TARGET, read_only=True))
    return RunSpec(
        name=want.name,
        image=image.id,
        labels=want.labels(generation),
        mounts=mounts,
        privileged=want.superpowered,
        host_pid=want.superpowered,
        host_network=want.superpowered,
        env=env,
    )
