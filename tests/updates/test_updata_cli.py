"""`updata` repository and manifest commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from tests.updates.conftest import run_updata
from updates import updata
from updates.repo import ExpiryPolicy, RepoError, Repository, parse_duration


def test_create_with_given_keys_thresholds_and_policy(tmp_path: Path) -> None:
    pems = []
    for i in range(2):
        signer = CryptoSigner.generate_ecdsa()
        pem = tmp_path / f"root{i}.pem"
        pem.write_bytes(signer.private_bytes)
        pems.append((pem, signer.public_key.keyid))
    policy = tmp_path / "policy.toml"
    policy.write_text("timestamp_expiration = '3 days'\nsnapshot_expiration = '9 days'\n")
    run_updata("create", tmp_path / "repo", "--keys-dir", tmp_path / "keys",
               "--key", f"root={pems[0][0]}", "--key", f"root={pems[1][0]}",
               "--threshold", "root=2", "--expiry-policy", policy, "--keytype", "rsa")
    root = Metadata.from_file(str(tmp_path / "repo/metadata/1.root.json")).signed
    assert sorted(root.roles["root"].keyids) == sorted(k for _, k in pems)
    assert root.roles["root"].threshold == 2
    assert root.keys[root.roles["timestamp"].keyids[0]].keytype == "rsa"
    repo = Repository.open(tmp_path / "repo", keys_dir=tmp_path / "keys")
    assert repo.policy.timestamp == parse_duration("3 days")
    assert not (tmp_path / "repo/keys").exists()


def test_create_refuses_existing_repository(tmp_path: Path, capsys) -> None:
    run_updata("create", tmp_path / "r")
    assert updata.main(["create", str(tmp_path / "r")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_targets_resign_rotate_show(tmp_path: Path, capsys) -> None:
    repo_dir = tmp_path / "r"
    run_updata("create", repo_dir)
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    run_updata("add-targets", repo_dir, f, f"dir/b.bin={f}")
    repo = Repository.open(repo_dir)
    assert sorted(repo.targets()) == ["a.bin", "dir/b.bin"]
    digest = repo.targets()["a.bin"].hashes["sha256"]
    assert (repo_dir / "targets" / f"{digest}.a.bin").read_bytes() == b"hello"
    assert (repo_dir / "targets" / "dir" / f"{digest}.b.bin").exists()
    run_updata("remove-targets", repo_dir, "dir/b.bin")
    run_updata("resign", repo_dir, "--role", "timestamp")
    run_updata("resign", repo_dir, "--role", "root")
    repo = Repository.open(repo_dir)
    assert [repo.md[r].signed.version for r in ("root", "targets", "snapshot", "timestamp")] \
        == [2, 3, 3, 4]
    run_updata("rotate-keys", repo_dir, "--role", "targets")
    repo = Repository.open(repo_dir)
    assert repo.md["root"].signed.version == 3 and repo.md["targets"].signed.version == 4
    capsys.readouterr()
    run_updata("show", repo_dir)
    out = capsys.readouterr().out
    assert "root      v3" in out and "target a.bin 5" in out


def test_manifest_commands(tmp_path: Path, capsys) -> None:
    m = tmp_path / "manifest.json"
    run_updata("init", m)
    assert json.loads(m.read_text()) == {"updates": [], "migrations": {}}
    for v in ("1.0.0", "1.1.0"):
        run_updata("add-update", m, "-f", "aws-dev", "-a", "x86_64", "-v", v, "-b", f"b{v}",
                   "-r", f"r{v}", "-h", f"h{v}")
    run_updata("set-waves", m, "-l", "aws-dev", "-a", "x86_64", "-v", "1.1.0", "-w",
               "accelerated", "--start-at", "2020-09-01T00:00:00Z")
    waves = tmp_path / "waves.toml"
    waves.write_text('[[waves]]\nstart_after = "1 hour"\nfleet_percentage = 50\n'
                     '[[waves]]\nstart_after = "2 hours"\nfleet_percentage = 100\n')
    run_updata("set-waves", m, "-l", "aws-dev", "-a", "x86_64", "-v", "1.0.0", "-w", waves,
               "--start-at", "2020-09-01T00:00:00Z")
    release = tmp_path / "Release.toml"
    release.write_text('version = "1.1.0"\n[migrations]\n"(1.0.0, 1.1.0)" = ["m.lz4"]\n')
    run_updata("set-migrations", "-f", release, "-t", m)
    run_updata("set-max-version", m, "-m", "1.0.0")
    data = json.loads(m.read_text())
    assert [u["max_version"] for u in data["updates"]] == ["1.0.0", "1.0.0"]
    assert data["updates"][0]["waves"] == {"0": "2020-09-01T01:00:00Z",
                                           "1024": "2020-09-01T02:00:00Z"}
    assert list(data["updates"][1]["waves"]) == ["0", "61", "245", "819", "1638"]
    assert data["migrations"] == {"(1.0.0, 1.1.0)": ["m.lz4"]}
    run_updata("remove-update", m, "-l", "aws-dev", "-a", "x86_64", "-v", "1.0.0")
    capsys.readouterr()
    run_updata("validate", m)
    assert "1 update(s), 1 migration key(s)" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["set-waves", "{m}", "-l", "x", "-a", "x86_64", "-v", "1.0.0", "-w", "default"],
     "no update matches"),
    (["set-waves", "{m}", "-l", "v", "-a", "x86_64", "-v", "1.0.0", "-w", "nope"],
     "unknown wave policy"),
    (["validate", "{bad}"], "Bad bound field"),
])
def test_manifest_command_errors(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    m = tmp_path / "m.json"
    run_updata("init", m)
    run_updata("add-update", m, "-f", "v", "-a", "x86_64", "-v", "1.0.0", "-b", "b", "-r", "r",
               "-h", "h")
    bad = tmp_path / "bad.json"
    bad.write_text('{"updates": [{"variant": "v", "arch": "a", "version": "1.0.0", '
                   '"max_version": "1.0.0", "waves": {"234ab32": "2020-01-01T00:00:00Z"}, '
                   '"images": {"boot": "b", "root": "r", "hash": "h"}}], "migrations": {}}')
    capsys.readouterr()
    assert updata.main([a.format(m=m, bad=bad) for a in argv]) == 1
    assert message in capsys.readouterr().err


def test_expiry_policy_and_durations() -> None:
    p = ExpiryPolicy.from_toml("targets_expiration = '2 weeks'\ntimestamp = '36h'\n")
    assert p.targets == parse_duration("14 days") and p.timestamp == parse_duration("36 hours")
    assert ExpiryPolicy.from_toml(p.to_toml()) == p
    assert parse_duration("-1 day").total_seconds() == -86400
    with pytest.raises(RepoError):
        parse_duration("forever")
    with pytest.raises(RepoError):
        p.with_overrides({"bogus": parse_duration("1d")})


def test_signing_needs_threshold_of_private_keys(tmp_path: Path) -> None:
    run_updata("create", tmp_path / "r")
    repo = Repository.open(tmp_path / "r")
    for pem in repo.keys_dir.glob("*.pem"):
        pem.unlink()
    with pytest.raises(RepoError, match="private keys"):
        repo.publish()
