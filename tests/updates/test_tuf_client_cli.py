"""`updog tuf-client` (the tuf-conformance client CLI) on repositories built by updata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.updates.conftest import Env, run_updata
from updates import updog


class Cli:
    """Runs `updog tuf-client` like the conformance suite does, in one client dir."""

    def __init__(self, env: Env, tmp: Path, transport: str = "http") -> None:
        self.env, self.transport = env, transport
        self.metadata_dir, self.target_dir = tmp / "metadata", tmp / "targets"
        self.metadata_dir.mkdir(parents=True)
        self.target_dir.mkdir()

    def __call__(self, *argv: str) -> int:
        return updog.main(["tuf-client", *argv])

    def init(self) -> int:
        root = self.metadata_dir.parent / "initial_root.json"
        root.write_bytes(self.env.trusted_root)
        return self("--metadata-dir", str(self.metadata_dir), "init", str(root))

    def refresh(self) -> int:
        return self("--metadata-url", f"{self.env.base(self.transport)}/metadata",
                    "--metadata-dir", str(self.metadata_dir), "refresh")

    def download(self, *names: str) -> int:
        base = self.env.base(self.transport)
        args = [a for n in names for a in ("--target-name", n)]
        return self("--metadata-url", f"{base}/metadata", "--metadata-dir",
                    str(self.metadata_dir), *args, "--target-dir", str(self.target_dir),
                    "--target-base-url", f"{base}/targets", "download")

    def versions(self) -> dict[str, int]:
        return {p.stem: json.loads(p.read_bytes())["signed"]["version"]
                for p in sorted(self.metadata_dir.glob("*.json"))}

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.metadata_dir.glob("*.json")}


@pytest.fixture(params=["http", "file"])
def cli(env: Env, tmp_path: Path, request) -> Cli:
    c = Cli(env, tmp_path / "client", request.param)
    assert c.init() == 0
    return c


def test_init_trusts_root_without_network(env: Env, tmp_path: Path) -> None:
    c = Cli(env, tmp_path / "c")
    assert c.init() == 0
    assert c.versions() == {"root": 1}
    assert env.server.seen == []


def test_init_rejects_garbage_root(env: Env, tmp_path: Path) -> None:
    c = Cli(env, tmp_path / "c")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert c("--metadata-dir", str(c.metadata_dir), "init", str(bad)) == 1


def test_refresh_stores_non_versioned_names(cli: Cli) -> None:
    assert cli.refresh() == 0
    assert cli.versions() == {"root": 1, "snapshot": 2, "targets": 2, "timestamp": 2}


def test_download_in_order_and_cached(cli: Cli, env: Env) -> None:
    names = ["manifest.json", "root-1.1.0.lz4"]
    assert cli.download(*names) == 0
    assert (cli.target_dir / "root-1.1.0.lz4").read_bytes() == env.images["root"].read_bytes()
    if cli.transport == "http":
        env.server.seen.clear()
        assert cli.download(*names) == 0
        assert not [p for p in env.server.seen if p.startswith("/targets/")]


def test_download_stops_at_first_failure(cli: Cli) -> None:
    assert cli.download("manifest.json", "missing.lz4", "boot-1.1.0.lz4") == 1
    assert sorted(p.name for p in cli.target_dir.iterdir()) == ["manifest.json"]


def test_rollback(cli: Cli, env: Env) -> None:
    old = env.meta("timestamp.json").read_bytes()
    run_updata("resign", env.path)
    assert cli.refresh() == 0
    before = cli.files()
    env.meta("timestamp.json").write_bytes(old)
    assert cli.refresh() == 1
    assert cli.files() == before


def test_freeze(cli: Cli, env: Env) -> None:
    assert cli.refresh() == 0
    before = cli.files()
    run_updata("resign", env.path, "--expires", "timestamp=-1d")
    assert cli.refresh() == 1
    assert cli.download("manifest.json") == 1
    assert cli.files() == before


def test_mix_and_match(cli: Cli, env: Env) -> None:
    assert cli.refresh() == 0
    old = env.meta("2.targets.json").read_bytes()
    run_updata("add-targets", env.path, f"extra={env.manifest}")
    env.meta("3.targets.json").write_bytes(old)
    assert cli.refresh() == 1
    assert cli.versions()["targets"] == 2


@pytest.mark.parametrize("extra", [0, 1])
def test_tampered_target(cli: Cli, env: Env, extra: int) -> None:
    stored = env.stored_target("boot-1.1.0.lz4")
    size = stored.stat().st_size
    stored.write_bytes(b"X" * (size + extra))
    assert cli.download("boot-1.1.0.lz4") == 1
    assert list(cli.target_dir.iterdir()) == []


def test_endless_data(env: Env, tmp_path: Path) -> None:
    cli = Cli(env, tmp_path / "c")
    assert cli.init() == 0 and cli.refresh() == 0
    before = cli.files()
    env.server.endless.add("/metadata/timestamp.json")
    assert cli.refresh() == 1
    assert cli.files() == before


def test_key_rotation_and_stuck_client(cli: Cli, env: Env, tmp_path: Path) -> None:
    assert cli.refresh() == 0
    run_updata("rotate-keys", env.path, "--role", "root", "--role", "timestamp")
    assert cli.refresh() == 0
    assert cli.versions()["root"] == 2
    stuck = Cli(env, tmp_path / "stuck", cli.transport)
    assert stuck.init() == 0
    env.meta("2.root.json").unlink()
    assert stuck.refresh() == 1
    assert stuck.versions() == {"root": 1}


@pytest.mark.parametrize("argv", [
    [], ["init"], ["--metadata-dir", "x", "init"], ["--metadata-dir", "x", "refresh"],
    ["--metadata-dir", "x", "--metadata-url", "u", "download"],
    ["--metadata-dir", "x", "--bogus", "refresh"], ["--metadata-dir"],
])
def test_usage_errors(argv: list[str], capsys) -> None:
    assert updog.main(["tuf-client", *argv]) == 1
    assert "usage" in capsys.readouterr().err
