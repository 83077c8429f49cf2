"""Power-loss durability: trace the system calls of a commit, a pass and an image write.

A SIGKILL test (``tests/test_crash_matrix.py``) cannot show that data reached the disk: the page
cache survives a killed process, not a power cut. So the real programs run under ``strace`` and
the trace is checked against the rules that make each durability point hold after power loss:

* a replaced file (``write_atomic``, the migration cache) is written to a temporary file that is
  fsynced *before* the rename, and its directory is fsynced *after* the rename, before the next
  durability point; a directory created for it has its parent fsynced too;
* an SQLite commit (WAL, ``synchronous=FULL``) has fsynced the WAL before ``commit()`` returns
  (a pending patch before it is not synced on its own: the commit's fsync covers it), and no
  rendered file is renamed into place while a WAL write is still unsynced (the owed
  restarts are durable before the file that creates the debt);
* an image write: each GPT copy is fsynced before the other copy is touched (backup, fsync,
  primary, fsync), and image bytes (written from any descriptor, direct or not) are fsynced
  before the table that marks them valid is written.

``strace`` comes from ``scripts/install-system-deps.sh`` (``make test`` runs it); without it
these tests fail, they never skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon import REPO
from tests.updates.simhost import Sim
from updates import gpt

SYSCALLS = (
    "openat,write,pwrite64,pread64,fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat,"
    "symlink,symlinkat"
)
SYMLINKS = ("symlink", "symlinkat")
SYNCS = ("fsync", "fdatasync")
RENAMES = ("rename", "renameat", "renameat2")
WRITES = ("write", "pwrite64")


def need_strace() -> str:
    exe = shutil.which("strace")
    if exe is None:
        reason = "strace is not installed (scripts/install-system-deps.sh installs it)"
    else:
        probe = subprocess.run(
            [exe, "-f", "-o", os.devnull, "true"], capture_output=True, text=True, check=False
        )
        reason = "" if probe.returncode == 0 else f"strace cannot trace here: {probe.stderr}"
    if reason:  # make test installs strace: a missing one is a failure, never a skip
        pytest.fail(reason)
    return exe


# ---------------------------------------------------------------------------- trace parsing


@dataclass(frozen=True)
class Call:
    index: int
    pid: int
    name: str
    result: int
    fds: tuple[str, ...]  # paths of the descriptor arguments (strace -y), in order
    strings: tuple[str, ...]  # quoted string arguments, in order
    numbers: tuple[int, ...]  # bare integer arguments, in order
    returned: str  # path of a returned descriptor (openat), else ""

    @property
    def path(self) -> str:
        return self.fds[0] if self.fds else ""


_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)(?:<([^>]*)>)?")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"(?:\.\.\.)?')
_FD = re.compile(r"(?:AT_FDCWD|\d+)<([^<>]*)>")
_NUMBER = re.compile(r"(?:^|, )(-?\d+)(?=,|$)")


def parse(text: str) -> list[Call]:
    """strace -f -y output -> calls, joining ``<unfinished ...>`` with ``<... resumed>``."""
    pending: dict[str, str] = {}
    calls: list[Call] = []
    for line in text.splitlines():
        pid, _, rest = line.partition(" ")
        if rest.endswith("<unfinished ...>"):
            pending[pid] = line[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = re.match(r"\s*<\.\.\. \w+ resumed>\s?(.*)$", rest)
        if resumed:
            line = pending.pop(pid, "") + resumed[1]
        match = _LINE.match(line)
        if not match:
            continue
        args = match[3]
        strings = tuple(_STRING.findall(args))
        bare = _STRING.sub('""', args)
        calls.append(
            Call(
                index=len(calls),
                pid=int(match[1]),
                name=match[2],
                result=int(match[4]),
                fds=tuple(_FD.findall(bare)),
                strings=strings,
                numbers=tuple(int(n) for n in _NUMBER.findall(_FD.sub("FD", bare))),
                returned=match[5] or "",
            )
        )
    return calls


def strace(tmp: Path, argv: Iterable[str | Path], **kwargs) -> tuple[list[Call], str]:
    """Run ``argv`` under strace; the parsed calls and the program's stdout."""
    out = tmp / "strace.txt"
    done = subprocess.run(
        [
            need_strace(),
            "-f",
            "-y",
            "-qq",
            "-s",
            "64",
            "-e",
            f"trace={SYSCALLS}",
            "-o",
            str(out),
            *map(str, argv),
        ],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return parse(out.read_text(errors="replace")), done.stdout


def renamed(call: Call) -> tuple[str, str]:
    """(source, destination) of a rename call, absolute."""
    if call.name == "rename":
        return call.strings[0], call.strings[1]
    return (os.path.join(call.fds[0], call.strings[0]), os.path.join(call.fds[1], call.strings[1]))


def is_under(path: str, top: Path | str) -> bool:
    return path == str(top) or path.startswith(str(top).rstrip("/") + "/")


# ---------------------------------------------------------------------------- rules


def check_replacements(
    calls: list[Call], under: Path, deadline: Callable[[Call], int]
) -> list[str]:
    """Every file renamed into ``under``: temp fsynced after its last write and before the
    rename; its directory fsynced after the rename and before ``deadline(rename)``."""
    problems = []
    for call in calls:
        if call.name not in RENAMES or call.result != 0:
            continue
        source, dest = renamed(call)
        if not is_under(dest, under):
            continue
        linked = any(c.name in SYMLINKS and c.pid == call.pid
                     and os.path.basename(source) in (os.path.basename(x) for x in c.strings)
                     for c in calls[: call.index])
        directory, end = os.path.dirname(dest), deadline(call)
        if linked:  # a symlink swapped in: no data to sync, only the directory
            if not any(c.name in SYNCS and c.path == directory
                       for c in calls[call.index + 1 : end]):
                problems.append(f"{dest}: directory {directory} not fsynced after the rename")
            continue
        before = [c for c in calls[: call.index] if c.pid == call.pid and c.path == source]
        last_write = max((c.index for c in before if c.name in WRITES), default=None)
        if last_write is None:
            problems.append(f"{dest}: no write to its temporary file {source} was traced")
        elif not any(c.name in SYNCS and c.index > last_write for c in before):
            problems.append(f"{dest}: renamed from {source} before that file was fsynced")
        directory, end = os.path.dirname(dest), deadline(call)
        if not any(c.name in SYNCS and c.path == directory for c in calls[call.index + 1 : end]):
            problems.append(f"{dest}: directory {directory} not fsynced after the rename")
    return problems


def next_rename(calls: list[Call]) -> Callable[[Call], int]:
    """Deadline: the same process's next rename (the next file), else the end of the trace."""

    def deadline(call: Call) -> int:
        later = (
            c.index for c in calls[call.index + 1 :] if c.pid == call.pid and c.name in RENAMES
        )
        return next(later, len(calls))

    return deadline


def check_new_directories(calls: list[Call], under: Path) -> list[str]:
    """A directory created below ``under`` has its parent fsynced before a file is renamed
    into it (else the file can vanish with the directory entry)."""
    problems = []
    for call in calls:
        if call.name not in ("mkdir", "mkdirat") or call.result != 0:
            continue
        path = (
            call.strings[0] if call.name == "mkdir" else os.path.join(call.fds[0], call.strings[0])
        )
        if not is_under(path, under) or path == str(under):
            continue
        first_use = next(
            (
                c.index
                for c in calls[call.index + 1 :]
                if c.name in RENAMES and c.result == 0 and is_under(renamed(c)[1], path)
            ),
            len(calls),
        )
        parent = os.path.dirname(path)
        if not any(c.name in SYNCS and c.path == parent for c in calls[call.index + 1 : first_use]):
            problems.append(f"{path}: created, but {parent} not fsynced before use")
    return problems


def unsynced_writes(calls: list[Call], paths: Iterable[str], until: int) -> list[str]:
    """Files among ``paths`` with a write before ``until`` not followed by an fsync of the
    same file before ``until``."""
    dirty: dict[str, int] = {}
    for call in calls[:until]:
        if call.path in paths:
            if call.name in WRITES:
                dirty.setdefault(call.path, call.index)
            elif call.name in SYNCS:
                dirty.pop(call.path, None)
    return [f"{path}: written at call {index}, not fsynced" for path, index in dirty.items()]


# ---------------------------------------------------------------------------- store and pass

COMMITS = """
import os, sys
from reconciler.schema import Schema
from reconciler.store import Store
schema = Schema.load("aws-dev")
store = Store(sys.argv[1])
for n in range(3):
    os.write(1, b"@patch\\n")
    store.add_patch("t", {"motd": f"m{n}", "ntp": {"time-servers": [f"{n}.example"]}},
                    "api:t", schema)
    os.write(1, b"@patched\\n")
    os.write(1, b"@commit\\n")
    store.commit("t", schema)
    os.write(1, b"@returned\\n")
"""


def test_commit_returns_only_after_the_wal_is_fsynced(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    calls, out = strace(tmp_path, [sys.executable, "-c", COMMITS, db], cwd=REPO)
    assert out.count("@returned") == 3
    wal = f"{db}-wal"
    markers = [
        c
        for c in calls
        if c.name == "write" and c.strings[:1] in (("@commit\\n",), ("@returned\\n",))
    ]
    assert [m.strings[0] for m in markers] == ["@commit\\n", "@returned\\n"] * 3
    for start, end in zip(markers[::2], markers[1::2], strict=True):
        inside = calls[start.index + 1 : end.index]
        writes = [c for c in inside if c.path == wal and c.name in WRITES]
        assert writes, "commit wrote nothing to the WAL"
        # the commit's fsync covers the pending patch written before it, unsynced (below)
        assert unsynced_writes(calls[: end.index], [wal], end.index) == [], (
            "commit() returned before its WAL frames were fsynced"
        )
    patches = [c for c in calls if c.name == "write"
               and c.strings[:1] in (("@patch\\n",), ("@patched\\n",))]
    assert [m.strings[0] for m in patches] == ["@patch\\n", "@patched\\n"] * 3
    for start, end in zip(patches[::2], patches[1::2], strict=True):
        inside = calls[start.index + 1 : end.index]
        assert [c for c in inside if c.path == wal and c.name in WRITES], "no patch written"
        # a pending patch does not wait for the disk (Store._write, durable=False)
        assert not [c for c in inside if c.name in SYNCS and c.path == wal], (
            "a pending patch waited for the disk")
    assert check_new_directories(calls, tmp_path) == []
    # the WAL file's own directory entry is made durable when it is created
    created = next(c.index for c in calls if c.name == "openat" and c.returned == wal)
    assert any(c.name in SYNCS and c.path == str(tmp_path) for c in calls[created:]), (
        "the WAL was created but its directory never fsynced"
    )


def test_serve_once_commit_and_file_writes_are_durable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    user_data = REPO / "examples/user-data/aws-dev.toml"
    calls, _ = strace(
        tmp_path,
        [
            sys.executable,
            "-m",
            "reconciler.cli",
            "serve",
            "--state-dir",
            state,
            "--variant",
            "aws-dev",
            "--user-data",
            user_data,
            "--once",
        ],
        cwd=REPO,
    )
    root = state / "root"
    files = [
        c for c in calls if c.name in RENAMES and c.result == 0 and is_under(renamed(c)[1], root)
    ]
    assert len(files) >= 3, "too few rendered files to say anything"
    assert f"{root}/etc/motd" in {renamed(c)[1] for c in files}

    assert check_replacements(calls, root, next_rename(calls)) == []
    assert check_new_directories(calls, root) == []

    db, wal = str(state / "store.db"), str(state / "store.db-wal")
    for call in files:  # the boot commit and the owed restarts are durable before any effect
        assert unsynced_writes(calls, [db, wal], call.index) == [], renamed(call)[1]
    assert unsynced_writes(calls, [db, wal], len(calls)) == [], "the receipt is not durable"


# ---------------------------------------------------------------------------- image write


def gpt_offsets(disk: Path) -> tuple[set[int], set[int]]:
    """(primary, backup) byte offsets of the GPT header and entry array of ``disk``."""
    last_lba = disk.stat().st_size // gpt.SECTOR - 1
    primary = {gpt.SECTOR, 2 * gpt.SECTOR}
    backup = {last_lba * gpt.SECTOR, (last_lba - gpt.ENTRIES_SECTORS) * gpt.SECTOR}
    return primary, backup


def check_disk_writes(calls: list[Call], disk: Path) -> tuple[list[str], dict[str, int]]:
    """The GPT copies are written in turn, each fsynced before the other is touched; image
    bytes are fsynced before the next table is written. Returns problems, counts."""
    primary, backup = gpt_offsets(disk)
    path = str(disk)
    problems: list[str] = []
    dirty: set[str] = set()  # kinds of writes not fsynced yet: primary, backup, image
    counts = {"primary": 0, "backup": 0, "image": 0}
    for call in calls:
        if call.path != path:
            continue
        if call.name in SYNCS:
            dirty.clear()  # any descriptor's fsync flushes the whole file
        elif call.name == "pwrite64":
            offset = call.numbers[-1]
            kind = "primary" if offset in primary else "backup" if offset in backup else "image"
            counts[kind] += 1
            other = {"primary": "backup", "backup": "primary"}.get(kind)
            if other and other in dirty:
                problems.append(
                    f"call {call.index}: {kind} GPT copy written while the "
                    f"{other} copy is not fsynced"
                )
            if kind != "image" and "image" in dirty:
                problems.append(
                    f"call {call.index}: table written while image bytes are not fsynced"
                )
            dirty.add(kind)
    if dirty:
        problems.append(f"the process ended with unsynced {sorted(dirty)} writes")
    return problems, counts


@pytest.fixture
def sim(sim: Sim) -> Sim:
    """The shared simulator (tests/conftest.py); every test of it traces with strace."""
    need_strace()
    return sim


def trace_update_image(sim: Sim) -> list[Call]:
    calls, _ = strace(
        sim.tmp,
        [
            sys.executable,
            "-m",
            "updates.updog",
            "update-image",
            "--root",
            sim.root,
            "--disk",
            sim.disk,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return calls


def test_image_write_is_durable_before_the_set_is_marked_valid(sim: Sim) -> None:
    calls = trace_update_image(sim)
    problems, counts = check_disk_writes(calls, sim.disk)
    assert problems == []
    assert counts["image"] >= 3, counts  # root, boot, hash
    assert counts["primary"] >= 4 and counts["backup"] >= 4, counts  # clear, then mark valid

    # the migrator's inputs are durable before any partition is touched
    first_disk_write = next(
        c.index for c in calls if c.name == "pwrite64" and c.path == str(sim.disk)
    )
    cache = sim.root / "var/lib/updog"
    for part in ("migrations", "migration-metadata"):
        replaced = [
            c
            for c in calls
            if c.name in RENAMES and c.result == 0 and is_under(renamed(c)[1], cache / part)
        ]
        assert replaced, f"nothing cached in {part}"
        assert check_replacements(calls, cache / part, lambda _c: first_disk_write) == []


def test_tuf_metadata_cache_is_durable(sim: Sim) -> None:
    calls = trace_update_image(sim)
    metadata = sim.root / "var/lib/updog/metadata"
    assert [c for c in calls if c.name in RENAMES and is_under(renamed(c)[1], metadata)]
    assert check_replacements(calls, metadata, next_rename(calls)) == []
