"""The git side of the fleet source (GitPython): fetch a ref shallowly, read files, verify.

One bare repository per remote URL under the state dir; every fetch is ``--depth=1`` so a host
never downloads the fleet's history, and objects it already has are not fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from hostcore.commands import CommandResult, SubprocessRunner
from hostcore.documents import MAX_DOCUMENT_BYTES, DocumentError

FULL_COMMIT = re.compile(r"[0-9a-f]{40}")


class GitSourceError(Exception):
    """Fetching, resolving, reading or verifying failed; the message says what and where.

    The subclasses are how callers tell failures apart (never by the message's text)."""


class GitMissing(GitSourceError):
    """No ``git`` program on this host (GitPython cannot import)."""


class FetchFailed(GitSourceError):
    """The remote did not answer the fetch (unreachable, no such ref, deadline passed); the
    exit status or the runner's own error is in the message."""


class NotACommit(GitSourceError):
    """The fetched ref does not resolve to the commit asked for."""


class BadTree(GitSourceError):
    """A layer's path names something other than a file at that commit."""


class TrustMissing(GitSourceError):
    """Verification is on but what to trust (allowed signers, keyring) is unset or unreadable."""


class Stopping(GitSourceError):
    """The daemon is stopping: no fetch is started."""


class Unverified(GitSourceError):
    """The commit (or tag) is not signed by a trusted key: ``git verify-*`` exited non-zero."""


def _git() -> ModuleType:
    """GitPython, imported on first use: it needs a ``git`` binary at import, and a host that
    does not use gitops must start without one (issues 14, 18)."""
    try:
        import git
    except ImportError as error:  # GitPython raises ImportError when it finds no git binary
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GitMissing(f"settings.gitops needs the git program: {first}") from None
    return git


@dataclass(frozen=True)
class Revision:
    commit: str
    committed: int  # committer time, seconds since the epoch


# Files git leaves behind when it is killed mid-fetch, relative to our bare checkout. Nothing
# else ever runs git there: one daemon per state dir (its lock), one sync at a time, and
# every git child dies with the daemon, so whatever of these exists before a fetch is stale.
STALE_LOCKS = ("*.lock", "refs/**/*.lock", "logs/**/*.lock")
TEMP_OBJECTS = ("objects/??/tmp_obj_*", "objects/tmp_obj_*", "objects/pack/tmp_*",
                "objects/pack/.tmp-*", "objects/incoming-*")
STDERR_LINES = 3  # git's last lines: the one naming the file comes before "fatal: ..."
SYMLINK_MODE = 0o120000
REWIND_TAG = "reconciler-rewind/"  # + a full commit id: a signed tag allowing a rollback to it


class GitRepo:
    def __init__(self, base: Path, url: str, timeout: float = 120.0,
                 runner: SubprocessRunner | None = None):
        self.url = url
        self.timeout = timeout
        self.runner = runner or SubprocessRunner()
        git = _git()
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.directory = base / digest
        self.cleared: list[str] = []  # what clear_stale() removed, not yet reported
        if not (self.directory / "HEAD").exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            self.repo = git.Repo.init(self.directory, bare=True)
        else:
            self.clear_stale()  # a lock left by a kill would break even the config writes below
            self.repo = git.Repo(self.directory)
        if "origin" in [r.name for r in self.repo.remotes]:
            self.repo.remotes.origin.set_url(url)
        else:
            self.repo.create_remote("origin", url)

    def clear_stale(self) -> list[str]:
        """Remove the locks and temporary objects a killed or failed git left in our checkout
        (``shallow.lock`` makes every later fetch fail; ``tmp_obj_*`` of a fetch that hit a
        full disk keep it full). Returns the paths removed, relative to the checkout."""
        removed = []
        for pattern in (*STALE_LOCKS, *TEMP_OBJECTS):
            for found in self.directory.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    if found.is_dir() and not found.is_symlink():
                        shutil.rmtree(found)
                    else:
                        found.unlink()
                    removed.append(str(found.relative_to(self.directory)))
        self.cleared += removed  # until the sync reports them
        return removed

    def cancel(self) -> None:
        """Kill a fetch in progress and refuse new ones (the daemon is stopping)."""
        self.runner.cancel()

    def fetch(self, ref: str | None, depth: int = 1) -> Revision:
        """Fetch ``ref`` (branch, tag, full commit id; None: the remote's HEAD) and resolve it.

        The fetch has a deadline (``timeout``) and dies with the daemon; a failed one leaves no
        temporary object behind."""
        git = _git()
        target = ref or "HEAD"
        self.clear_stale()
        result = self._git("fetch", f"--depth={depth}", "--no-tags", "origin", target)
        if not result.ok:
            self.clear_stale()
            lines = [line for line in result.output.strip().splitlines() if line.strip()]
            detail = " / ".join(lines[-STDERR_LINES:]) or f"exit {result.returncode}"
            if result.error:
                detail = f"{result.error}" + (f": {detail}" if lines else "")
            raise FetchFailed(f"fetching {target!r} from {self.url}: {detail}")
        try:
            commit = self.repo.commit("FETCH_HEAD")
        except (ValueError, git.BadName) as error:
            raise NotACommit(f"{target!r} of {self.url} is not a commit: {error}") from None
        if ref and FULL_COMMIT.fullmatch(ref) and commit.hexsha != ref:
            raise NotACommit(f"{self.url} gave {commit.hexsha} for commit {ref}")
        return Revision(commit.hexsha, commit.committed_date)

    def revision(self, commit: str) -> Revision:
        """A commit fetched before (a rollout's last good revision)."""
        git = _git()
        try:
            found = self.repo.commit(commit)
        except (ValueError, git.BadName) as error:
            raise GitSourceError(f"commit {commit[:12]} is not in the checkout of {self.url}: "
                                 f"{error}") from None
        return Revision(found.hexsha, found.committed_date)

    def _git(self, *args: str, config: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> CommandResult:
        return self.runner.run(
            ["git", "-C", str(self.directory), *config, *args],
            {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})},
            self.timeout,
        )

    def descends(self, commit: str, ancestor: str) -> bool:
        """Whether ``commit`` is ``ancestor`` or has it in its (fetched) history."""
        return self._git("merge-base", "--is-ancestor", ancestor, commit).returncode == 0

    def rewind_allowed(self, commit: str, mode: str, allowed_signers: str | None,
                       keyring: str | None, gnupg_home: Path) -> bool:
        """Whether the remote holds the tag ``REWIND_TAG<commit>``, pointing at ``commit`` and
        signed by a trusted key: the fleet's signed word that going back to it is intended."""
        tag = f"refs/tags/{REWIND_TAG}{commit}"
        fetched = self._git("fetch", "--depth=1", "--no-tags", "origin", f"+{tag}:{tag}")
        if not fetched.ok:
            self.clear_stale()
            return False
        target = self._git("rev-parse", f"{tag}^{{commit}}")
        if not target.ok or target.output.strip() != commit:
            return False
        try:
            self.verify(tag, mode, allowed_signers, keyring, gnupg_home, kind="tag")
        except Unverified:
            return False
        return True

    def read(self, commit: str, path: str) -> bytes | None:
        """A file's bytes at ``commit``, or None when it does not exist there."""
        try:
            blob = self.repo.commit(commit).tree / path
        except KeyError:
            return None
        if blob.type != "blob":
            raise BadTree(f"{path} at {commit[:12]} is a {blob.type}, not a file")
        if blob.mode == SYMLINK_MODE:  # never followed; say so rather than parse the target name
            raise DocumentError(path, "is a symbolic link; layers must be regular files")
        if blob.size > MAX_DOCUMENT_BYTES:  # checked before the blob is read into memory
            raise DocumentError(path, f"larger than {MAX_DOCUMENT_BYTES} bytes ({blob.size})")
        return blob.data_stream.read()

    def verify(
        self,
        commit: str,
        mode: str,
        allowed_signers: str | None,
        keyring: str | None,
        gnupg_home: Path,
        kind: str = "commit",
    ) -> None:
        """Accept ``commit`` (or a tag, ``kind="tag"``) only when signed by a trusted key (git's
        own verification)."""
        command = ["git", "-C", str(self.directory)]
        env = dict(os.environ)
        if mode == "ssh":
            if not allowed_signers:
                raise TrustMissing("verify.mode is ssh but verify.allowed-signers is not set")
            command += [
                "-c",
                "gpg.format=ssh",
                "-c",
                f"gpg.ssh.allowedSignersFile={allowed_signers}",
            ]
        elif mode == "gpg":
            if not keyring:
                raise TrustMissing("verify.mode is gpg but verify.keyring is not set")
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
                raise TrustMissing(f"importing keyring {keyring}: {imported.stderr.strip()}")
        else:
            return
        result = subprocess.run(
            [*command, f"verify-{kind}", commit],
            env=env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        if result.returncode != 0:
            detail = result.stderr.strip().splitlines()
            reason = detail[-1] if detail else f"exit {result.returncode}"
            raise Unverified(
                f"{kind} {commit[:12]} is not signed by a trusted key ({mode}): {reason}"
            )
