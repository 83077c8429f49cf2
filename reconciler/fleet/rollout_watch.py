"""The daemon's side of config rollouts: gates the git source, watches health windows, reports.

* :meth:`Rollouts.choose` is the git source's gate (called by ``GitSync`` for each fetched
  revision, on its thread): it gathers the inputs of :func:`rollout.plan` (the policy file of
  the revision, this host's seed and memory, the fleet's reports from etcd) and says which
  commit to apply. Applying a revision starts its *trial*, recorded in the same store commit.
* :meth:`Rollouts.run` watches a trial: each pass of the trial's generation and each run of the
  health checks (``settings.updates.health-checks``, the boot gate's checks) is an observation;
  :func:`rollout.judge` decides. A failed trial returns the git source to the last good revision
  (``GitSync.revert``) and is remembered, so this host never applies that revision again.
* It publishes this host's state into etcd under its lease (``reports.RolloutReports``), wakes
  the git source when this host's wave opens, and never dies: an error is logged and retried.

The store is the truth (``rollout`` meta): a daemon restarted inside a health window resumes it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.fleet import rollout
from reconciler.fleet.reports import RolloutReports
from reconciler.logs import get_logger
from reconciler.store import Store
from reconciler.supervise import Wakeup
from updates.health import parse_checks, run_checks

META = "rollout"
FAILED_KEPT = 20  # failed revisions remembered per host
ETCD_RETRY = 5.0  # seconds before a sync is retried when etcd could not be read
_log = get_logger("rollout")


@dataclass(frozen=True)
class Choice:
    """The gate's answer: the commit to apply (None: none), and the store meta to write with it
    (a function of the generation that commit gets)."""

    commit: str | None
    meta: Callable[[int], dict[str, Any]]
    reason: str = ""  # why not the fetched revision (waiting, halted...)


def _no_meta(_generation: int) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class EtcdSettings:
    url: str
    node_id: str
    lease_ttl: int


def etcd_settings(settings: Mapping[str, Any]) -> EtcdSettings | None:
    """``settings.coordination.etcd`` of the live settings (the inside of ``settings``)."""
    coordination = settings.get("coordination") or {}
    etcd = coordination.get("etcd") or {}
    if not etcd.get("url") or not coordination.get("node-id"):
        return None
    return EtcdSettings(etcd["url"], coordination["node-id"], int(etcd.get("lease-ttl", 60)))


class Rollouts:
    RETRY = 5.0

    def __init__(self, store: Store, events: Any, wake_worker: Callable[[str], None],
                 last_receipt: Callable[[], dict[str, Any] | None],
                 check_env: Mapping[str, str], os_version: str = ""):
        self.store, self.events, self.wake_worker = store, events, wake_worker
        self.last_receipt = last_receipt
        self.check_env = dict(check_env)
        self.os_version = os_version
        self.git: Any = None  # the GitSync it gates (its revert)
        self.git_wake: Callable[[], None] = lambda: None
        self.decision: rollout.Decision | None = None
        self.error = ""  # the last etcd trouble, shown in status
        self._receipts: list[dict[str, Any]] = []
        self._reports: RolloutReports | None = None
        self._dirty = True  # something to publish now rather than at the next lease refresh
        self._lock = threading.Lock()  # choose (git thread) and the watch share the reports
        self.wakeup = Wakeup()
        self.poke, self.stop = self.wakeup.poke, self.wakeup.stop

    # -- the git source's gate (on the git thread)

    def choose(self, commit: str, committed: float, policy_text: bytes | None, source: str,
               applied: str | None) -> Choice:
        """Which commit the git source applies for the fetched ``commit``; PolicyError when the
        revision's policy file is invalid (the revision is then refused whole)."""
        settings = self.store.live_document()
        local = rollout.Local.of(self.store.get_meta(META), applied)
        now = time.time()
        if policy_text is None:  # no policy: every revision applies at once, as before
            self.decision = None
            if commit == applied:
                return Choice(commit, _no_meta)
            good = rollout.Local(commit, commit, local.failed, None)
            return Choice(commit, lambda _g: {META: good.as_dict()})
        policy = rollout.parse_policy(policy_text, source)
        seed = int((settings.get("updates") or {}).get("seed", 0))
        reports, trouble = None, ""
        etcd = etcd_settings(settings)
        if etcd is not None:
            try:
                with self._lock:
                    reports = self._client(etcd).reports(commit)
            except Exception as error:  # noqa: BLE001 - no budget to check: do not apply
                trouble = f"cannot read the rollout reports from etcd {etcd.url}: {error}"
        decision = rollout.plan(policy, seed, now, commit, committed, local, reports)
        if trouble and decision.action == rollout.APPLY and local.applied is not None:
            decision = rollout.Decision(rollout.WAIT, local.applied,
                                        f"{trouble}; {commit[:12]} waits", commit,
                                        wake_at=now + ETCD_RETRY)
        self.error = trouble
        self.decision = decision
        self.poke_dirty()
        if decision.action != rollout.APPLY:
            held = decision.commit != commit  # the status says why the fetched one waits
            return Choice(decision.commit, _no_meta, decision.reason if held else "")
        _log.info("rollout: applying", revision=commit, reason=decision.reason)
        if local.applied is None:  # the host's first revision: nothing to return to
            first = rollout.Local(commit, commit, local.failed, None)
            return Choice(commit, lambda _g: {META: first.as_dict()})

        def trial_meta(generation: int) -> dict[str, Any]:
            trial = rollout.Trial(commit, local.last_good or local.applied, now, policy.window,
                                  generation)
            return {META: rollout.Local(commit, local.last_good, local.failed,
                                        trial).as_dict()}

        return Choice(commit, trial_meta)

    def _client(self, etcd: EtcdSettings) -> RolloutReports:
        current = self._reports
        if current is None or (current.url, current.node_id) != (etcd.url, etcd.node_id):
            current = self._reports = RolloutReports(etcd.url, etcd.node_id, etcd.lease_ttl)
        return current

    # -- the daemon's hooks

    def after_pass(self, receipt: dict[str, Any]) -> None:
        if rollout.Local.of(self.store.get_meta(META), None).trial is not None:
            self._receipts.append(receipt)
            self.poke()

    def status(self) -> dict[str, Any]:
        local = rollout.Local.of(self.store.get_meta(META), None)
        return {"decision": self.decision.as_dict() if self.decision else None,
                **local.as_dict(), "error": self.error}

    def conditions(self) -> list[dict[str, Any]]:
        """``RolloutHalted`` while the fetched revision's failures exceed its budget."""
        decision = self.decision
        if decision is None:
            return []
        return [{"type": "RolloutHalted", "status": decision.halted,
                 "reason": decision.reason if decision.halted else "within its failure budget",
                 "revision": decision.revision, **decision.counts.as_dict()}]

    # -- the watch

    async def run(self) -> None:
        last_publish = 0.0
        while not self.wakeup.stopping:
            timeout: float | None = None
            dirty, self._dirty = self._dirty, False  # a poke from now on is for the next round
            try:
                local = rollout.Local.of(self.store.get_meta(META), None)
                if local.trial is not None:
                    await self._watch(local.trial)
                    local = rollout.Local.of(self.store.get_meta(META), None)
                    if local.trial is not None:  # past its end: judged at the next pass
                        left = local.trial.ends - time.time()
                        timeout = left if left > 0 else self.RETRY
                decision = self.decision
                if decision is not None and decision.wake_at is not None:
                    left = decision.wake_at - time.time()
                    if left <= 0 and decision.action == rollout.WAIT:
                        self.decision = replace(decision, wake_at=None)
                        self.git_wake()  # this host's wave opened (or a trial ended)
                    elif left > 0:
                        timeout = min(timeout or left, left)
                etcd = etcd_settings(self.store.live_document())
                if etcd is not None:
                    period = max(1.0, etcd.lease_ttl / 3)
                    if time.time() - last_publish >= period or dirty:
                        await asyncio.to_thread(self._publish, etcd, local)
                        last_publish = time.time()
                    timeout = min(timeout or period, period)
            except Exception as error:  # report and retry: this task must not die
                self.error = f"{type(error).__name__}: {error}"
                _log.error("rollout watch failed", error=self.error)
                timeout = self.RETRY
                self._dirty = self._dirty or dirty
            await self.wakeup.wait(timeout)

    def poke_dirty(self) -> None:
        self._dirty = True
        self.poke()

    async def _watch(self, trial: rollout.Trial) -> None:
        """Observe and judge ``trial``; act on a verdict."""
        observations = []
        receipts, self._receipts = self._receipts, []
        for receipt in receipts:
            observations.append(await asyncio.to_thread(self._observe, trial, receipt))
        if time.time() >= trial.ends and not any(not o.ok for o in observations):
            receipt = self.last_receipt()
            if receipt is not None:  # the last look: the latest pass and the checks now
                observations.append(await asyncio.to_thread(self._observe, trial, receipt))
        verdict, reason = rollout.judge(trial, time.time(), observations)
        if verdict == rollout.FAILED:
            await asyncio.to_thread(self._fail, trial, reason)
        elif verdict == rollout.PASSED:
            await asyncio.to_thread(self._pass, trial, reason)

    def _observe(self, trial: rollout.Trial, receipt: dict[str, Any]) -> rollout.Observation:
        generation = int(receipt.get("generation", 0))
        if generation < trial.generation:
            return rollout.Observation(generation, True)
        if not receipt.get("ok"):
            failed = [f"{s['kind']} {s['name']}: {s['detail']}"
                      for s in receipt.get("steps", []) if s.get("result") == "failed"]
            detail = "; ".join(failed) or receipt.get("error") or "the pass failed"
            return rollout.Observation(generation, False, f"reconcile pass failed: {detail}")
        checks = parse_checks(self.store.live_document().get("updates"))
        results = run_checks(checks, self.check_env)
        failed_checks = [f"{r.name}: {r.detail}" for r in results if not r.ok]
        if failed_checks:
            return rollout.Observation(generation, False, "health check(s) failed: "
                                       + "; ".join(failed_checks))
        return rollout.Observation(generation, True)

    def _fail(self, trial: rollout.Trial, reason: str) -> None:
        local = rollout.Local.of(self.store.get_meta(META), None)
        failed = dict(list({**local.failed, trial.revision: reason}.items())[-FAILED_KEPT:])
        after = rollout.Local(trial.previous, local.last_good, failed, None)
        meta = {META: after.as_dict()}
        if trial.previous is None or self.git is None:
            self.store.set_meta(META, meta[META])
        else:
            self.git.revert(trial.previous, meta)
        message = (f"revision {trial.revision[:12]} failed within its health window ({reason}); "
                   f"reverted to {str(trial.previous)[:12]}")
        self.events.emit("rollout", message, level="warning", subject=f"git/{trial.revision}",
                         revision=trial.revision, result=rollout.FAILED)
        self.poke_dirty()
        self.wake_worker("rollout revert")
        self.git_wake()  # the next sync says where the fleet stands (halted or not)

    def _pass(self, trial: rollout.Trial, reason: str) -> None:
        local = rollout.Local.of(self.store.get_meta(META), None)
        self.store.set_meta(META, rollout.Local(trial.revision, trial.revision, local.failed,
                                                None).as_dict())
        self.events.emit("rollout", f"revision {trial.revision[:12]} {reason}",
                         subject=f"git/{trial.revision}", revision=trial.revision,
                         result=rollout.SUCCEEDED)
        self.poke_dirty()
        self.git_wake()  # a newer revision may be waiting for this window to end

    def _publish(self, etcd: EtcdSettings, local: rollout.Local) -> None:
        applied = (self.git.status.applied_commit if self.git is not None else None)
        decision = self.decision
        if local.trial is not None:
            result = rollout.APPLYING
        elif decision is not None and decision.revision in local.failed:
            result = rollout.FAILED
        else:
            result = rollout.SUCCEEDED
        settings = self.store.live_document()
        record = {
            "revision": applied, "result": result, "last_good": local.last_good,
            "target": decision.revision if decision else applied,
            "state": decision.action if decision else None,
            "halted": bool(decision and decision.halted),
            "reason": decision.reason if decision else "",
            "os_version": self.os_version,
            "seed": (settings.get("updates") or {}).get("seed"),
            "time": time.time(),
        }
        revisions: dict[str, dict[str, Any]] = {
            commit: {"result": rollout.FAILED, "reason": why}
            for commit, why in local.failed.items()}
        if local.trial is not None:
            revisions[local.trial.revision] = {"result": rollout.APPLYING, "reason": ""}
        elif local.last_good:
            revisions[local.last_good] = {"result": rollout.SUCCEEDED, "reason": ""}
        with self._lock:
            try:
                self._client(etcd).publish(record, revisions)
                self.error = ""
            except Exception as error:
                self.error = f"cannot publish to etcd {etcd.url}: {error}"
                raise
