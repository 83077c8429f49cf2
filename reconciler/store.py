"""The settings store: one SQLite file (WAL, synchronous=FULL), opened only by the daemon.

It holds live settings with their provenance, named pending transactions (ordered merge patches),
the generation history with exact per-key changes and metadata; the reconcile ledger (restarts
owed by an interrupted pass, settled work, pass receipts) shares the file and its transactions
but is its own module, ``reconciler.ledger``, reached through ``Store.ledger`` and the
delegating methods below. Every commit is one SQLite transaction: a crash leaves the old or the
new generation, never a mix. What a commit *means* is decided by ``reconciler.transaction``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostcore import faults
from hostcore.keys import flatten, is_under, join_key, split_key, unflatten
from reconciler.ledger import LEDGER_SCHEMA, Ledger, Owed
from reconciler.transaction import (
    DEFAULT_SOURCE,
    ROOT,
    Change,
    CommitPlan,
    Patch,
    Replay,
    SchemaLike,
    plan_commit,
    plan_replay,
    replay,
    rollback_plan,
    touched_sections,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, source TEXT NOT NULL,
    generation INTEGER NOT NULL, time REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tx TEXT NOT NULL, source TEXT NOT NULL,
    body TEXT NOT NULL, time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_tx ON pending (tx, seq);
CREATE TABLE IF NOT EXISTS generations (
    number INTEGER PRIMARY KEY, time REAL NOT NULL, tx TEXT NOT NULL, source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    generation INTEGER NOT NULL, key TEXT NOT NULL, old TEXT, new TEXT, source TEXT,
    PRIMARY KEY (generation, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS changes_key ON changes (key, generation);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS actors (
    generation INTEGER PRIMARY KEY, uid INTEGER NOT NULL, user TEXT, pid INTEGER
);
"""


class NothingToCommit(Exception):
    """The transaction has no pending change (the API answers 422)."""

    def __init__(self, tx: str):
        super().__init__(f"Tried to commit with no pending changes in transaction {tx!r}")
        self.tx = tx


class UnknownGeneration(LookupError):
    pass


class PendingLimit(Exception):
    """Pending patches would pass their bounds (the API answers 429); nothing was added."""


class RollbackRefused(ValueError):
    """A rollback that would take the host below its first boot (the API answers 400)."""


@dataclass(frozen=True)
class Provenance:
    key: str
    value: Any
    source: str
    generation: int
    time: float


@dataclass(frozen=True)
class Actor:
    """Who made a generation through the API: the caller's uid (SO_PEERCRED), its user name as
    the daemon's passwd database had it then (None: no entry), its pid."""

    uid: int
    user: str | None = None
    pid: int | None = None


@dataclass(frozen=True)
class Generation:
    number: int
    time: float
    tx: str
    source: str
    changes: tuple[Change, ...]
    actor: Actor | None = None  # None: not made through the API (git, user data, files...)


@dataclass(frozen=True)
class CommitResult:
    generation: int  # the live generation after the commit (unchanged when no value changed)
    changed: tuple[str, ...]  # keys whose values actually changed


@dataclass(frozen=True)
class Snapshot:
    """Everything a reconcile pass (or its dry run) reads from the store, read at one instant.

    Read in one SQLite read transaction (``Store.snapshot``), so a commit landing while a pass
    runs is either wholly in it or wholly out of it: the receipt names the generation whose
    settings were applied, and the next pass sees that commit's keys as changed.

    * ``live``: flat live settings of ``generation``; ``applied``: the newest generation a pass
      fully applied; ``changed``: keys changed by the generations after ``applied``;
    * ``owed``: restarts owed by an interrupted pass; ``settled``: per service, the generation
      it last restarted (or was skipped) for, and ``changed_after``: for each such generation
      older than ``generation``, the keys changed since;
    * ``preview``: with ``tx``, what committing that transaction would do (the dry run).
    """

    generation: int
    applied: int
    live: Mapping[str, Any]
    changed: frozenset[str]
    owed: Mapping[str, Owed]
    settled: Mapping[str, int]
    changed_after: Mapping[int, frozenset[str]]
    preview: CommitPlan | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Nested live settings, the inside of ``settings``. ``live`` and ``settings`` are shared
    with the other snapshots of the same generation (``LiveSettings``): readers never change
    them."""


@dataclass(frozen=True)
class LiveSettings:
    """The live settings at ``generation``, flat (``{dotted key: value}``) and nested.

    Why it is kept: every value a commit changes is in its generation's ``changes`` rows, so
    the next snapshot reads and decodes only the keys changed since, and builds again only the
    top-level sections they lie in (a pass after a one-key change: one row, one section),
    where reading every live row and nesting them all took most of a snapshot."""

    generation: int
    flat: Mapping[str, Any]
    nested: Mapping[str, Any]

    @classmethod
    def of(cls, generation: int, flat: dict[str, Any]) -> LiveSettings:
        return cls(generation, flat, unflatten(flat, strip=1))

    def advanced(self, generation: int, values: Mapping[str, Any],
                 gone: Iterable[str]) -> LiveSettings:
        """At ``generation``, where the keys of ``values`` hold those and ``gone`` are absent;
        the others are shared with this one."""
        gone = set(gone)
        flat = {k: v for k, v in self.flat.items() if k not in gone}
        flat.update(values)
        nested = dict(self.nested)
        sections: dict[str, str] = {}  # section name -> its key (``settings.<name>``)
        for key in (*values, *gone):
            segments = split_key(key)
            if len(segments) < 2 or join_key(segments) != key:  # not a canonical key below
                return LiveSettings.of(generation, flat)  # ``settings``: nest it all again
            sections[segments[1]] = join_key(segments[:2])
        for section, prefix in sections.items():
            below = prefix + "."
            inside = {k: v for k, v in flat.items() if k.startswith(below)}
            if prefix in flat:
                nested[section] = flat[prefix]
            elif inside:
                nested[section] = unflatten(inside, strip=2)
            else:
                nested.pop(section, None)
        return LiveSettings(generation, flat, nested)


_ABSENT = object()
GENERATOR_SOURCE = "generator"
# Pending patches (of all transactions) until the next commit or reboot: any socket user could
# otherwise fill the state disk with them.
MAX_PENDING_PATCHES = 2000
MAX_PENDING_BYTES = 16 * 1024 * 1024
ADD_PATCH_ATTEMPTS = 3
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's lock (sqlite3's default)
BUSY_PAUSE_MAX = 0.05  # the longest pause between two tries for another process's lock


def sqlite_code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code for ``error`` (``sqlite3.SQLITE_BUSY``, ...), read from
    the error itself rather than its message; None when SQLite gave none."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # an extended code keeps it in its low byte


def store_busy(error: sqlite3.Error) -> bool:
    """``error`` says another connection holds the lock asked for: worth a retry."""
    return sqlite_code(error) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _subtree_bounds(prefix: str) -> tuple[str, str]:
    """Range of keys strictly below ``prefix``: '.' (0x2E) is followed by '/' (0x2F)."""
    return prefix + ".", prefix + "/"


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # No busy wait in SQLite: ``_write`` waits for another process's lock itself, with
        # ``_lock`` let go (WAL readers never wait, so nothing else here would).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=0)
        self._lock = threading.RLock()
        self._waits = True  # False while ``unwaited`` holds the store: a write fails at once
        self._plan_db: sqlite3.Connection | None = None  # opened by the first PATCH planned
        self._plan_lock = threading.RLock()  # reentrant: ``unwaited`` holds it around a call
        # tx -> (what it was replayed at, its pending patches replayed): the next PATCH of a
        # transaction builds on it instead of replaying every earlier patch again
        self._replays: dict[str, tuple[Any, Replay]] = {}
        self.last_generation = 0  # the newest generation this process saw (log context only)
        self._writes = 0  # write transactions committed by this process (``version``)
        self._last_live: LiveSettings | None = None  # what the last snapshot read (``_live_at``)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self.ledger = Ledger(self._write, self._locked)
        with self._write():
            for statement in (_SCHEMA + LEDGER_SCHEMA).split(";"):
                if statement.strip():
                    self._db.execute(statement)
        self.last_generation = self.generation()

    @contextmanager
    def unwaited(self) -> Iterator[bool]:
        """For a caller that must not wait, the event loop: True, holding the store, when no
        other thread is in a store call; a write that another process's lock would hold up
        fails at once meanwhile with ``sqlite3.OperationalError`` ('database is locked',
        nothing written) for the caller to retry where it may wait. False, holding nothing,
        when the store is in use."""
        if not self._lock.acquire(blocking=False):
            yield False
            return
        try:
            if not self._plan_lock.acquire(blocking=False):
                yield False
                return
            try:
                self._waits = False
                try:
                    yield True
                finally:
                    self._waits = True
            finally:
                self._plan_lock.release()
        finally:
            self._lock.release()

    def trace(self, callback: Callable[[str], object] | None) -> None:
        """Call ``callback`` with every SQL statement run (None stops): tests count round trips."""
        with self._lock:
            self._db.set_trace_callback(callback)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._plan_lock:
            if self._plan_db is not None:
                self._plan_db.close()
                self._plan_db = None

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent read on a connection of its own (WAL: readers never wait for the
        writer), for the long planning of a PATCH: the main connection and its lock stay free
        for everyone else meanwhile."""
        with self._plan_lock:
            if self._plan_db is None:
                self._plan_db = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
                self._plan_db.execute("PRAGMA query_only=ON")
            db = self._plan_db
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so readers never see half of it.

        While another process holds the store's write lock, this waits for it (up to
        ``BUSY_TIMEOUT_MS``, then 'database is locked') between tries with ``_lock`` let go:
        SQLite's own busy wait would hold it all along, and every read of this process,
        the event loop's included, would wait behind a lock that is not ours.

        Not ``durable``: the commit does not wait for the disk (WAL, ``synchronous=NORMAL``).
        It is still all or nothing, survives a crash of this process (the WAL is in the page
        cache), and becomes durable with the next durable write (its fsync of the WAL covers
        every frame before it); a power cut before that loses it whole. For a pending patch
        only: committed settings, owed restarts and receipts are always durable."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.001
        while True:
            with self._lock:
                if not durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
                try:
                    try:
                        self._db.execute("BEGIN IMMEDIATE")
                    except sqlite3.OperationalError as error:
                        if not (self._waits and store_busy(error)
                                and time.monotonic() < deadline):
                            raise
                    else:
                        try:
                            yield self._db
                        except BaseException:
                            self._db.execute("ROLLBACK")
                            raise
                        self._db.execute("COMMIT")
                        self._writes += 1
                        return
                finally:
                    if not durable:
                        self._db.execute("PRAGMA synchronous=FULL")
            time.sleep(pause)
            pause = min(pause * 2, BUSY_PAUSE_MAX)

    def version(self) -> tuple[int, int]:
        """Changes whenever what the store holds may have: a write transaction of this
        process, or one of another connection (SQLite's ``data_version``). What was read at
        one version holds as long as it is the version."""
        with self._lock:
            row = self._db.execute("PRAGMA data_version").fetchone()
            return self._writes, row[0]

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The main connection for one statement (no transaction of its own)."""
        with self._lock:
            yield self._db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several queries."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # ---- live settings -------------------------------------------------------------------

    def _live_under(self, db: sqlite3.Connection, prefix: str) -> list[tuple[str, str, str]]:
        low, high = _subtree_bounds(prefix)
        return db.execute(
            "SELECT key, value, source FROM settings WHERE key = ? OR (key > ? AND key < ?)",
            (prefix, low, high),
        ).fetchall()

    def live(self, prefix: str = ROOT) -> dict[str, Any]:
        """Flat ``{key: value}`` of live keys at or under ``prefix`` (segment-wise)."""
        with self._lock:
            return {k: _load(v) for k, v, _ in self._live_under(self._db, prefix)}

    def live_changed_after(self, generation: int, prefixes: Iterable[str]) -> dict[str, Any]:
        """Flat live keys at or under any of ``prefixes`` that a generation after
        ``generation`` changed: what a reader who knew the live settings of ``generation``
        has to learn (the scrubber, after each commit), in one query."""
        prefixes = tuple(prefixes)
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value FROM settings WHERE key IN "
                "(SELECT key FROM changes WHERE generation > ?)",
                (generation,),
            ).fetchall()
        return {k: _load(v) for k, v in rows if any(is_under(k, p) for p in prefixes)}

    def live_under(self, prefixes: Iterable[str]) -> dict[str, Any]:
        """Flat live keys at or under any of ``prefixes``, in one read transaction."""
        with self._read() as db:
            return {
                k: _load(v) for prefix in prefixes for k, v, _ in self._live_under(db, prefix)
            }

    def get(self, keys: Iterable[str]) -> dict[str, Any]:
        """Live values of exactly these keys (absent keys are omitted)."""
        with self._lock:
            found = {}
            for key in keys:
                row = self._db.execute(
                    "SELECT value FROM settings WHERE key = ?", (key,)
                ).fetchone()
                if row:
                    found[key] = _load(row[0])
            return found

    def live_document(self) -> dict[str, Any]:
        """Nested live settings, the inside of ``settings``."""
        return unflatten(self.live(), strip=1)

    def generation(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT max(number) FROM generations").fetchone()
            self.last_generation = row[0] or 0
            return self.last_generation

    def snapshot(self, tx: str | None = None, schema: SchemaLike | None = None) -> Snapshot:
        """What a pass needs, in one read transaction (see ``Snapshot``); with ``tx`` and
        ``schema``, also the preview of committing ``tx`` (validated, nothing changed)."""
        with self._read() as db:
            generation = db.execute("SELECT max(number) FROM generations").fetchone()[0] or 0
            ledger = Ledger.read(db)
            applied, owed, settled = ledger.applied, ledger.owed, ledger.settled
            live = self._live_at(db, generation)
            changed = frozenset(
                r[0] for r in db.execute(
                    "SELECT DISTINCT key FROM changes WHERE generation > ?", (applied,)
                )
            )
            changed_after: dict[int, frozenset[str]] = {}
            for since in sorted(set(settled.values())):
                if since == applied:
                    changed_after[since] = changed
                elif since < generation:
                    changed_after[since] = frozenset(
                        r[0] for r in db.execute(
                            "SELECT DISTINCT key FROM changes WHERE generation > ?", (since,)
                        )
                    )
            preview = None
            if tx is not None and schema is not None:
                preview = self._plan(db, tx, self._pending(db, tx), schema)
        self.last_generation = generation
        return Snapshot(generation, applied, live.flat, changed, owed, settled, changed_after,
                        preview, live.nested)

    def _live_at(self, db: sqlite3.Connection, generation: int) -> LiveSettings:
        """The live settings of ``generation`` (inside the caller's read transaction): the
        last ones read, advanced by the keys changed in the generations since."""
        last = self._last_live
        if last is not None and last.generation == generation:
            return last
        if last is None or last.generation > generation:
            live = LiveSettings.of(
                generation, {k: _load(v) for k, v, _ in self._live_under(db, ROOT)})
        else:
            rows = db.execute(  # each key changed since, and its value now (None: deleted)
                "SELECT key, (SELECT value FROM settings WHERE settings.key = changed.key)"
                " FROM (SELECT DISTINCT key FROM changes WHERE generation > ?) AS changed",
                (last.generation,),
            ).fetchall()
            live = last.advanced(generation, {k: _load(v) for k, v in rows if v is not None},
                                 [k for k, v in rows if v is None])
        self._last_live = live  # one reference swapped: a concurrent snapshot sees old or new
        return live

    def provenance(self, prefix: str) -> list[Provenance]:
        """Who set each live key at or under ``prefix``, in which generation, when."""
        with self._lock:
            low, high = _subtree_bounds(prefix)
            rows = self._db.execute(
                "SELECT key, value, source, generation, time FROM settings"
                " WHERE key = ? OR (key > ? AND key < ?) ORDER BY key",
                (prefix, low, high),
            ).fetchall()
        return [Provenance(k, _load(v), s, g, t) for k, v, s, g, t in rows]

    def sources(self, prefix: str = ROOT) -> dict[str, str]:
        with self._lock:
            return {k: s for k, _, s in self._live_under(self._db, prefix)}

    # ---- history ---------------------------------------------------------------------------

    def _changes(self, db: sqlite3.Connection, number: int) -> tuple[Change, ...]:
        rows = db.execute(
            "SELECT key, old, new, source FROM changes WHERE generation = ? ORDER BY key",
            (number,),
        ).fetchall()
        return tuple(Change(k, _load(o), _load(n), s) for k, o, n, s in rows)

    def generations(self, limit: int = 50, before: int | None = None) -> list[Generation]:
        """Newest first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT g.number, g.time, g.tx, g.source, a.uid, a.user, a.pid"
                " FROM generations g LEFT JOIN actors a ON a.generation = g.number"
                " WHERE g.number < ? ORDER BY g.number DESC LIMIT ?",
                (before if before is not None else 2**62, limit),
            ).fetchall()
            return [
                Generation(n, t, tx, s, self._changes(db, n),
                           None if uid is None else Actor(uid, user, pid))
                for n, t, tx, s, uid, user, pid in rows
            ]

    def actors(self, generations: Iterable[int]) -> dict[int, Actor]:
        """Who made each of these generations through the API (those that were)."""
        numbers = sorted(set(generations))
        if not numbers:
            return {}
        with self._read() as db:
            rows = db.execute(
                "SELECT generation, uid, user, pid FROM actors WHERE generation IN "
                f"({','.join('?' * len(numbers))})",
                numbers,
            ).fetchall()
        return {g: Actor(uid, user, pid) for g, uid, user, pid in rows}

    def _record_actor(self, db: sqlite3.Connection, result: CommitResult,
                      actor: Actor | None) -> None:
        if actor is not None and result.changed:
            db.execute(
                "INSERT OR REPLACE INTO actors (generation, uid, user, pid) VALUES (?, ?, ?, ?)",
                (result.generation, actor.uid, actor.user, actor.pid),
            )

    def key_history(self, key: str, limit: int = 50) -> list[tuple[int, float, Change]]:
        """Changes of one key, newest first: (generation, time, change)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.generation, g.time, c.old, c.new, c.source FROM changes c"
                " JOIN generations g ON g.number = c.generation"
                " WHERE c.key = ? ORDER BY c.generation DESC LIMIT ?",
                (key, limit),
            ).fetchall()
        return [(gen, t, Change(key, _load(o), _load(n), s)) for gen, t, o, n, s in rows]

    def changed_since(self, generation: int) -> set[str]:
        """Keys changed by generations after ``generation``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT key FROM changes WHERE generation > ?", (generation,)
            ).fetchall()
        return {r[0] for r in rows}

    def values_at(self, generation: int) -> dict[str, Any]:
        """Flat live settings as they were right after ``generation``."""
        with self._lock:
            if generation < 0 or generation > self.generation():
                raise UnknownGeneration(f"no generation {generation}")
            rows = self._db.execute(
                "SELECT c.key, c.new FROM changes c JOIN ("
                "  SELECT key, max(generation) AS g FROM changes WHERE generation <= ?"
                "  GROUP BY key) last ON last.key = c.key AND last.g = c.generation",
                (generation,),
            ).fetchall()
        return {k: _load(v) for k, v in rows if v is not None}

    # ---- transactions ----------------------------------------------------------------------

    def transactions(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT tx FROM pending ORDER BY tx").fetchall()
        return [r[0] for r in rows]

    def pending(self, tx: str) -> list[Patch]:
        with self._lock:
            return self._pending(self._db, tx)

    def pending_size(self, tx: str) -> int:
        """Bytes of JSON pending in ``tx``: what committing it has to replay and validate."""
        with self._lock:
            row = self._db.execute(
                "SELECT coalesce(sum(length(body)), 0) FROM pending WHERE tx = ?", (tx,)
            ).fetchone()
            return int(row[0])

    def _pending(self, db: sqlite3.Connection, tx: str) -> list[Patch]:
        rows = db.execute(
            "SELECT source, body FROM pending WHERE tx = ? ORDER BY seq", (tx,)
        ).fetchall()
        return [Patch(source, json.loads(body)) for source, body in rows]

    def preview(self, tx: str, schema: SchemaLike) -> CommitPlan:
        """What committing ``tx`` would do; validates, changes nothing."""
        with self._read() as db:
            return self._plan(db, tx, self._pending(db, tx), schema)

    def _plan(
        self, db: sqlite3.Connection, tx: str, patches: list[Patch], schema: SchemaLike
    ) -> CommitPlan:
        plan = plan_commit(_SqliteView(db), patches, schema.defaults())
        schema.check(plan.to_validate, sections=plan.sections, origin=f"transaction {tx!r}")
        return plan

    def add_patch(
        self, tx: str, body: Mapping[str, Any], source: str, schema: SchemaLike | None = None
    ) -> CommitPlan | None:
        """Append a merge patch to ``tx``; with a schema, the merged result must validate first.

        The validation (the expensive part: a big patch takes seconds) runs outside the store
        lock on a snapshot, and only for the sections the new patch touches; the insert then
        checks nothing moved meanwhile (else it validates again). With a schema (a caller's
        patch), the pending patches of all transactions are bounded (``PendingLimit``).

        The patch is written without waiting for the disk (``_write``): the commit that
        applies it makes it durable, a power cut before that drops the patch whole."""
        patch = Patch(source, dict(body))
        text = _dump(patch.body)
        if schema is None:
            with self._write(durable=False) as db:
                self._insert_pending(db, tx, source, text)
            return None
        sections = touched_sections([patch])
        defaults = schema.defaults()
        origin = f"transaction {tx!r}"
        for _ in range(ADD_PATCH_ATTEMPTS):
            with self._snapshot() as db:
                seen, plan, kept = self._replay_patch(db, tx, patch, defaults)
            schema.check(plan.to_validate, sections=sections, origin=origin)
            with self._write(durable=False) as db:
                if self._pending_mark(db, tx) != seen:
                    continue  # a commit or another patch came in between: validate again
                self._add_pending(db, tx, source, text, kept)
                return plan
        with self._write(durable=False) as db:  # busy: do it all under the lock once
            _, plan, kept = self._replay_patch(db, tx, patch, defaults)
            schema.check(plan.to_validate, sections=sections, origin=origin)
            self._add_pending(db, tx, source, text, kept)
            return plan

    def _replay_patch(
        self, db: sqlite3.Connection, tx: str, patch: Patch, defaults: Mapping[str, Any]
    ) -> tuple[Any, CommitPlan, Replay]:
        """(snapshot mark, plan of ``patch`` alone over the transaction, the transaction with
        it replayed). The transaction so far comes from the cache when it is still current."""
        seen = self._pending_mark(db, tx)
        view = _SqliteView(db)
        cached = self._replays.get(tx)
        if cached is not None and cached[0] == seen:
            state = cached[1].copy(view)
        else:
            state = replay(view, self._pending(db, tx))
        state = replay(view, [patch], state)
        kept = state.copy(view)
        return seen, plan_replay(view, state, defaults, only_last=True), kept

    def _add_pending(
        self, db: sqlite3.Connection, tx: str, source: str, text: str, kept: Replay
    ) -> None:
        self._check_pending_limits(db, len(text))
        self._insert_pending(db, tx, source, text)
        self._replays[tx] = (self._pending_mark(db, tx), kept)

    def _pending_mark(self, db: sqlite3.Connection, tx: str) -> tuple[Any, ...]:
        """What a snapshot's validation depended on: the tx's last patch and the generation."""
        return (
            db.execute("SELECT max(seq), count(*) FROM pending WHERE tx = ?", (tx,)).fetchone(),
            db.execute("SELECT max(number) FROM generations").fetchone(),
        )

    def _check_pending_limits(self, db: sqlite3.Connection, adding: int) -> None:
        count, size = db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM pending"
                                 ).fetchone()
        if count + 1 > MAX_PENDING_PATCHES or size + adding > MAX_PENDING_BYTES:
            raise PendingLimit(
                f"too much pending: {count} patches, {size} bytes in all transactions (limits "
                f"{MAX_PENDING_PATCHES} patches, {MAX_PENDING_BYTES} bytes); commit or discard "
                "a transaction first"
            )

    def _insert_pending(self, db: sqlite3.Connection, tx: str, source: str, text: str) -> None:
        db.execute(
            "INSERT INTO pending (tx, source, body, time) VALUES (?, ?, ?, ?)",
            (tx, source, text, time.time()),
        )

    def discard(self, tx: str) -> list[str]:
        """Drop a transaction; returns the keys its patches named."""
        with self._write() as db:
            patches = self._pending(db, tx)
            db.execute("DELETE FROM pending WHERE tx = ?", (tx,))
            self._replays.pop(tx, None)
        return sorted({k for p in patches for k in _patch_keys(p)})

    def discard_all(self) -> None:
        with self._write() as db:
            db.execute("DELETE FROM pending")
            self._replays.clear()

    def commit(
        self,
        tx: str,
        schema: SchemaLike,
        source_label: str | None = None,
        meta: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
    ) -> CommitResult:
        """Validate and apply ``tx`` atomically; ``meta`` and who did it (``actor``) are written
        in the same transaction."""
        with self._write() as db:
            patches = self._pending(db, tx)
            if not patches:
                raise NothingToCommit(tx)
            plan = self._plan(db, tx, patches, schema)
            label = source_label or ",".join(dict.fromkeys(p.source for p in patches))
            result = self._apply(db, tx, label, plan)
            self._record_actor(db, result, actor)
            db.execute("DELETE FROM pending WHERE tx = ?", (tx,))
            self._replays.pop(tx, None)
            for name, value in (meta or {}).items():
                self._set_meta(db, name, value)
            faults.point("before-commit")
        self.last_generation = max(self.last_generation, result.generation)
        faults.point("after-commit")
        return result

    def rollback(self, generation: int, schema: SchemaLike, floor_tx: str = "boot",
                 actor: Actor | None = None) -> CommitResult:
        """A new commit whose values are those of ``generation``.

        Never below the first commit of ``floor_tx`` (the first boot: before it there were no
        defaults and no generated values), and defaults and generated values live now but
        absent from ``generation`` (added by a later boot) are kept: a rollback restores what
        people set, never a host without its seed."""
        with self._write() as db:
            row = db.execute(
                "SELECT min(number) FROM generations WHERE tx = ?", (floor_tx,)
            ).fetchone()
            floor = row[0] or 0
            if generation < floor:
                raise RollbackRefused(
                    f"generation {generation} is older than the first boot (generation "
                    f"{floor}): its settings lack the defaults and generated values; roll back "
                    f"to generation {floor} or later"
                )
            target = self.values_at(generation)
            rows = self._live_under(db, ROOT)
            live = {k: _load(v) for k, v, _ in rows}
            for key, _, source in rows:
                if key not in target and source in (DEFAULT_SOURCE, GENERATOR_SOURCE):
                    target[key] = live[key]
            plan = rollback_plan(live, target, f"rollback:{generation}")
            schema.check(
                plan.to_validate, sections=plan.sections, origin=f"generation {generation}"
            )
            result = self._apply(db, f"rollback-{generation}", f"rollback:{generation}", plan)
            self._record_actor(db, result, actor)
        self.last_generation = max(self.last_generation, result.generation)
        return result

    def migrate(
        self,
        live: Mapping[str, Any],
        meta: Mapping[str, Any],
        *,
        tx: str,
        label: str,
        rewrite_pending: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    ) -> CommitResult:
        """Make the live settings (flat) ``live`` and the metadata ``meta``, in one transaction.

        The migrator's one write: the new values become one generation labelled ``label`` (so
        history and provenance show the migration), every pending patch body is replaced by
        ``rewrite_pending(body)`` (a change waiting to be committed migrates too), and the
        metadata becomes exactly ``meta``. Not checked against a schema: migrations carry a
        store between OS versions whose schemas differ, and they are signed documents.
        """
        with self._write() as db:
            current = {k: _load(v) for k, v, _ in self._live_under(db, ROOT)}
            result = self._apply(db, tx, label, rollback_plan(current, live, label))
            for seq, body in db.execute("SELECT seq, body FROM pending").fetchall():
                rewritten = _dump(rewrite_pending(json.loads(body)))
                if rewritten != body:
                    db.execute("UPDATE pending SET body = ? WHERE seq = ?", (rewritten, seq))
            self._replays.clear()
            old_meta = self._meta(db)
            gone = [(name,) for name in old_meta.keys() - meta.keys()]
            db.executemany("DELETE FROM meta WHERE name = ?", gone)
            for name, value in meta.items():
                if old_meta.get(name, _ABSENT) != value:
                    self._set_meta(db, name, value)
        self.last_generation = max(self.last_generation, result.generation)
        return result

    def _apply(self, db: sqlite3.Connection, tx: str, label: str, plan: CommitPlan) -> CommitResult:
        now = time.time()
        current = db.execute("SELECT max(number) FROM generations").fetchone()[0] or 0
        number = current + 1 if plan.changes else current
        if plan.changes:
            db.execute(
                "INSERT INTO generations (number, time, tx, source) VALUES (?, ?, ?, ?)",
                (number, now, tx, label),
            )
            db.executemany(
                "INSERT INTO changes (generation, key, old, new, source) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        number,
                        c.key,
                        None if c.old is None else _dump(c.old),
                        None if c.new is None else _dump(c.new),
                        c.source,
                    )
                    for c in plan.changes
                ],
            )
            removed = [(c.key,) for c in plan.changes if c.new is None]
            db.executemany("DELETE FROM settings WHERE key = ?", removed)
            db.executemany(
                "INSERT OR REPLACE INTO settings (key, value, source, generation, time)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (c.key, _dump(c.new), c.source, number, now)
                    for c in plan.changes
                    if c.new is not None
                ],
            )
        changed = {c.key for c in plan.changes}
        db.executemany(
            "UPDATE settings SET source = ? WHERE key = ? AND source != ?",
            [(s, k, s) for k, s in plan.sources.items() if k not in changed],
        )
        return CommitResult(number, tuple(sorted(changed)))

    # ---- metadata --------------------------------------------------------------------------

    def _set_meta(self, db: sqlite3.Connection, name: str, value: Any) -> None:
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, _dump(value)))

    def set_meta(self, name: str, value: Any) -> None:
        with self._write() as db:
            self._set_meta(db, name, value)

    def _meta(self, db: sqlite3.Connection) -> dict[str, Any]:
        return {name: _load(value) for name, value in db.execute("SELECT name, value FROM meta")}

    def meta(self) -> dict[str, Any]:
        """Every metadata entry (the migrator carries them all across OS versions)."""
        with self._lock:
            return self._meta(self._db)

    def get_meta(self, name: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else _load(row[0])

    # ---- the reconcile ledger (reconciler.ledger), for the callers of the store ------------

    def owe(self, services: Mapping[str, Iterable[str]], generation: int, reason: str) -> None:
        self.ledger.owe(services, generation, reason)

    def owed(self) -> dict[str, Owed]:
        return self.ledger.owed()

    def settle(self, service: str, generation: int | None = None) -> None:
        self.ledger.settle(service, generation)

    def settled(self, service: str) -> int | None:
        return self.ledger.settled(service)

    def save_receipt(self, generation: int, ok: bool, body: Mapping[str, Any],
                     settled: Iterable[str] = ()) -> int:
        return self.ledger.save_receipt(generation, ok, body, settled)

    def last_receipt(self, ok_only: bool = False) -> dict[str, Any] | None:
        return self.ledger.last_receipt(ok_only)

    def applied_generation(self) -> int:
        return self.ledger.applied_generation()


class _SqliteView:
    """Live settings read inside the current SQLite transaction (see transaction.LiveView)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def value(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else _load(row[0])

    def below(self, key: str, limit: int | None = None) -> dict[str, Any]:
        low, high = _subtree_bounds(key)
        rows = self.db.execute(
            "SELECT key, value FROM settings WHERE key > ? AND key < ? LIMIT ?",
            (low, high, -1 if limit is None else limit),
        ).fetchall()
        return {k: _load(v) for k, v in rows}


def _patch_keys(patch: Patch) -> Iterable[str]:
    return flatten({ROOT: patch.body})
