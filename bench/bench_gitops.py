"""Git fleet source: a repository with 10,000 host documents and 1,000 commits of history.

For several one-line commits to this host's document: time from ``POST /actions/sync?wait=true``
until ``/etc/motd`` holds the new value (target <= 2 s), against a plain ``git fetch`` of the same
change into a clone made beforehand, measured in the same run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import Daemon, eventually  # noqa: E402
from tests.gitutil import git, git_env  # noqa: E402

HOSTS = 10_000
COMMITS = 1_000
ROUNDS = 5


def fast_import_stream() -> bytes:
    """The whole history in git fast-import format: 10,000 hosts, then 999 edits."""
    out: list[bytes] = []

    def blob_inline(path: str, text: str) -> None:
        data = text.encode()
        out.append(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")

    for n in range(COMMITS):
        message = f"commit {n}".encode()
        stamp = 1_700_000_000 + n
        out.append(f"commit refs/heads/main\ncommitter b <b@example.com> {stamp} +0000\n"
                   f"data {len(message)}\n".encode() + message + b"\n")
        if n == 0:
            blob_inline("fleet/common.toml", '[settings]\nmotd = "fleet"\n')
            for host in range(HOSTS):
                text = f'[settings]\nmotd = "host {host}"\n[settings.aws]\nregion = "us-west-2"\n'
                blob_inline(f"fleet/hosts/host-{host}.toml", text)
        else:
            host = (n * 7919) % HOSTS
            blob_inline(f"fleet/hosts/host-{host}.toml", f'[settings]\nmotd = "host {host} v{n}"\n')
        out.append(b"\n")
    return b"".join(out)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        bare = base / "fleet.git"
        git("init", "-q", "--bare", "-b", "main", str(bare), cwd=base)
        start = time.perf_counter()
        subprocess.run(["git", "fast-import", "--quiet"], cwd=bare, input=fast_import_stream(),
                       check=True, env=git_env())
        built = time.perf_counter() - start
        work = base / "work"
        git("clone", "-q", str(bare), str(work), cwd=base)
        peer = base / "peer"
        git("clone", "-q", str(bare), str(peer), cwd=base)

        user_data = base / "user-data.toml"
        user_data.write_text(f'[settings.gitops]\nurl = "file://{bare}"\nref = "main"\n'
                             f'path = "fleet"\nhost-id = "host-42"\ninterval = 3600\n')
        daemon = Daemon(base / "state", ["--user-data", str(user_data)])
        motd = daemon.root / "etc/motd"
        ours, fetches = [], []
        try:
            eventually(lambda: motd.exists() and "host 42" in motd.read_text(), timeout=120)
            for round_ in range(ROUNDS):
                text = f"one-line change {round_}"
                (work / "fleet/hosts/host-42.toml").write_text(f'[settings]\nmotd = "{text}"\n')
                git("commit", "-q", "-am", text, cwd=work)
                git("push", "-q", "origin", "main", cwd=work)
                start = time.perf_counter()
                daemon.ok("POST", "/actions/sync?wait=true")
                ours.append(time.perf_counter() - start)
                assert motd.read_text().startswith(text)
                start = time.perf_counter()
                git("fetch", "-q", "origin", "main", cwd=peer)
                fetches.append(time.perf_counter() - start)
        finally:
            daemon.stop()
    o, f = statistics.median(ours), statistics.median(fetches)
    print(f"fleet repository: {HOSTS} host documents, {COMMITS} commits (built in {built:.1f} s)")
    print(f"plain git fetch of a one-line change (baseline): {f * 1000:8.1f} ms median")
    print(f"sync until the host's file is rendered:          {o * 1000:8.1f} ms median "
          "(target <= 2000)")
    print(f"ratio sync / git fetch:                          {o / f:8.1f}")


if __name__ == "__main__":
    main()
