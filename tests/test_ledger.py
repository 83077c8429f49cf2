"""The reconcile ledger (reconciler/ledger.py) on a real store file: owed work, settled work and
receipts, read in one snapshot with the settings."""

from __future__ import annotations

from pathlib import Path

from reconciler.ledger import RECEIPTS_KEPT, Ledger
from reconciler.store import Store


def test_owed_work_is_settled_with_the_receipt(tmp_path: Path) -> None:
    with Store(tmp_path / "store.db") as store:
        ledger = store.ledger
        ledger.owe({"chronyd": ["settings.ntp.time-servers"], "motd": []}, 3, "commit")
        assert set(ledger.owed()) == {"chronyd", "motd"}
        assert ledger.owed()["chronyd"].keys == ("settings.ntp.time-servers",)
        ledger.settle("chronyd", 3)  # restarted: cleared and settled for generation 3
        number = ledger.save_receipt(3, True, {"ok": True}, settled=["motd"])
        assert ledger.owed() == {}
        assert (ledger.settled("chronyd"), ledger.settled("motd")) == (3, 3)
        assert ledger.last_receipt() == {"ok": True} and number == 1
        assert ledger.applied_generation() == 3
        snapshot = store.snapshot()  # the ledger read at the same instant as the settings
        assert (snapshot.applied, dict(snapshot.settled), dict(snapshot.owed)) == (
            3, {"chronyd": 3, "motd": 3}, {})


def test_a_failed_receipt_is_not_applied_and_receipts_are_bounded(tmp_path: Path) -> None:
    with Store(tmp_path / "store.db") as store:
        ledger = store.ledger
        ledger.save_receipt(1, True, {"n": 1})
        ledger.save_receipt(2, False, {"n": 2})
        assert ledger.applied_generation() == 1
        assert ledger.last_receipt() == {"n": 2} and ledger.last_receipt(ok_only=True) == {"n": 1}
        for n in range(RECEIPTS_KEPT + 5):
            ledger.save_receipt(3, True, {"n": n})
        with store._read() as db:  # the file itself: only the newest receipts are kept
            kept = db.execute("SELECT count(*) FROM receipts").fetchone()[0]
            assert kept == RECEIPTS_KEPT
            assert Ledger.read(db).applied == 3
