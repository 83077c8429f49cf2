"""Facts of the host the daemon runs on, checked without a real host (see test_realhost.py too):
the distribution's paths come from its os-release, and git is needed only by gitops."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.daemon import Daemon, cli, eventually

NO_GIT = {"GIT_PYTHON_GIT_EXECUTABLE": "/nonexistent/git", "GIT_PYTHON_REFRESH": "error"}


def test_a_debian_root_gets_debian_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12"\nID=debian\n')
    data = tmp_path / "user-data.toml"
    data.write_text('[settings.ntp]\ntime-servers = ["127.0.0.1"]\n')
    done = cli("serve", "--once", "--json", "--state-dir", tmp_path / "state", "--root", root,
               "--user-data", data)
    assert done.returncode == 0, done.stderr
    assert "pool 127.0.0.1 iburst" in (root / "etc" / "chrony" / "chrony.conf").read_text()
    assert not (root / "etc" / "chrony.conf").exists()
    steps = {s["name"]: s for s in json.loads(done.stdout)["steps"]}
    assert steps["chrony-conf"]["path"] == "/etc/chrony/chrony.conf"
    assert steps["chronyd"]["commands"] == [["systemctl", "try-reload-or-restart",
                                              "chrony.service"]]


def test_the_daemon_starts_without_git_and_gitops_says_it_needs_it(tmp_path: Path) -> None:
    env = {**os.environ, **NO_GIT}
    done = cli("serve", "--once", "--state-dir", tmp_path / "once", env=env)
    assert done.returncode == 0, done.stderr
    daemon = Daemon(tmp_path / "state", ["--interval", "3600"], env=NO_GIT)
    try:
        daemon.ok("PATCH", "/settings?tx=g", {"gitops": {"url": f"file://{tmp_path}/fleet.git"}})
        daemon.ok("POST", "/tx/commit_and_apply?tx=g&wait=true")
        status = eventually(lambda: (s := daemon.ok("GET", "/status"))["gitops"]["failures"]
                            and s, timeout=20)
        assert status["gitops"]["condition"] == "Failed"
        assert status["gitops"]["reason"].startswith("settings.gitops needs the git program:")
        assert "\n" not in status["gitops"]["reason"]
    finally:
        assert daemon.stop() == 0, daemon.logs()
