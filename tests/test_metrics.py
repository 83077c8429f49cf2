"""``/metrics`` follows Prometheus' naming (``promtool check metrics``), and a real Prometheus
server scrapes ``serve --metrics-listen`` on 127.0.0.1 and answers a reconcile metric back.

promtool and prometheus come from Debian's ``prometheus`` package (installed by
``scripts/install-system-deps.sh``); without them these tests fail, never skip.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.daemon import Daemon, eventually


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: install Debian's prometheus package "
                    "(scripts/install-system-deps.sh)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metrics_address(daemon: Daemon) -> str | None:
    for line in daemon.logs().splitlines():
        if line.startswith("{") and (entry := json.loads(line))["event"] == "metrics listening":
            return entry["address"][0]
    return None


def test_metrics_pass_promtool_after_a_commit(tmp_path):
    promtool = tool("promtool")
    daemon = Daemon(tmp_path / "state")
    try:
        daemon.ok("PATCH", "/settings", {"motd": "measured"})
        daemon.ok("POST", "/tx/commit_and_apply?wait=true")
        status, text = daemon.request("GET", "/metrics")
        assert status == 200
        assert 'reconciler_passes_total{result="ok"}' in text
        assert 'reconciler_api_requests_total{code="204",method="PATCH"}' in text
        checked = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                                 capture_output=True, check=False)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked
        assert metrics_address(daemon) is None  # no TCP listener unless asked
    finally:
        daemon.stop()


def test_prometheus_scrapes_the_daemon_and_answers_a_reconcile_metric(tmp_path):
    prometheus = tool("prometheus")
    daemon = Daemon(tmp_path / "state", ["--metrics-listen", "127.0.0.1:0"])
    server = None
    try:
        target = eventually(lambda: metrics_address(daemon))
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert b"reconciler_pass_duration_seconds_bucket" in answer.read()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: reconciler\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        web = f"127.0.0.1:{free_port()}"
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={web}", "--log.level=warn"],
            stdout=log, stderr=log, cwd=tmp_path)

        def query() -> list[dict] | None:
            if server.poll() is not None:
                raise AssertionError((tmp_path / "prometheus.log").read_text())
            url = f"http://{web}/api/v1/query?" + urllib.parse.urlencode(
                {"query": 'reconciler_passes_total{job="reconciler",result="ok"}'})
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    result = json.load(answer)["data"]["result"]
            except OSError:
                return None
            return result or None

        (found,) = eventually(query, timeout=60, interval=0.5)
        assert found["metric"]["instance"] == target
        assert float(found["value"][1]) >= 1  # the boot pass, at least
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        daemon.stop()


def test_metrics_listen_refuses_a_bad_address(tmp_path):
    from tests.daemon import cli

    result = cli("serve", "--state-dir", Path(tmp_path / "state"), "--metrics-listen", "9101")
    assert result.returncode == 2 and "is not HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr
