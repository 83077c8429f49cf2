"""``python -m reconciler.migrator``, run as a program: a real migration forward and back
through a signed (TUF) migration cache, and every refusal as one line on stderr, exit 1, no
traceback, the store untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from reconciler.migrator import DATASTORE_VERSION, datastore_version
from reconciler.schema import Schema
from reconciler.store import Store
from tests.updates.conftest import run_updata
from updates.apply import MigrationCache
from updates.repo import Repository

RENAME = {"migration": 1, "name": "rename-motd", "version": "1.1.0",
          "steps": [{"op": "rename", "from": "settings.motd", "to": "settings.banner"}]}
NAME = "migrate_v1.1.0_rename-motd.json"


def signed_cache(base: Path) -> tuple[Path, Path]:
    """A TUF repository with a manifest and one migration, cached the way updog leaves it;
    returns (trusted root.json, updog state dir)."""
    repo_path = base / "repo"
    run_updata("create", repo_path)
    repo = Repository.open(repo_path)
    documents = {
        "manifest.json": json.dumps({"updates": [], "migrations": {"(1.0.0, 1.1.0)": [NAME]}}),
        NAME: json.dumps(RENAME),
    }
    infos = {name: repo.add_target(name, text.encode()) for name, text in documents.items()}
    repo.publish()
    cache = MigrationCache.under(base / "updog")
    cache.targets.mkdir(parents=True)
    cache.metadata.mkdir(parents=True)
    for path in (repo_path / "metadata").glob("*.json"):
        if path.name != "root.json":
            (cache.metadata / path.name).write_bytes(path.read_bytes())
    for name, info in infos.items():
        (cache.targets / f"{info.hashes['sha256']}.{name}").write_text(documents[name])
    root = base / "root.json"
    root.write_bytes((repo_path / "metadata/1.root.json").read_bytes())
    return root, base / "updog"


def migrator(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.migrator", "--state-dir", str(state),
         "--root", str(state / "root"), *args],
        capture_output=True, text=True, timeout=60,
    )


def refused_in_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("migrator: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_a_signed_migration_runs_forward_and_back(tmp_path: Path) -> None:
    root, updog = signed_cache(tmp_path)
    state = tmp_path / "state"
    assert migrator(state, "--version", "1.0.0").returncode == 0
    with Store(state / "store.db") as store:
        store.add_patch("t", {"motd": "hello"}, "api:t")
        store.commit("t", Schema.load("aws-k8s"))
    trust = ("--trusted-root", str(root), "--updog-state", str(updog))

    forward = migrator(state, "--version", "1.1.0", *trust)
    assert (forward.returncode, forward.stderr) == (0, ""), forward.stderr
    assert forward.stdout == ("migrator: store migrated forward 1.0.0 -> 1.1.0 "
                              "(1 migration(s), 2 key(s) changed)\n")
    with Store(state / "store.db") as store:
        assert store.live("settings.banner") == {"settings.banner": "hello"}
        assert store.get_meta(DATASTORE_VERSION) == "1.1.0"

    back = migrator(state, "--version", "1.0.0", *trust)
    assert back.returncode == 0 and "migrated backward 1.1.0 -> 1.0.0" in back.stdout
    with Store(state / "store.db") as store:
        assert store.live("settings.motd") == {"settings.motd": "hello"}


def test_refusals_are_one_line_and_change_nothing(tmp_path: Path) -> None:
    root, updog = signed_cache(tmp_path)
    state = tmp_path / "state"
    assert migrator(state, "--version", "1.0.0").returncode == 0
    before = (state / "store.db").read_bytes()

    refused_in_one_line(migrator(state, "--version", "not-a-version"), "not-a-version")
    refused_in_one_line(migrator(state, "--version", "1.1.0"), "no trusted root.json")
    # a migration cache that does not verify against this root: another repository's root
    other_root, _ = signed_cache(tmp_path / "other")
    refused_in_one_line(migrator(state, "--version", "1.1.0", "--trusted-root", str(other_root),
                                 "--updog-state", str(updog)))
    # no migration path to that version in the signed manifest
    refused_in_one_line(migrator(state, "--version", "2.0.0", "--trusted-root", str(root),
                                 "--updog-state", str(tmp_path / "empty-updog")))
    # no --version and no OS disk to read it from
    refused_in_one_line(migrator(state, "--disk", str(tmp_path / "no-such-disk")),
                        "no-such-disk")
    assert (state / "store.db").read_bytes() == before
    assert datastore_version(state / "store.db") == "1.0.0"


def test_usage_errors_exit_non_zero(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "reconciler.migrator"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--state-dir" in result.stderr
    assert "Traceback" not in result.stderr

