"""The README's own commands work as it says (issue 18 item 4).

The quick start's ``apiclient`` block is read from README.md and each line is run, in order,
against a daemon started as ``make run`` starts it (variant aws-dev, the example user data): each
exits 0 and does what its comment says, except ``sync``, which has no git source to fetch here
and says so with exit 1, as the README promises for a failed sync. A line added to the block
is run too; a command the test does not know fails it, so the README cannot drift from the
program unnoticed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.daemon import REPO, Daemon, eventually

README = (REPO / "README.md").read_text()


def quick_start() -> list[list[str]]:
    """The argument lists of the README's first block of ``.venv/bin/apiclient`` lines."""
    for block in re.findall(r"```sh\n(.*?)```", README, re.DOTALL):
        lines = [shlex.split(line, comments=True) for line in block.splitlines()]
        commands = [words[1:] for words in lines if words and words[0] == ".venv/bin/apiclient"]
        if len(commands) > 3:
            return commands
    raise AssertionError("README.md has no quick-start block of apiclient commands")


@pytest.fixture
def daemon(tmp_path):
    running = Daemon(tmp_path / "state", ["--variant", "aws-dev", "--user-data",
                                          str(REPO / "examples/user-data/aws-dev.toml")])
    try:
        eventually(lambda: (running.ok("GET", "/status").get("last_receipt") or {}).get("ok"))
        yield running
    finally:
        running.stop()


def test_the_readme_quick_start_commands_do_what_their_comments_say(daemon, tmp_path):
    motd = tmp_path / "state" / "root" / "etc" / "motd"
    assert motd.read_text().strip() == "hello from the fleet"  # as the README says make run does
    ran = []
    for args in quick_start():
        if args[:2] == ["events", "--follow"]:  # runs until stopped: its first event, then stop
            follow = subprocess.Popen(
                [sys.executable, "-m", "reconciler.apiclient", *args], cwd=REPO,
                env={**os.environ, "APICLIENT_SOCKET": str(daemon.socket)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                first = follow.stdout.readline()
            finally:
                follow.kill()
                follow.wait()
            assert first.strip(), follow.stderr.read()
            ran.append("events --follow")
            continue
        result = daemon.apiclient(*args)
        said = result.stdout + result.stderr
        ran.append(" ".join(args[:2]))
        if args[0] == "sync":
            assert result.returncode == 1 and "git" in said, said
            continue
        assert result.returncode == 0, f"apiclient {shlex.join(args)}: {said}"
        check(args, result.stdout, daemon, motd)
    assert len(ran) >= 10, ran


def check(args: list[str], out: str, daemon: Daemon, motd) -> None:
    """What each quick-start line's comment promises (the lines run in the README's order)."""
    live = daemon.ok("GET", "/settings")
    if args == ["get", "settings.motd"]:
        assert json.loads(out) == {"settings": {"motd": "hello from the fleet"}}
    elif args[:4] == ["-m", "PATCH", "-u", "/settings"]:
        assert live["motd"] == "hello from the fleet"  # staged, not committed yet
    elif args[:4] == ["-m", "POST", "-u", "/tx/commit_and_apply"]:
        assert json.loads(out) == ["settings.motd"]
        eventually(lambda: motd.read_text().strip() == "my own value!")
    elif args[0] == "set" and "--dry-run" in args:
        assert "maybe" in out and live["motd"] == "my own value!"  # the plan; nothing changed
    elif args[0] == "set" and "motd=null" in args:  # the default comes back
        assert live["motd"] == "Welcome to the reconciler!"
        assert motd.read_text().strip() == "Welcome to the reconciler!"
    elif args[0] == "set":
        assert live["motd"] == "hello" and live["ntp"]["time-servers"] == ["0.pool.ntp.org"]
        assert motd.read_text().strip() == "hello" and out.startswith("Changed (2)")
    elif args == ["status"]:
        assert out.startswith("State:       Ready (variant aws-dev)"), out
    elif args == ["history"]:
        assert "root (uid 0)" in out and '"my own value!" -> "hello"' in out, out
    elif args == ["explain", "motd"]:
        assert 'settings.motd = "hello"' in out, out
    elif args == ["rollback"]:
        assert out.startswith("Rolled back to generation 2") and live["motd"] == "my own value!"
    else:
        raise AssertionError(f"README.md runs apiclient {shlex.join(args)}: teach this test "
                             "what its comment promises")
