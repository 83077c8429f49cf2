"""git with a fixed identity and no user configuration, for tests and benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

IDENTITY = {"GIT_AUTHOR_NAME": "fleet", "GIT_AUTHOR_EMAIL": "fleet@example.com",
            "GIT_COMMITTER_NAME": "fleet", "GIT_COMMITTER_EMAIL": "fleet@example.com"}


def git_env(home: Path = Path("/tmp")) -> dict[str, str]:
    return {**IDENTITY, "HOME": str(home), "PATH": "/usr/bin:/bin"}


def git(*args: str, cwd: Path, home: Path = Path("/tmp")) -> str:
    """Run ``git ARGS`` in ``cwd``; its stdout, stripped (raises when git fails)."""
    return subprocess.run(["git", *args], cwd=cwd, env=git_env(home), check=True,
                          capture_output=True, text=True).stdout.strip()
