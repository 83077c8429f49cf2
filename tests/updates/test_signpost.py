"""signpost: the gptprio rules, every operation's preconditions, the CLI, the boot simulator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.updates.test_gpt import assert_sgdisk_agrees
from updates import gptprio, signpost
from updates.gptprio import Flags, Sets
from updates.partitions import OsDisk, create_os_disk

flags = st.builds(Flags, st.integers(0, 15), st.integers(0, 15), st.booleans())


def run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = signpost.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    create_os_disk(path, 4 << 20)
    return path


# ---------------------------------------------------------------- pure rules


def test_next_prefers_a_on_equal_priority() -> None:
    assert gptprio.signpost_next(Flags(1, 0, True), Flags(1, 0, True)) == "A"
    assert gptprio.signpost_next(Flags(1, 0, True), Flags(2, 1, False)) == "B"
    assert gptprio.signpost_next(Flags(0, 0, False), Flags(0, 1, False)) is None


def test_grub_uses_a_try_and_skips_priority_zero() -> None:
    chosen, after = gptprio.grub_select([Flags(1, 0, True), Flags(2, 1, False)])
    assert chosen == 1 and after[1] == Flags(2, 0, False)
    chosen, after = gptprio.grub_select([Flags(1, 0, True), Flags(2, 0, False)])
    assert chosen == 0 and after[0] == Flags(1, 0, True)  # auto rollback
    assert gptprio.grub_select([Flags(0, 1, True), Flags(0, 3, False)])[0] is None


@given(flags, flags)
def test_grub_picks_a_bootable_set_or_none(a: Flags, b: Flags) -> None:
    chosen, after = gptprio.grub_select([a, b])
    candidates = [i for i, f in enumerate((a, b)) if f.priority and (f.tries_left or f.successful)]
    if not candidates:
        assert chosen is None and after == [a, b]
    else:
        assert chosen in candidates
        assert (a, b)[chosen].priority == max((a, b)[i].priority for i in candidates)
        assert after[chosen].tries_left == max(0, (a, b)[chosen].tries_left - 1)


def test_lifecycle_table() -> None:
    s = Sets(Flags(1, 0, True), Flags(0, 0, False), "A")
    s = gptprio.mark_inactive_valid(gptprio.clear_inactive(s))
    assert (s.a, s.b) == (Flags(1, 0, True), Flags(0, 1, False))
    s = gptprio.upgrade_to_inactive(s)
    assert (s.a, s.b) == (Flags(1, 0, True), Flags(2, 1, False))
    chosen, (a, b) = gptprio.grub_select([s.a, s.b])
    assert chosen == 1 and b == Flags(2, 0, False)
    booted = Sets(a, b, "B")
    assert gptprio.mark_successful_boot(booted).b == Flags(2, 0, True)
    chosen, _ = gptprio.grub_select([a, b])  # never marked: next boot falls back to A
    assert chosen == 0


def test_preconditions() -> None:
    s = Sets(Flags(1, 0, True), Flags(0, 0, False), "A")
    with pytest.raises(gptprio.InactiveNotValid):
        gptprio.upgrade_to_inactive(s)
    with pytest.raises(gptprio.InactiveAlreadyMarked):
        gptprio.upgrade_to_inactive(Sets(s.a, Flags(2, 1, False), "A"))
    with pytest.raises(gptprio.InactiveAlreadyMarked):
        gptprio.upgrade_to_inactive(Sets(s.a, Flags(0, 1, True), "A"))
    with pytest.raises(gptprio.InactiveInvalidRollback, match="priority=0 tries_left=0"):
        gptprio.rollback_to_inactive(s)
    s = gptprio.cancel_upgrade(Sets(Flags(1, 0, True), Flags(2, 1, False), "A"))
    assert (s.a, s.b) == (Flags(2, 0, True), Flags(0, 1, False))  # tries kept: re-upgradable
    assert gptprio.upgrade_to_inactive(s).b == Flags(2, 1, False)
    s = gptprio.rollback_to_inactive(Sets(Flags(2, 0, True), Flags(1, 0, True), "A"))
    assert (s.a, s.b) == (Flags(1, 0, True), Flags(2, 0, True))


# ---------------------------------------------------------------- CLI on a disk image


def test_status_output(capsys, disk: Path) -> None:
    code, out, _ = run(capsys, "--disk", disk, "status")
    assert code == 0
    assert out.splitlines() == [
        f"OS disk: {disk}",
        f"Set A:   boot={disk}2 root={disk}3 hash={disk}4 priority=1 tries_left=0 "
        "successful=true",
        f"Set B:   boot={disk}6 root={disk}7 hash={disk}8 priority=0 tries_left=0 "
        "successful=false",
        "Active:  Set A",
        "Next:    Set A",
    ]


def test_usage_errors_exit_1(capsys, disk: Path) -> None:
    for argv in ([], ["frobnicate"], ["status", "extra"], ["--bogus", "status"],
                 ["boot"], ["--disk", disk, "status", "--size", "5"]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "" and "USAGE" in err, argv


def test_every_operation_and_sgdisk_agrees(capsys, disk: Path) -> None:
    def state() -> tuple[Flags, Flags]:
        with OsDisk(disk, writable=False) as d:
            return d.flags("A"), d.flags("B")

    code, _, err = run(capsys, "--disk", disk, "upgrade-to-inactive")
    assert code == 1 and "not been marked valid" in err
    code, _, err = run(capsys, "--disk", disk, "rollback-to-inactive")
    assert code == 1 and "not valid to roll back" in err
    steps = [
        ("mark-inactive-valid", (Flags(1, 0, True), Flags(0, 1, False))),
        ("upgrade-to-inactive", (Flags(1, 0, True), Flags(2, 1, False))),
        ("cancel-upgrade", (Flags(2, 0, True), Flags(0, 1, False))),
        ("upgrade-to-inactive", (Flags(1, 0, True), Flags(2, 1, False))),
        ("clear-inactive", (Flags(1, 0, True), Flags(0, 0, False))),
        ("mark-successful-boot", (Flags(1, 0, True), Flags(0, 0, False))),
        ("rewrite-table", (Flags(1, 0, True), Flags(0, 0, False))),
    ]
    for verb, expected in steps:
        assert run(capsys, "--disk", disk, verb)[0] == 0, verb
        assert state() == expected, verb
        assert_sgdisk_agrees(disk)
    assert run(capsys, "--disk", disk, "has-boot-ever-succeeded")[1] == "true\n"


def test_boot_simulator_lifecycle_with_auto_rollback(capsys, disk: Path) -> None:
    assert run(capsys, "--disk", disk, "boot")[1] == "Set A\n"
    run(capsys, "--disk", disk, "mark-inactive-valid")
    run(capsys, "--disk", disk, "upgrade-to-inactive")
    assert run(capsys, "--disk", disk, "boot")[1] == "Set B\n"
    assert_sgdisk_agrees(disk)
    assert run(capsys, "--disk", disk, "status")[1].splitlines()[3:] == [
        "Active:  Set B", "Next:    Set A"]
    # never marked successful: the next boot falls back to A
    assert run(capsys, "--disk", disk, "boot")[1] == "Set A\n"
    # manual rollback needs a bootable inactive set
    code, _, err = run(capsys, "--disk", disk, "rollback-to-inactive")
    assert code == 1 and "not valid to roll back" in err
    assert run(capsys, "--disk", disk, "version")[1] == "1.0.0\n"


def test_marked_set_stays_and_rollback_to_inactive(capsys, disk: Path) -> None:
    for verb in ("mark-inactive-valid", "upgrade-to-inactive", "boot", "mark-successful-boot"):
        run(capsys, "--disk", disk, verb)
    assert run(capsys, "--disk", disk, "boot")[1] == "Set B\n"
    assert run(capsys, "--disk", disk, "rollback-to-inactive")[0] == 0
    assert run(capsys, "--disk", disk, "boot")[1] == "Set A\n"
    assert_sgdisk_agrees(disk)


def test_nothing_bootable(capsys, disk: Path) -> None:
    with OsDisk(disk) as d:
        d.write_state(Sets(Flags(0, 0, True), Flags(0, 0, False), "A"))
    code, out, err = run(capsys, "--disk", disk, "boot")
    assert (code, out) == (1, "None\n") and "nothing is bootable" in err


def test_a_block_device_is_read_but_never_booted_by_the_simulator(
        capsys, disk: Path, loop_device: Callable[[Path], str]) -> None:
    device = loop_device(disk)
    code, out, _ = run(capsys, "--disk", device, "status")
    assert code == 0 and f"Set A:   boot={device}p2 " in out and "Active:  Set A" in out
    before = disk.read_bytes()
    code, out, err = run(capsys, "--disk", device, "boot")
    assert code == 1 and "is a block device" in err and "disk image file" in err
    assert disk.read_bytes() == before  # the BIOS-BOOT partition (a bootloader's) untouched
    code, out, err = run(capsys, "--disk", device, "create-disk")
    assert code == 1 and "is a block device" in err
    assert disk.read_bytes() == before


def test_create_disk_cli(tmp_path: Path) -> None:
    path = tmp_path / "new.img"
    exe = Path(sys.executable).with_name("signpost")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "updates.signpost"]
    subprocess.run([*cmd, "--disk", str(path), "create-disk", "--size", str(6 << 20),
                    "--os-version", "2.3.4"], check=True)
    assert path.stat().st_size == 6 << 20
    done = subprocess.run([*cmd, "--disk", str(path), "version"], capture_output=True,
                          text=True, check=True)
    assert done.stdout == "2.3.4\n"
    assert_sgdisk_agrees(path)
