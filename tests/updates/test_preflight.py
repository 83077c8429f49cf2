"""Nothing flipped that cannot boot: migrations rehearsed on a copy of the store before the flip;
`signpost explain`; the inactive set re-checked for `RollbackAvailable`; `--help` everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.migrator import DATASTORE_VERSION, datastore_version
from reconciler.store import Store
from reconciler.updates_executor import UpdatesExecutor
from tests.updates.simhost import Sim, make_sim
from tests.updates.test_e2e import RENAME
from updates import gptprio, signpost, updog
from updates.gptprio import Flags
from updates.rollback import RollbackWatch

BROKEN = {"migration": 1, "name": "broken", "version": "1.1.0",
          "steps": [{"op": "explode", "key": "settings.motd"}]}


def manager_for(sim: Sim, version: str = "1.0.0") -> tuple[Store, UpdatesExecutor]:
    """The daemon's wiring for a host: its store (at `version`) and its updates executor."""
    store = Store(sim.state / "store.db")
    store.set_meta(DATASTORE_VERSION, version)
    return store, UpdatesExecutor.for_host(store, sim.root, str(sim.disk))


def test_failing_migration_refuses_the_flip_with_the_reason(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", migrations={"migrate_v1.1.0_broken.json": BROKEN})
    store, executor = manager_for(sim)
    try:
        manager = executor.manager
        assert manager.run("refresh").update_state == "Available"
        assert manager.run("prepare").update_state == "Staged"
        status = manager.run("activate")
        recent = status.most_recent_command
        assert (recent.cmd_type, recent.cmd_status) == ("activate", "Failed")
        assert "refusing to activate 1.1.0: its migrations fail on a copy of the store" in \
            recent.stderr
        assert "'op' must be one of" in recent.stderr
        assert status.update_state == "Staged"
        assert sim.flags()["B"] == Flags(0, 1, False)  # written and checked, never activated
        assert sim.flags()["next"] == "A"
        assert datastore_version(store.path) == "1.0.0"
    finally:
        store.close()


def test_good_migration_rehearsed_on_a_copy_only(tmp_path: Path, serve) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", migrations={"migrate_v1.1.0_rename-admin.json": RENAME})
    store, executor = manager_for(sim)
    try:
        for command in ("refresh", "prepare", "activate"):
            executor.manager.run(command)
        assert executor.manager.peek().update_state == "Ready"
        assert sim.flags()["next"] == "B"
        assert datastore_version(store.path) == "1.0.0"  # the store migrates at the next boot
        assert not list(store.path.parent.glob(".rehearse-*"))
    finally:
        store.close()


def test_next_two_boots() -> None:
    fresh = [Flags(1, 0, True), Flags(0, 0, False)]
    assert gptprio.next_two_boots(fresh) == (0, 0, 0)
    upgraded = [Flags(1, 0, True), Flags(2, 1, False)]
    assert gptprio.next_two_boots(upgraded) == (1, 1, 0)  # B; then B if marked, else A
    assert gptprio.next_two_boots([Flags(0, 0, False), Flags(0, 0, False)]) == (None,) * 3


def test_signpost_explain_and_rollback_watch(tmp_path: Path, serve, capsys) -> None:
    sim = make_sim(tmp_path, serve)
    watch = RollbackWatch(str(sim.disk))
    assert watch.check()["ok"] is False  # set B is empty: nothing to roll back to
    assert watch.condition()["type"] == "RollbackAvailable"
    sim.publish("1.1.0")
    sim.updog("update")
    assert sim.reboot() == "B"
    sim.signpost("mark-successful-boot")
    assert signpost.main(["--disk", str(sim.disk), "explain"]) == 0
    out = capsys.readouterr().out
    assert "Set A:  1.0.0" in out and "Set B:  1.1.0" in out and "Active:  Set B" in out
    assert watch.check()["ok"] is True
    assert "set A holds 1.0.0 and passed its verity check" in watch.condition()["reason"]
    with open(sim.disk, "r+b") as raw:  # damage set A's root image (its first data block)
        from updates.partitions import OsDisk

        with OsDisk(sim.disk, writable=False) as d:
            offset = d.entry("A", "root").offset
        raw.seek(offset + 2000)
        raw.write(b"rot")
    result = watch.check()
    assert result["ok"] is False and "verity check failed" in result["reason"]


@pytest.mark.parametrize("argv", [["update", "--help"], ["check-update", "-h"],
                                  ["install-root", "--help"], ["--help"]])
def test_updog_subcommand_help_exits_0(argv: list[str], capsys) -> None:
    assert updog.main(argv) == 0
    assert "USAGE" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["create-disk", "--help"], ["boot", "-h"],
                                  ["explain", "--help"]])
def test_signpost_subcommand_help_exits_0(argv: list[str], capsys) -> None:
    assert signpost.main(argv) == 0
    assert argv[0] in capsys.readouterr().out


def test_install_root_refuses_what_is_not_a_root(tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "root.json"
    bogus.write_text("{}")
    assert updog.main(["install-root", str(bogus), "--root", str(tmp_path / "h")]) == 1
    assert "is not a root.json signed by its own root keys" in capsys.readouterr().err
    assert not (tmp_path / "h/usr/share/updog/root.json").exists()


def test_api_status_names_the_wave_and_when_it_opens(tmp_path: Path, serve) -> None:
    from datetime import UTC, datetime

    from tests.updates.conftest import ARCH, VARIANT, run_updata, write_host_root
    from tests.updates.test_reasons import write_policy

    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0")
    policy = write_policy(tmp_path / "waves.toml", datetime.now(UTC).replace(microsecond=0))
    run_updata("set-waves", sim.manifest, "-f", VARIANT, "-a", ARCH, "-v", "1.1.0",
               "-w", policy)
    run_updata("add-targets", sim.repo, sim.manifest)
    write_host_root(sim.root, sim.trusted_root, sim.server.base_url, seed=1000)
    store, executor = manager_for(sim)
    try:
        status = executor.manager.run("refresh")
        assert status.update_state == "Idle" and status.chosen_update is None
        reason = status.to_json()["no_update_reason"]
        assert reason["kind"] == "wave" and reason["seed"] == 1000
        assert (reason["wave_start_seed"], reason["wave_end_seed"]) == (512, 1536)
        assert "for seed 1000 it opens at" in reason["message"]
    finally:
        store.close()


def test_hold_reasons_of_automatic_updates() -> None:
    from updates import status as sm

    window = {"start": "02:00", "end": "04:00"}
    assert sm.hold_reason(sm.IDLE, False, True, window).kind == "maintenance-window"
    assert sm.hold_reason(sm.AVAILABLE, True, False, window).kind == "unconfirmed-boot"
    assert sm.hold_reason(sm.AVAILABLE, True, True, window) is None


def test_apiclient_progress_bar_on_a_terminal() -> None:
    import io

    from reconciler.apiclient.commands import _ProgressBar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = _ProgressBar(stream)
    bar.show({"command": "prepare", "image": "root image", "done": 3 << 20, "total": 6 << 20})
    bar.end()
    assert "root image" in stream.getvalue() and "3/6 MiB" in stream.getvalue()
    assert " 50%" in stream.getvalue()
    piped = io.StringIO()
    _ProgressBar(piped).show({"image": "root image", "done": 1, "total": 2})
    assert piped.getvalue() == ""  # silent when not a terminal


def test_updog_reports_progress_for_the_api(tmp_path: Path, serve) -> None:
    import json

    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0", lz4=True)
    progress = tmp_path / "progress.json"
    sim.updog("update-image", "--progress-file", progress)
    last = json.loads(progress.read_text())  # the last image written, complete
    assert last["image"] == "hash image" and last["done"] == last["total"] > 0
