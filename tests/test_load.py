"""A short load run in every test run (`make bench` runs 60 s): nothing lost, no errors."""

from __future__ import annotations

import os

from tests.daemon import REPO, Daemon
from tests.load import run_load

SECONDS = float(os.environ.get("LOAD_SECONDS", "3"))


def test_sixteen_clients_mixed_load_lose_nothing(tmp_path):
    daemon = Daemon(tmp_path / "state", [
        "--variant", "aws-k8s", "--user-data", str(REPO / "examples/user-data/aws-k8s.toml")])
    try:
        result = run_load(daemon, clients=16, seconds=SECONDS)
    finally:
        daemon.stop()
    print(result.summary())
    assert result.requests > 0
    assert result.errors == []
    assert result.lost_commits == []
