"""The reconcile ledger: work a pass owes, work it settled, and pass receipts.

It lives in the store's SQLite file (tables ``owed`` and ``receipts``, and ``settled:<service>``
entries of ``meta``) so that a debt is recorded in the same durable file as the settings it is
owed for, but it is a job of its own: the settings store never reads it to decide a commit, and
the ledger never reads settings. Every method runs inside a transaction the store opens (the
``write`` and ``read`` context managers it is given), so a pass's snapshot reads the ledger at
the same instant as the settings, and settling a service is atomic with its receipt. (``read``
may be a plain lock around one statement: each read here is a single query.)

Public API (what ``Store`` exposes): ``owe``, ``owed``, ``settle``, ``settled``,
``save_receipt``, ``last_receipt``, ``applied_generation``, and ``read`` for a snapshot.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS owed (
    service TEXT PRIMARY KEY, generation INTEGER NOT NULL, reason TEXT NOT NULL,
    keys TEXT NOT NULL, time REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    pass INTEGER PRIMARY KEY AUTOINCREMENT, generation INTEGER NOT NULL, ok INTEGER NOT NULL,
    time REAL NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_generation ON receipts (generation, pass);
"""

SETTLED = "settled:"  # meta name prefix: the generation a service last restarted for
RECEIPTS_KEPT = 1000  # the newest receipts kept; older ones are deleted by the next save

Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]


@dataclass(frozen=True)
class Owed:
    service: str
    generation: int
    reason: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class LedgerState:
    """The ledger as a pass reads it (inside the snapshot's read transaction)."""

    applied: int  # the newest generation a pass fully applied (0 before the first)
    owed: Mapping[str, Owed]
    settled: Mapping[str, int]  # service -> the generation it last restarted (or was skipped) for


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _load(text: str) -> Any:
    return json.loads(text)


class Ledger:
    """Owed and settled work and receipts; ``write``/``read`` open the store's transactions."""

    def __init__(self, write: Transaction, read: Transaction):
        self._write = write
        self._read = read

    # ---- read inside a caller's transaction (the pass's snapshot) ---------------------------

    @staticmethod
    def read(db: sqlite3.Connection) -> LedgerState:
        applied = db.execute("SELECT max(generation) FROM receipts WHERE ok = 1").fetchone()[0]
        owed = {
            s: Owed(s, g, r, tuple(_load(k)))
            for s, g, r, k in db.execute("SELECT service, generation, reason, keys FROM owed")
        }
        settled = {
            name.removeprefix(SETTLED): _load(value)
            for name, value in db.execute(
                "SELECT name, value FROM meta WHERE name > ? AND name < ?",
                (SETTLED, SETTLED[:-1] + ";"),  # ';' follows ':'
            )
        }
        return LedgerState(applied or 0, owed, settled)

    # ---- owed restarts ----------------------------------------------------------------------

    def owe(self, services: Mapping[str, Iterable[str]], generation: int, reason: str) -> None:
        """Record, before the effect that creates the debt, restarts a pass will owe."""
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO owed (service, generation, reason, keys, time)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (name, generation, reason, _dump(sorted(keys)), time.time())
                    for name, keys in services.items()
                ],
            )

    def owed(self) -> dict[str, Owed]:
        with self._read() as db:
            rows = db.execute("SELECT service, generation, reason, keys FROM owed").fetchall()
        return {s: Owed(s, g, r, tuple(_load(k))) for s, g, r, k in rows}

    def settle(self, service: str, generation: int | None = None) -> None:
        """Clear ``service``'s owed restart; with ``generation``, record that it restarted for it
        in the same transaction (``settled``), so a pass killed before its receipt does not
        restart it again for the same settings."""
        with self._write() as db:
            _settle(db, service, generation)

    def settled(self, service: str) -> int | None:
        """The generation ``service`` last restarted (or was skipped) for, if recorded."""
        with self._read() as db:
            row = db.execute("SELECT value FROM meta WHERE name = ?",
                             (SETTLED + service,)).fetchone()
        return None if row is None else _load(row[0])

    # ---- receipts ---------------------------------------------------------------------------

    def save_receipt(
        self,
        generation: int,
        ok: bool,
        body: Mapping[str, Any],
        settled: Iterable[str] = (),
    ) -> int:
        """Save a pass's receipt; ``settled`` services (which ran nothing: no commands, or a
        sandbox) are settled for ``generation`` in the same transaction."""
        with self._write() as db:
            for service in settled:
                _settle(db, service, generation)
            cursor = db.execute(
                "INSERT INTO receipts (generation, ok, time, body) VALUES (?, ?, ?, ?)",
                (generation, int(ok), time.time(), _dump(body)),
            )
            number = cursor.lastrowid or 0
            db.execute("DELETE FROM receipts WHERE pass <= ?", (number - RECEIPTS_KEPT,))
            return number

    def last_receipt(self, ok_only: bool = False) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.execute(
                "SELECT body FROM receipts WHERE ok >= ? ORDER BY pass DESC LIMIT 1",
                (1 if ok_only else 0,),
            ).fetchone()
        return None if row is None else _load(row[0])

    def applied_generation(self) -> int:
        """The newest generation a pass fully applied (0 before the first)."""
        with self._read() as db:
            row = db.execute("SELECT max(generation) FROM receipts WHERE ok = 1").fetchone()
        return row[0] or 0


def _settle(db: sqlite3.Connection, service: str, generation: int | None) -> None:
    db.execute("DELETE FROM owed WHERE service = ?", (service,))
    if generation is not None:
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                   (SETTLED + service, _dump(generation)))
