"""Effects on a real filesystem and real processes: atomic writes, root confinement, the runner."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hostcore.commands import CommandResult, SubprocessRunner
from reconciler.effects import PathEscapeError, read_observed, write_atomic
from reconciler.plan import ObservedFile


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_creates_root_parents_content_and_mode(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        write_atomic(tmp_path / "root", "/etc/kubernetes/pki/ca.crt", b"CERT\n", 0o644)
    finally:
        os.umask(old_umask)
    target = tmp_path / "root/etc/kubernetes/pki/ca.crt"
    assert target.read_bytes() == b"CERT\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert listing(target.parent) == ["ca.crt"]  # no temp file left


def test_rewrite_replaces_and_changes_mode(tmp_path: Path) -> None:
    write_atomic(tmp_path, "/etc/motd", b"one", 0o644)
    inode = (tmp_path / "etc/motd").stat().st_ino
    write_atomic(tmp_path, "/etc/motd", b"two", 0o600)
    target = tmp_path / "etc/motd"
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.stat().st_ino != inode  # a new file renamed over, never edited in place
    assert listing(tmp_path / "etc") == ["motd"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    write_atomic(tmp_path, "/etc/motd", b"old", 0o644)
    with pytest.raises(TypeError):
        write_atomic(tmp_path, "/etc/motd", "not bytes", 0o644)  # type: ignore[arg-type]
    assert (tmp_path / "etc/motd").read_bytes() == b"old"
    assert listing(tmp_path / "etc") == ["motd"]


def test_target_that_is_a_directory_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "etc/motd").mkdir(parents=True)
    with pytest.raises(OSError):
        write_atomic(tmp_path, "/etc/motd", b"x", 0o644)
    assert listing(tmp_path / "etc") == ["motd"]


@pytest.mark.parametrize("path", ["etc/motd", "/etc/../../outside", "/../outside", "/etc//motd",
                                  "/etc/./motd", "/", "/etc/motd\x00"])
def test_unclean_paths_are_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(PathEscapeError):
        write_atomic(root, path, b"x", 0o644)
    assert listing(tmp_path) == ["root"]
    assert listing(root) == []


def test_symlinked_parent_escaping_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "etc").symlink_to(outside)
    with pytest.raises(PathEscapeError, match="outside the root"):
        write_atomic(root, "/etc/motd", b"x", 0o644)
    (root / "abs").symlink_to("/tmp")
    with pytest.raises(PathEscapeError):
        write_atomic(root, "/abs/deeper/file", b"x", 0o644)
    (root / "up").symlink_to("..")
    with pytest.raises(PathEscapeError):
        write_atomic(root, "/up/file", b"x", 0o644)
    assert listing(outside) == []
    assert read_observed(root, ["/etc/motd"]) == {"/etc/motd": None}


def test_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    (tmp_path / "usr/etc").mkdir(parents=True)
    (tmp_path / "etc").symlink_to("usr/etc")
    write_atomic(tmp_path, "/etc/motd", b"hi", 0o644)
    assert (tmp_path / "usr/etc/motd").read_bytes() == b"hi"


def test_final_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"keep")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/motd").symlink_to(secret)
    assert read_observed(root, ["/etc/motd"]) == {"/etc/motd": None}
    write_atomic(root, "/etc/motd", b"new", 0o644)
    assert not (root / "etc/motd").is_symlink()
    assert (root / "etc/motd").read_bytes() == b"new"
    assert secret.read_bytes() == b"keep"


def test_read_observed(tmp_path: Path) -> None:
    write_atomic(tmp_path, "/etc/a", b"A", 0o640)
    (tmp_path / "etc/dir").mkdir()
    os.mkfifo(tmp_path / "etc/fifo")  # must read as "not a file", never block
    observed = read_observed(tmp_path, ["/etc/a", "/etc/missing", "/etc/dir", "/etc/fifo",
                                        "relative"])
    assert observed == {"/etc/a": ObservedFile(b"A", 0o640), "/etc/missing": None,
                        "/etc/dir": None, "/etc/fifo": None, "relative": None}


# --- runner ---------------------------------------------------------------------------------------

RUNNER = SubprocessRunner()


def test_runner_success_and_failure() -> None:
    ok = RUNNER.run(["true"], {}, 5)
    assert ok == CommandResult(("true",), 0, "", ok.duration, None) and ok.ok
    bad = RUNNER.run(["false"], {}, 5)
    assert bad.returncode == 1 and bad.error is None and not bad.ok


def test_runner_passes_changed_settings_without_a_shell() -> None:
    result = RUNNER.run(["sh", "-c", 'echo "$CHANGED_SETTINGS"; echo err >&2'],
                        {"CHANGED_SETTINGS": "settings.motd settings.ntp"}, 5)
    assert result.ok
    assert result.output == "settings.motd settings.ntp\nerr\n"
    literal = RUNNER.run(["echo", "$HOME", ";", "false"], {}, 5)
    assert literal.output == "$HOME ; false\n" and literal.ok


def test_runner_keeps_the_environment() -> None:
    result = RUNNER.run(["sh", "-c", 'echo "$PATH"'], {}, 5)
    assert result.output.strip() == os.environ["PATH"]


def test_runner_timeout_kills_the_process_tree() -> None:
    result = RUNNER.run(["sh", "-c", "sleep 5; echo never"], {}, 0.2)
    assert result.error is not None and "timed out" in result.error
    assert result.duration < 4
    assert "never" not in result.output and not result.ok


def test_runner_missing_executable_is_an_error_not_an_exception() -> None:
    result = RUNNER.run(["/nonexistent/bin/tool", "x"], {}, 5)
    assert result.returncode is None and "not found" in (result.error or "")
    assert RUNNER.run([], {}, 5).error == "empty command"


def test_runner_output_is_bounded() -> None:
    result = SubprocessRunner(output_limit=100).run(
        ["sh", "-c", "yes line | head -n 10000; echo END"], {}, 5)
    assert result.ok
    assert len(result.output) <= 104 and result.output.endswith("END\n")


def test_the_kernels_realpath_agrees_with_os_path_realpath(tmp_path: Path) -> None:
    """Parents are resolved by the kernel (open O_PATH, readlink /proc/self/fd) when they
    exist; the answer is os.path.realpath's for symlinked, absent, looping and file paths."""
    from reconciler.effects import _realpath

    (tmp_path / "real/etc").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real/etc/rel").symlink_to("../etc")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "file").write_text("x")
    for path in ["link/etc", "link/etc/rel", "link/etc/rel/rel", "absent/etc", "link/absent",
                 "loop", "loop/etc", "file", "file/etc", "."]:
        assert _realpath(str(tmp_path / path)) == os.path.realpath(tmp_path / path), path
