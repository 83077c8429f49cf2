"""GPG commit verification of the git source, with the real gpg and a temporary GNUPGHOME.

A commit signed by a key of ``verify.keyring`` is applied; an unsigned one, or one signed by a
key the keyring does not hold, is refused (condition ``Unverified``, the reason naming the
commit) and the last good revision stays applied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.events import Events
from reconciler.schema import Schema
from reconciler.sources.gitsync import GitSync
from reconciler.store import Store
from tests.gitutil import git_env

SCHEMA = Schema.load("aws-k8s")


def gpg_home(base: Path, name: str) -> tuple[Path, str]:
    """A new GNUPGHOME under ``base`` holding one signing key; its fingerprint."""
    assert shutil.which("gpg"), "gpg is needed (scripts/install-system-deps.sh installs it)"
    home = base / f"gnupg-{name}"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                    f"{name} <fleet@example.com>", "ed25519", "sign", "never"],
                   env=env, check=True, capture_output=True)
    listed = subprocess.run(["gpg", "--batch", "--with-colons", "--list-secret-keys"],
                            env=env, check=True, capture_output=True, text=True).stdout
    fingerprint = next(line.split(":")[9] for line in listed.splitlines()
                       if line.startswith("fpr:"))
    return home, fingerprint


class SignedFleet:
    """A bare repository and a clone whose commits are signed (or not) with a chosen key."""

    def __init__(self, base: Path):
        self.base = base
        self.bare, self.work = base / "fleet.git", base / "work"
        self.work.mkdir()
        self.run(base, "init", "-q", "--bare", "-b", "main", str(self.bare))
        self.run(self.work, "init", "-q", "-b", "main")
        self.run(self.work, "remote", "add", "origin", str(self.bare))

    def run(self, cwd: Path, *args: str, gnupg: Path | None = None) -> str:
        env = git_env(self.base)
        if gnupg is not None:
            env["GNUPGHOME"] = str(gnupg)
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def commit(self, motd: str, key: tuple[Path, str] | None = None) -> str:
        (self.work / "fleet").mkdir(exist_ok=True)
        (self.work / "fleet/common.toml").write_text(f'[settings]\nmotd = "{motd}"\n')
        self.run(self.work, "add", "-A")
        if key is None:
            self.run(self.work, "commit", "-q", "-m", motd)
        else:
            home, fingerprint = key
            self.run(self.work, "-c", "gpg.format=openpgp", "-c", f"user.signingkey={fingerprint}",
                     "commit", "-q", "-S", "-m", motd, gnupg=home)
        self.run(self.work, "push", "-q", "-f", "origin", "main")
        return self.run(self.work, "rev-parse", "HEAD")


@pytest.fixture
def fleet_and_sync(tmp_path: Path):
    trusted = gpg_home(tmp_path, "trusted")
    keyring = tmp_path / "fleet-keyring.asc"
    keyring.write_bytes(subprocess.run(
        ["gpg", "--batch", "--armor", "--export", trusted[1]],
        env={**os.environ, "GNUPGHOME": str(trusted[0])}, check=True, capture_output=True,
    ).stdout)
    fleet = SignedFleet(tmp_path)
    store = Store(tmp_path / "store.sqlite")
    store.add_patch("user-data", {"gitops": {
        "url": f"file://{fleet.bare}", "ref": "main", "path": "fleet",
        "verify": {"mode": "gpg", "keyring": str(keyring)}}}, "user-data")
    store.commit("user-data", SCHEMA)
    sync = GitSync(store, SCHEMA, Events(), tmp_path / "clones")
    try:
        yield fleet, sync, trusted, gpg_home(tmp_path, "stranger")
    finally:
        store.close()
        for home in [*tmp_path.glob("gnupg-*"), tmp_path / "clones/gnupg"]:  # their gpg-agents
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ,
                           "GNUPGHOME": str(home)}, capture_output=True, check=False)


def motd(sync: GitSync) -> object:
    return sync.store.live("settings.motd").get("settings.motd")


def test_a_commit_signed_by_a_keyring_key_is_applied(fleet_and_sync) -> None:
    fleet, sync, trusted, _ = fleet_and_sync
    signed = fleet.commit("signed by the fleet", trusted)
    status = sync.sync()
    assert status.condition == "Synced", status.reason
    assert status.applied_commit == signed and motd(sync) == "signed by the fleet"


def test_unsigned_and_untrusted_commits_are_refused(fleet_and_sync) -> None:
    fleet, sync, trusted, stranger = fleet_and_sync
    good = fleet.commit("good", trusted)
    assert sync.sync().condition == "Synced"

    unsigned = fleet.commit("unsigned")
    status = sync.sync()
    assert status.condition == "Unverified"
    assert f"commit {unsigned[:12]} is not signed by a trusted key (gpg)" in status.reason
    assert "\n" not in status.reason  # one line
    assert status.applied_commit == good and motd(sync) == "good"

    untrusted = fleet.commit("signed by a stranger", stranger)
    status = sync.sync()
    assert status.condition == "Unverified"
    assert f"commit {untrusted[:12]} is not signed by a trusted key (gpg)" in status.reason
    assert status.applied_commit == good and motd(sync) == "good"


def test_an_unreadable_keyring_is_a_clear_failure(fleet_and_sync, tmp_path: Path) -> None:
    fleet, sync, trusted, _ = fleet_and_sync
    fleet.commit("good", trusted)
    (tmp_path / "fleet-keyring.asc").write_text("not a key\n")
    status = sync.sync()
    assert status.condition == "Failed"
    assert "importing keyring" in status.reason and "fleet-keyring.asc" in status.reason
    assert motd(sync) != "good"
