"""The examples agree with each other and work as their READMEs say (issue 18 item 4).

Every user-data example validates for its variant and plans on a fresh host; the git pointer
each example carries (``settings.gitops.path`` and ``groups``, and the one in
``examples/fleet-repo/README.md``) names directories and group documents that exist in the
example fleet repository; and an aws-k8s host started with ``examples/user-data/aws-k8s.toml``,
pointed at that repository as a real git repository, applies its layers.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from hostcore.documents import load_document, settings_of
from tests.daemon import REPO, Daemon, cli, eventually, ok
from tests.gitutil import git

USER_DATA = sorted((REPO / "examples/user-data").glob("aws-*.*"))
FLEET = REPO / "examples/fleet-repo"


def variant_of(path: Path) -> str:
    return path.stem  # aws-dev.toml, aws-k8s.yaml...


@pytest.mark.parametrize("path", USER_DATA, ids=lambda p: p.name)
def test_each_user_data_example_validates_and_plans(path, tmp_path):
    assert ok(cli("validate", "--variant", variant_of(path), path)).strip() == (
        f"{path}: valid for variant {variant_of(path)}")
    state = tmp_path / "state"
    once = cli("serve", "--once", "--state-dir", state, "--variant", variant_of(path),
               "--user-data", path)
    assert once.returncode == 0, once.stdout + once.stderr
    plan = json.loads(ok(cli("plan", "--state-dir", state, "--json")))
    assert plan["errors"] == {} and plan["files"] == []  # converged after its pass


def pointers() -> list[tuple[str, dict]]:
    """(where, settings.gitops) of every example that carries a git pointer."""
    found = []
    for path in USER_DATA:
        gitops = settings_of(load_document(path), str(path)).get("gitops")
        if gitops:
            found.append((path.name, gitops))
    readme = (FLEET / "README.md").read_text()
    block = re.search(r"```toml\n(.*?)```", readme, re.DOTALL)
    assert block, "examples/fleet-repo/README.md shows a pointer"
    found.append(("fleet-repo/README.md", tomllib.loads(block.group(1))["settings"]["gitops"]))
    return found


def test_every_git_pointer_matches_the_example_fleet_repository():
    checked = pointers()
    assert {where for where, _ in checked} >= {"aws-k8s.toml", "aws-k8s.yaml",
                                               "fleet-repo/README.md"}
    for where, gitops in checked:
        layers = FLEET / gitops.get("path", ".")
        assert (layers / "common.toml").is_file(), (where, gitops.get("path"))
        for group in gitops.get("groups", []):
            assert (layers / "groups" / f"{group}.toml").is_file(), (where, group)
        if "host-id" in gitops:
            assert (layers / "hosts" / f"{gitops['host-id']}.toml").is_file(), where
    toml, yaml = (settings_of(load_document(REPO / f"examples/user-data/aws-k8s.{ext}"), ext)
                  for ext in ("toml", "yaml"))
    assert toml == yaml  # each pair holds the same settings (examples/user-data/README.md)


def test_the_k8s_example_follows_the_fleet_example_through_a_real_git_repository(tmp_path):
    bare, work = tmp_path / "fleet.git", tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    shutil.copytree(FLEET, work)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "the example fleet", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)
    example = (REPO / "examples/user-data/aws-k8s.toml").read_text()
    user_data = tmp_path / "aws-k8s.toml"
    user_data.write_text(example.replace('url = "https://git.example.com/fleet.git"',
                                         f'url = "file://{bare}"'))
    assert f"file://{bare}" in user_data.read_text()
    daemon = Daemon(tmp_path / "state", ["--variant", "aws-k8s", "--user-data",
                                         str(user_data)])
    try:
        synced = ok(daemon.apiclient("sync"))
        assert synced.startswith("Git: Synced at "), synced
        labels = json.loads(ok(daemon.apiclient("get", "kubernetes.node-labels")))[
            "settings"]["kubernetes"]["node-labels"]
        assert labels["fleet.example.com/cluster"] == "prod"  # groups/k8s.toml
        assert labels["fleet.example.com/accelerator"] == "gpu"  # groups/gpu.toml
        assert labels["role"] == "worker"  # the user data's own
        motd = ok(daemon.apiclient("get", "motd"))
        assert "prod fleet: changes go through git" in motd  # common.toml
        eventually(lambda: (daemon.root / "etc/motd").read_text().startswith("prod fleet"))
    finally:
        daemon.stop()
