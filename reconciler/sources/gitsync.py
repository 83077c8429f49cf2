"""The git fleet source: fetch the pointer's ref, merge its layers, apply the revision whole.

An invalid revision (unparsable file, schema problem, untrusted signature) changes nothing: the
last good revision stays applied and the status names the commit, file and key. Keys git applied
are owned by git (source ``git:<commit>``); those a new revision no longer declares are pruned.
"""

from __future__ import annotations

import posixpath
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hostcore.documents import DocumentError, parse_document, settings_of
from reconciler.events import Events
from reconciler.schema import Schema
from reconciler.sources.applier import (
    GIT_APPLIED_META,
    GIT_SOURCE_PREFIX,
    InvalidLayers,
    LayeredApplier,
    OwnedElsewhere,
)
from reconciler.sources.gitrepo import (
    REWIND_TAG,
    GitRepo,
    GitSourceError,
    Revision,
    Stopping,
    Unverified,
)
from reconciler.sources.layers import Layer, layer_candidates
from reconciler.store import Store

GIT_TX = "gitops"
APPLIED_META = GIT_APPLIED_META
HISTORY = 50  # applied commits remembered
FETCH_TIMEOUT = 120.0  # seconds: the deadline of one fetch (settings.gitops.fetch-timeout)
ANCESTRY_DEPTH = 1000  # commits fetched with verification on, to check descent


@dataclass
class GitStatus:
    # Disabled | Fetching (first fetch) | Synced | Failed | Invalid | Unverified | Refused | Stale
    condition: str = "Disabled"
    reason: str = ""
    fetching_since: float | None = None  # a fetch runs now, since then (wall clock)
    url: str | None = None
    ref: str | None = None
    path: str | None = None
    fetched_commit: str | None = None
    applied_commit: str | None = None
    last_attempt: float | None = None
    last_success: float | None = None
    failures: int = 0
    changed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GitSync:
    """One host's git source; ``sync`` is blocking and serialised (run it off the event loop).

    It needs only the store it commits to, the schema a revision must satisfy, where to keep its
    clones (``work_dir``) and the events it reports to: never the composition root (``Host``).
    """

    def __init__(self, store: Store, schema: Schema, events: Events, work_dir: Path):
        self.store = store
        self.schema = schema
        self.events = events
        self.base = Path(work_dir)
        self.status = GitStatus()
        self.applier = LayeredApplier(store, schema, GIT_SOURCE_PREFIX, GIT_TX,
                                      lambda _layer: f"{GIT_SOURCE_PREFIX}{self._applying}")
        self._applying = ""  # the commit being applied (the source of every key it sets)
        applied = store.get_meta(APPLIED_META) or {}
        self.status.applied_commit = applied.get("commit")
        # to notice a ref moved backwards: commits applied before, and the newest one's time
        self._history: list[str] = applied.get("history", [])
        self._applied_time = applied.get("committed", 0)
        self._lock = threading.Lock()
        self._repo: GitRepo | None = None
        self._cancelled = False
        self._started = time.time()
        self._stale_reported = False
        self.gate: Any = None  # a rollout gate: reconciler.fleet.rollout_watch.Rollouts

    def pointer(self) -> dict[str, Any]:
        return self.store.live_document().get("gitops", {})

    def interval(self) -> float:
        return float(self.pointer().get("interval", 300))

    def sync(self) -> GitStatus:
        with self._lock:
            pointer = self.pointer()
            status = self.status
            status.url, status.ref, status.path = (
                pointer.get("url"),
                pointer.get("ref"),
                pointer.get("path"),
            )
            status.changed = []
            if not status.url:
                status.condition, status.reason = "Disabled", "settings.gitops.url is not set"
                return status
            status.last_attempt = time.time()
            if status.condition == "Disabled":
                status.condition = "Fetching"
                status.reason = f"fetching since {_iso(status.last_attempt)}"
            try:
                self._sync(pointer)
            except Unverified as error:
                self._fail("Unverified", str(error))
            except GitSourceError as error:
                self._fail("Failed", str(error))
            except (_InvalidRevision, InvalidLayers, OwnedElsewhere) as error:
                self._fail("Invalid", str(error))
            except _Refused as error:
                self._fail("Refused", str(error))
            except Exception as error:  # a full disk, a locked store, a bug: report, retry
                self._fail("Failed", f"{type(error).__name__}: {error}")
            finally:
                status.fetching_since = None
            self._check_age(pointer)
            return status

    def cancel(self) -> None:
        """Kill a fetch in progress; later syncs fail at once (the daemon is stopping)."""
        self._cancelled = True
        if self._repo is not None:
            self._repo.cancel()

    def _check_age(self, pointer: dict[str, Any]) -> None:
        """A frozen remote (one that keeps serving an old commit, or no answer at all) looks
        like "up to date"; with ``max-age``, the fleet promises a new signed commit at least
        that often, so an older newest commit is a condition of its own."""
        max_age = pointer.get("max-age")
        status = self.status
        if not max_age or status.condition not in ("Synced", "Failed"):
            return
        now = time.time()
        if status.condition == "Synced" and now - self._applied_time > max_age:
            status.condition = "Stale"
            status.reason = (
                f"the newest commit {str(status.applied_commit)[:12]} was committed at "
                f"{_iso(self._applied_time)}, more than max-age {max_age} s ago: the remote may "
                "be frozen"
            )
        elif status.condition == "Failed" and now - (status.last_success or self._started) > (
            max_age
        ):
            status.reason += f" (no fetch result for more than max-age {max_age} s)"
        else:
            return
        if not self._stale_reported:
            self._stale_reported = True
            self.events.emit("git", f"git source stale: {status.reason}", level="warning",
                             commit=status.applied_commit)

    def _fail(self, condition: str, reason: str) -> None:
        self.status.condition, self.status.reason = condition, reason
        self.status.failures += 1
        self.events.emit("git", f"git sync {condition.lower()}: {reason}", level="warning",
                         commit=self.status.fetched_commit)

    def _sync(self, pointer: dict[str, Any]) -> None:
        status = self.status
        if self._cancelled:
            raise Stopping("not fetching: the daemon is stopping")
        if self._repo is None or self._repo.url != pointer["url"]:
            self._repo = GitRepo(self.base, pointer["url"])  # one per URL, not one per sync
            if self._cancelled:
                self._repo.cancel()
        repo = self._repo
        repo.timeout = float(pointer.get("fetch-timeout", FETCH_TIMEOUT))
        verify = pointer.get("verify", {})
        verifying = verify.get("mode", "none") != "none"
        status.fetching_since = time.time()
        # With verification, enough history to tell a descendant of what we applied from a
        # rollback to an older (also signed) commit.
        revision = repo.fetch(pointer.get("ref"), depth=ANCESTRY_DEPTH if verifying else 1)
        status.fetching_since = None
        if repo.cleared:
            self.events.emit("git", level="warning", message="removed what an interrupted git "
                             "left in the checkout: "
                             + ", ".join(dict.fromkeys(repo.cleared[:10])))
            repo.cleared = []
        status.fetched_commit = revision.commit
        if verifying:
            trust = (verify["mode"], verify.get("allowed-signers"), verify.get("keyring"),
                     self.base / "gnupg")
            repo.verify(revision.commit, *trust)
            applied = status.applied_commit
            if applied and applied != revision.commit and not repo.descends(revision.commit,
                                                                            applied):
                if not repo.rewind_allowed(revision.commit, *trust):
                    raise _Refused(
                        f"commit {revision.commit[:12]} is not a descendant of the applied "
                        f"{applied[:12]}: refusing a rollback of the fleet's configuration "
                        f"(to allow it, push a tag {REWIND_TAG}{revision.commit} signed by a "
                        "trusted key)"
                    )
                self.events.emit("git", f"rewind to {revision.commit[:12]} allowed by the signed "
                                 f"tag {REWIND_TAG}{revision.commit}", commit=revision.commit)
        choice = self._choose(repo, revision, pointer)
        if choice is not None and choice.commit != revision.commit:
            if choice.commit is None:  # halted, and no revision of ours to keep applied
                status.condition, status.reason = "Synced", choice.reason
                return
            revision = repo.revision(choice.commit)  # the applied one, kept (and re-asserted)
        self._apply(repo, revision, pointer, choice.meta if choice else None, announce=True)
        if choice is not None and choice.reason:
            status.reason = f"{status.reason}; {choice.reason}"

    def _choose(self, repo: GitRepo, revision: Revision, pointer: dict[str, Any]) -> Any:
        """The rollout gate's choice for ``revision`` (None: no gate, apply it)."""
        if self.gate is None:
            return None
        from reconciler.fleet.rollout import POLICY_FILE, PolicyError

        name = posixpath.normpath(posixpath.join(pointer.get("path") or ".", POLICY_FILE))
        try:
            text = repo.read(revision.commit, name)
            return self.gate.choose(revision.commit, revision.committed, text, name,
                                    self.status.applied_commit)
        except (DocumentError, PolicyError) as error:
            raise _InvalidRevision(f"commit {revision.commit[:12]}: {error}") from None

    def revert(self, commit: str, meta: dict[str, Any]) -> list[str]:
        """Apply the layers of an earlier ``commit`` again (a rollout's last good revision),
        with ``meta`` written in the same store commit; the keys it changed."""
        with self._lock:
            pointer = self.pointer()
            if self._repo is None or self._repo.url != pointer.get("url"):
                self._repo = GitRepo(self.base, pointer["url"])
            revision = self._repo.revision(commit)
            self._apply(self._repo, revision, pointer, lambda _generation: meta, announce=False)
            return list(self.status.changed)

    def _apply(self, repo: GitRepo, revision: Revision, pointer: dict[str, Any],
               extra_meta: Any, announce: bool) -> None:
        """Apply ``revision``'s layers whole. ``extra_meta(generation)``: more store meta for
        the same commit; ``announce``: say so when the ref moved back (not for a revert)."""
        status = self.status
        layers = self._layers(repo, revision.commit, pointer)
        history = [revision.commit] + [c for c in self._history if c != revision.commit]
        self._applying = revision.commit
        more = extra_meta or (lambda _generation: {})
        first_sync = status.applied_commit is None
        applied = self.applier.apply(
            layers,
            meta={
                **more(self.store.generation() + 1),
                APPLIED_META: {
                    "commit": revision.commit,
                    "url": pointer["url"],
                    "path": pointer.get("path"),
                    "ref": pointer.get("ref"),
                    "time": time.time(),
                    "committed": revision.committed,
                    "history": history[:HISTORY],
                }
            },
            context=f"commit {revision.commit[:12]}",
        )
        if not applied.committed:  # the values were already there: the rollout's meta still is
            for key, value in more(self.store.generation()).items():
                self.store.set_meta(key, value)
        changed = applied.changed
        for key, was in drifted_keys(applied.taken_over, first_sync).items():
            self.events.emit(
                "drift",
                f"{key} was changed outside git ({was}); git's value restored",
                level="warning",
                commit=revision.commit,
                key=key,
            )
        moved_back = revision.commit in self._history or revision.committed < self._applied_time
        if (announce and status.applied_commit and status.applied_commit != revision.commit
                and moved_back):
            self.events.emit(
                "git",
                level="warning",
                message=f"ref moved back to an older commit {revision.commit[:12]} "
                f"(was {status.applied_commit[:12]}): applied as the fleet's "
                "desired state",
                commit=revision.commit,
            )
        if status.applied_commit != revision.commit:
            self.events.emit(
                "git",
                f"applied {revision.commit[:12]} from {pointer['url']}",
                commit=revision.commit,
                changed=changed,
            )
        status.applied_commit = revision.commit
        status.condition, status.reason = "Synced", f"applied {revision.commit[:12]}"
        status.last_success = time.time()
        status.failures = 0
        self._stale_reported = False
        status.changed = changed
        self._applied_time = revision.committed
        self._history = history[:HISTORY]

    def _layers(self, repo: GitRepo, commit: str, pointer: dict[str, Any]) -> list[Layer]:
        layers = []
        candidates = layer_candidates(
            pointer.get("path", "."), pointer.get("groups", []), pointer.get("host-id")
        )
        for names in candidates:
            for name in names:
                try:
                    data = repo.read(commit, name)
                except DocumentError as error:
                    raise _InvalidRevision(f"commit {commit[:12]}: {error}") from None
                if data is None:
                    continue
                try:
                    layers.append(Layer(name, settings_of(parse_document(data, name), name)))
                except DocumentError as error:
                    raise _InvalidRevision(f"commit {commit[:12]}: {error}") from None
                break
        if not layers:
            raise _InvalidRevision(
                f"commit {commit[:12]}: no layer found under "
                f"{pointer.get('path', '.')!r} (common, groups, hosts)"
            )
        return layers

def drifted_keys(taken_over: dict[str, str], first_sync: bool) -> dict[str, str]:
    """Keys git put back after someone changed them through the API (``force=true``): drift.

    Taking a key over from user data, desired files, a default or a generator is git
    becoming its owner, not drift; nor is anything the very first sync applies."""
    if first_sync:
        return {}
    return {k: was for k, was in taken_over.items() if was.startswith("api:")}


class _InvalidRevision(Exception):
    pass


class _Refused(Exception):
    """A verified revision that would roll the fleet's configuration back."""


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
