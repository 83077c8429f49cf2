"""The git fleet source against real repositories made on the fly (bare repo, file:// URL)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemon import REPO, Daemon, eventually, ok
from tests.gitutil import git

EXAMPLE = REPO / "examples/fleet-repo"


class Fleet:
    """A bare repository and a working clone to commit into."""

    def __init__(self, base: Path):
        self.bare = base / "fleet.git"
        self.work = base / "work"
        self.git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=base)
        shutil.copytree(EXAMPLE, self.work)
        self.git("init", "-q", "-b", "main")
        self.git("remote", "add", "origin", str(self.bare))
        self.commit("initial fleet")

    def git(self, *args: str, cwd: Path | None = None) -> str:
        return git(*args, cwd=cwd or self.work, home=self.work.parent)

    def write(self, path: str, text: str) -> None:
        (self.work / path).parent.mkdir(parents=True, exist_ok=True)
        (self.work / path).write_text(text)

    def commit(self, message: str, *extra: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", *extra, "-m", message)
        self.git("push", "-q", "-f", "origin", "main")
        return self.git("rev-parse", "HEAD")

    @property
    def url(self) -> str:
        return f"file://{self.bare}"


def pointer(fleet: Fleet, host_id: str = "web-1", extra: str = "") -> str:
    return (f'[settings.gitops]\nurl = "{fleet.url}"\nref = "main"\npath = "clusters/prod"\n'
            f'host-id = "{host_id}"\ngroups = ["web"]\ninterval = 3600\n{extra}')


def start(tmp_path: Path, fleet: Fleet, name: str = "host", host_id: str = "web-1",
          extra: str = "") -> Daemon:
    user_data = tmp_path / f"{name}.toml"
    user_data.write_text(pointer(fleet, host_id, extra))
    daemon = Daemon(tmp_path / name, ["--user-data", str(user_data)])
    eventually(lambda: daemon.ok("GET", "/status").get("gitops", {}).get("condition")
               not in (None, "Disabled", "Fetching"), timeout=30)
    return daemon


def motd(daemon: Daemon) -> str:
    return (daemon.root / "etc/motd").read_text() if (daemon.root / "etc/motd").exists() else ""


def sync(daemon: Daemon, expect: int = 200) -> dict:
    """``POST /actions/sync?wait=true``, answered with ``expect`` (422: a refused revision,
    502: a failed fetch; the JSON body is the same)."""
    status, answer = daemon.request("POST", "/actions/sync?wait=true")
    assert status == expect, (status, answer)
    return answer


@pytest.fixture
def fleet(tmp_path) -> Fleet:
    return Fleet(tmp_path)


def test_layers_apply_and_git_owns_them(tmp_path, fleet):
    head = fleet.git("rev-parse", "HEAD")
    d = start(tmp_path, fleet)
    try:
        eventually(lambda: motd(d).startswith("web-1: serving the fleet"))
        settings = d.ok("GET", "/settings")
        assert settings["aws"]["region"] == "us-west-2"  # group layer
        assert settings["ntp"]["time-servers"] == ["0.pool.ntp.org", "1.pool.ntp.org"]  # common
        source = d.ok("GET", "/provenance?keys=settings.motd")["settings.motd"]["source"]
        assert source == f"git:{head}"
        status = d.ok("GET", "/status")["gitops"]
        assert status["condition"] == "Synced" and status["applied_commit"] == head
        shown = ok(d.apiclient("status"))
        assert f"applied {head[:12]}" in shown and "Synced" in shown
    finally:
        d.stop()


def test_new_commit_on_request_and_on_interval(tmp_path, fleet):
    d = start(tmp_path, fleet, extra="")
    try:
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "second"\n')
        second = fleet.commit("second motd")
        result = sync(d)
        assert result["sync"]["applied_commit"] == second and result["receipt"]["ok"]
        assert motd(d).startswith("second")
        # the interval: make it short through git itself, then commit again
        fleet.write("clusters/prod/common.toml",
                    (fleet.work / "clusters/prod/common.toml").read_text()
                    + "\n[settings.gitops]\ninterval = 1\n")
        fleet.commit("sync every second")
        sync(d)
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "third"\n')
        fleet.commit("third motd")
        eventually(lambda: motd(d).startswith("third"), timeout=15)
    finally:
        d.stop()


def test_invalid_commit_keeps_the_last_good_revision(tmp_path, fleet):
    d = start(tmp_path, fleet)
    try:
        good = fleet.git("rev-parse", "HEAD")
        fleet.write("clusters/prod/groups/web.toml",
                    '[settings.aws]\nregion = "us-west-2"\n[settings.ntp]\ntime-server = ["x"]\n')
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "never applied"\n')
        bad = fleet.commit("typo")
        status = sync(d, 422)["sync"]
        assert status["condition"] == "Invalid"
        assert bad[:12] in status["reason"] and "groups/web.toml" in status["reason"]
        assert "settings.ntp.time-server" in status["reason"]
        assert status["applied_commit"] == good
        assert motd(d).startswith("web-1: serving the fleet")
        assert "never applied" not in d.ok("GET", "/settings")["motd"]
    finally:
        d.stop()


def test_removed_key_returns_to_its_default_and_force_push_back(tmp_path, fleet):
    d = start(tmp_path, fleet)
    try:
        first = fleet.git("rev-parse", "HEAD")
        fleet.git("rm", "-q", "clusters/prod/hosts/web-1.toml")
        (fleet.work / "clusters/prod/common.toml").write_text("[settings]\n")
        fleet.commit("drop motd and ntp")
        sync(d)
        settings = d.ok("GET", "/settings")
        default_motd = settings["motd"]
        assert "serving" not in default_motd and "prod fleet" not in default_motd
        assert d.ok("GET", "/provenance?keys=settings.motd")["settings.motd"]["source"] == "default"
        assert settings["ntp"]["time-servers"] != ["0.pool.ntp.org", "1.pool.ntp.org"]
        # force-push the branch back to the first commit: applied, with an event
        fleet.git("reset", "-q", "--hard", first)
        fleet.git("push", "-q", "-f", "origin", "main")
        assert sync(d)["sync"]["applied_commit"] == first
        assert motd(d).startswith("web-1: serving the fleet")
        assert any("older commit" in e["data"]["message"] for e in d.ok("GET", "/events"))
    finally:
        d.stop()


def test_api_patch_of_git_key_is_refused_unless_forced_then_reverted(tmp_path, fleet):
    d = start(tmp_path, fleet)
    try:
        status, text = d.request("PATCH", "/settings", {"motd": "mine"})
        assert status == 409 and "managed by git" in text and str(fleet.bare) in text
        assert d.request("PATCH", "/settings?force=true", {"motd": "mine"})[0] == 204
        d.ok("POST", "/tx/commit_and_apply?wait=true")
        assert motd(d).startswith("mine")
        sync(d)
        assert motd(d).startswith("web-1: serving the fleet")
        assert any(e["type"] == "drift" and "settings.motd" in e["data"]["message"]
                   for e in d.ok("GET", "/events"))
        # keys git does not own stay writable
        assert d.request("PATCH", "/settings", {"updates": {"seed": 7}})[0] == 204
    finally:
        d.stop()


def test_unreachable_remote_is_a_condition(tmp_path, fleet):
    d = start(tmp_path, fleet)
    try:
        shutil.rmtree(fleet.bare)
        status = sync(d, 502)["sync"]
        assert status["condition"] == "Failed" and "fleet.git" in status["reason"]
        assert motd(d).startswith("web-1: serving the fleet")
        assert d.process.poll() is None
    finally:
        d.stop()


def test_signed_commit_policy(tmp_path, fleet):
    key = tmp_path / "signer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"fleet@example.com {(tmp_path / 'signer.pub').read_text()}")
    verify = f'verify = {{ mode = "ssh", allowed-signers = "{signers}" }}\n'
    d = start(tmp_path, fleet, extra=verify)
    try:
        status = d.ok("GET", "/status")["gitops"]
        assert status["condition"] == "Unverified" and "not signed" in status["reason"]
        assert not motd(d).startswith("web-1")
        fleet.git("config", "gpg.format", "ssh")
        fleet.git("config", "user.signingkey", str(key))
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "signed"\n')
        fleet.commit("signed change", "-S")
        assert sync(d)["sync"]["condition"] == "Synced"
        assert motd(d).startswith("signed")
        fleet.write("clusters/prod/hosts/web-1.toml", '[settings]\nmotd = "unsigned"\n')
        fleet.commit("unsigned change")
        assert sync(d, 422)["sync"]["condition"] == "Unverified"
        assert motd(d).startswith("signed")
    finally:
        d.stop()


def test_two_daemons_follow_one_repository_with_their_own_layers(tmp_path, fleet):
    fleet.write("clusters/prod/hosts/web-2.toml", '[settings]\nmotd = "web-2 here"\n')
    fleet.commit("web-2")
    one = start(tmp_path, fleet, "one", "web-1")
    two = start(tmp_path, fleet, "two", "web-2")
    try:
        eventually(lambda: motd(one).startswith("web-1: serving"))
        eventually(lambda: motd(two).startswith("web-2 here"))
        assert two.ok("GET", "/settings")["aws"]["region"] == "us-west-2"
    finally:
        one.stop()
        two.stop()
