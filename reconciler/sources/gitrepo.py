"""The git side of the fleet source (GitPython): fetch a ref shallowly, read files, verify.

One bare repository per remote URL under the state dir; every fetch is ``--depth=1`` so a host
never downloads the fleet's history, and objects it already has are not fetched again.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import git

FULL_COMMIT = re.compile(r"[0-9a-f]{40}")


class GitSourceError(Exception):
    """Fetching, resolving, reading or verifying failed; the message says what and where."""


def _git() -> ModuleType:
    """GitPython, imported on first use: it needs a ``git`` binary at import, and a host that
    does not use gitops must start without one (issues 14, 18)."""
    try:
        import git
    except ImportError as error:  # GitPython raises ImportError when it finds no git binary
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GitSourceError(f"settings.gitops needs the git program: {first}") from None
    return git


@dataclass(frozen=True)
class Revision:
    commit: str
    committed: int  # committer time, seconds since the epoch


class GitRepo:
    def __init__(self, base: Path, url: str, timeout: float = 120.0):
        self.url = url
        self.timeout = timeout
        git = _git()
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.directory = base / digest
        if not (self.directory / "HEAD").exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            self.repo = git.Repo.init(self.directory, bare=True)
        else:
            self.repo = git.Repo(self.directory)
        if "origin" in [r.name for r in self.repo.remotes]:
            self.repo.remotes.origin.set_url(url)
        else:
            self.repo.create_remote("origin", url)

    def fetch(self, ref: str | None) -> Revision:
        """Fetch ``ref`` (branch, tag, full commit id; None: the remote's HEAD) and resolve it."""
        git = _git()
        target = ref or "HEAD"
        try:
            self.repo.git.fetch(
                "--depth=1", "--no-tags", "origin", target, kill_after_timeout=self.timeout
            )
        except git.GitCommandError as error:
            raise GitSourceError(f"fetching {target!r} from {self.url}: {_stderr(error)}") from None
        try:
            commit = self.repo.commit("FETCH_HEAD")
        except (ValueError, git.BadName) as error:
            raise GitSourceError(f"{target!r} of {self.url} is not a commit: {error}") from None
        if ref and FULL_COMMIT.fullmatch(ref) and commit.hexsha != ref:
            raise GitSourceError(f"{self.url} gave {commit.hexsha} for commit {ref}")
        return Revision(commit.hexsha, commit.committed_date)

    def read(self, commit: str, path: str) -> bytes | None:
        """A file's bytes at ``commit``, or None when it does not exist there."""
        try:
            blob = self.repo.commit(commit).tree / path
        except KeyError:
            return None
        if blob.type != "blob":
            raise GitSourceError(f"{path} at {commit[:12]} is a {blob.type}, not a file")
        return blob.data_stream.read()

    def verify(
        self,
        commit: str,
        mode: str,
        allowed_signers: str | None,
        keyring: str | None,
        gnupg_home: Path,
    ) -> None:
        """Accept ``commit`` only when signed by a trusted key (git's own verification)."""
        command = ["git", "-C", str(self.directory)]
        env = dict(os.environ)
        if mode == "ssh":
            if not allowed_signers:
                raise GitSourceError("verify.mode is ssh but verify.allowed-signers is not set")
            command += [
                "-c",
                "gpg.format=ssh",
                "-c",
                f"gpg.ssh.allowedSignersFile={allowed_signers}",
            ]
        elif mode == "gpg":
            if not keyring:
                raise GitSourceError("verify.mode is gpg but verify.keyring is not set")
            gnupg_home.mkdir(mode=0o700, parents=True, exist_ok=True)
            env["GNUPGHOME"] = str(gnupg_home)
            imported = subprocess.run(
                ["gpg", "--batch", "--import", keyring],
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
            )
            if imported.returncode != 0:
                raise GitSourceError(f"importing keyring {keyring}: {imported.stderr.strip()}")
        else:
            return
        result = subprocess.run(
            [*command, "verify-commit", commit],
            env=env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        if result.returncode != 0:
            detail = result.stderr.strip().splitlines()
            reason = detail[-1] if detail else f"exit {result.returncode}"
            raise GitSourceError(
                f"commit {commit[:12]} is not signed by a trusted key ({mode}): {reason}"
            )


def _stderr(error: git.GitCommandError) -> str:
    text = (error.stderr or "").strip().replace("stderr: ", "").strip("'\n ")
    return text.splitlines()[-1] if text else str(error)
