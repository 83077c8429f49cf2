"""A cut image download resumes with an HTTP Range request and the whole target verifies;
`max_download_rate` paces the download."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.updates.conftest import write_host_root
from tests.updates.simhost import image_bytes, make_sim
from updates.config import parse_updog_toml
from updates.fetcher import UpdogFetcher
from updates.partitions import OsDisk


class CuttingHandler(http.server.BaseHTTPRequestHandler):
    """Serves a directory with Range support; every full GET of a `*-root.img` target sends
    its headers and half its bytes, then drops the connection (a Range GET gets the rest)."""

    directory: Path
    ranges: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.directory / unquote(urlsplit(self.path).path).lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        if wanted:
            self.ranges.append(wanted)
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not wanted and path.name.endswith("-root.img"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def cutting_server():
    servers = []

    def start(directory: Path) -> tuple[str, list[str]]:
        ranges: list[str] = []
        handler = type("H", (CuttingHandler,), {"directory": directory, "ranges": ranges})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", ranges

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_download_cut_at_half_resumes_and_verifies(tmp_path: Path, serve,
                                                   cutting_server) -> None:
    sim = make_sim(tmp_path, serve)
    sizes = {"root": 2 << 20}
    sim.publish("1.1.0", sizes=sizes)  # raw: the cut falls in the middle of the image bytes
    base, ranges = cutting_server(sim.repo)
    write_host_root(sim.root, sim.trusted_root, base, seed=100, ignore_waves=True)
    sim.updog("update")
    assert ranges and ranges[0].startswith("bytes=") and int(ranges[0][6:-1]) > 0
    plain = image_bytes("1.1.0", "root", sizes)
    with OsDisk(sim.disk, writable=False) as d:
        written = os.pread(d.fd, len(plain), d.entry("B", "root").offset)
    assert hashlib.sha256(written).digest() == hashlib.sha256(plain).digest()
    assert sim.reboot() == "B" and sim.running_version() == "1.1.0"


def test_max_download_rate_paces_the_stream(tmp_path: Path) -> None:
    target = tmp_path / "t.bin"
    target.write_bytes(b"x" * (4 << 20))
    fetcher = UpdogFetcher(max_rate=1 << 20, chunk_size=256 << 10)
    pauses: list[float] = []
    fetcher.sleep = pauses.append  # record instead of sleeping
    got = b"".join(fetcher.fetch_target(target.as_uri(), 4 << 20))
    assert len(got) == 4 << 20
    # Nothing really slept, so the last pause is the whole delay owed: 4 MiB at 1 MiB/s
    # (less the time reading took); every chunk after the first asked for one.
    assert len(pauses) == 16 and 3.5 < pauses[-1] <= 4.0


def test_max_download_rate_setting_reaches_updog() -> None:
    text = ('metadata_base_url = "http://x/m/"\ntargets_base_url = "http://x/t/"\nseed = 1\n'
            'version_lock = "latest"\nignore_waves = false\nmax_download_rate = 2048\n')
    assert parse_updog_toml(text).max_download_rate == 2048
    with pytest.raises(ValueError, match="max_download_rate"):
        parse_updog_toml(text.replace("2048", "0"))
