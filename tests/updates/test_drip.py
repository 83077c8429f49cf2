"""F12: an update server dripping one byte every half second (each read well within the socket
timeout) is cut off by the overall per-file deadline, in the fetcher, in ``updog`` and by the
dispatcher's per-command deadline; the dispatcher lock (the API's 423) is released and no
``updog`` is left behind."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exc

from reconciler.updates_executor import updog_command
from tests.daemon import eventually
from tests.faultutil import DripServer
from tests.updates.simhost import make_sim
from updates.fetcher import UpdogFetcher
from updates.manager import UpdateManager


@pytest.fixture
def drip(tmp_path: Path):
    servers: list[DripServer] = []

    def start(directory: Path) -> DripServer:
        servers.append(DripServer(directory))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _updog_pids(root: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if f"updates.updog --root {root}" in line:
                    found.append(int(entry.name))
    return found


def test_metadata_and_target_downloads_end_at_their_deadline(tmp_path: Path, drip) -> None:
    (tmp_path / "1.root.json").write_bytes(b"{" + b" " * 4096 + b"}")
    (tmp_path / "image.img").write_bytes(b"x" * 8192)
    server = drip(tmp_path)
    fetcher = UpdogFetcher(socket_timeout=10, deadline=2)
    with pytest.raises(tuf_exc.SlowRetrievalError, match=r"1\.root\.json: not downloaded "
                       r"within its deadline of 2 s"):
        b"".join(fetcher.fetch(f"{server.url}/1.root.json"))
    with pytest.raises(tuf_exc.SlowRetrievalError, match=r"image\.img: not downloaded "
                       r"within its deadline of 2 s"):
        b"".join(fetcher.fetch_target(f"{server.url}/image.img", 8192))
    eventually(lambda: server.open == 0)  # both connections were shut down, not left dripping
    # a 404 still raises before the first byte (the root-version walk ends on it)
    with pytest.raises(tuf_exc.DownloadHTTPError):
        fetcher.fetch(f"{server.url}/2.root.json")


def test_updog_check_update_fails_at_its_download_deadline(tmp_path: Path, serve, drip) -> None:
    sim = make_sim(tmp_path, serve)
    server = drip(sim.repo)
    config = sim.root / "etc/updog.toml"
    config.write_text(config.read_text().replace(sim.server.base_url, server.url)
                      + "download_deadline = 2\n")
    # bounded here too, so that without the deadline this fails instead of hanging
    done = subprocess.run([sys.executable, "-m", "updates.updog", "check-update", "--root",
                           str(sim.root), "--disk", str(sim.disk)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode != 0
    assert "not downloaded within its deadline of 2 s" in done.stderr, done.stderr
    assert not _updog_pids(sim.root)


def test_the_dispatcher_kills_updog_past_its_command_deadline(tmp_path: Path, serve,
                                                              drip) -> None:
    sim = make_sim(tmp_path, serve)
    server = drip(sim.repo)
    config = sim.root / "etc/updog.toml"
    config.write_text(config.read_text().replace(sim.server.base_url, server.url)
                      + "download_deadline = 3600\n")
    manager = UpdateManager(updog_command(sim.root), disk=str(sim.disk),
                            deadlines={"refresh": 3})
    manager.start("refresh")
    assert manager.busy
    manager.wait(300)
    assert not manager.busy  # the API's 423 ends with the command
    last = manager.status().most_recent_command
    assert last.cmd_type == "refresh" and last.cmd_status == "Failed"
    assert "updog refresh killed: past its deadline of 3 s" in last.stderr, last.stderr
    assert not _updog_pids(sim.root)
    eventually(lambda: server.open == 0)
