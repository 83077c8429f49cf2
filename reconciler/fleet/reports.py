"""Rollout reports in etcd: what each host applied and how it went, under the host's lease.

Keys (beside airlock's ``com.coreos.airlock/`` of the reboot slots, so one etcd serves both):

* ``host-reconciler/rollout/hosts/<node-id>``: the host's record (applied revision, result,
  OS version, seed...), for ``reconciler fleet status``;
* ``host-reconciler/rollout/revisions/<commit>/<node-id>``: ``{"id", "result", "reason"}`` per
  revision the host applied, is applying, or failed: what the failure budget counts.

Every key is attached to the daemon's lease (``lease-ttl`` seconds, refreshed on each publish):
a host that dies stops counting after the TTL, and the next daemon of that host publishes its
state again from the store (the store is the truth; etcd is its projection for the fleet).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from reconciler.fleet import etcd as slots_layout
from reconciler.fleet.rollout import RESULTS, Report
from reconciler.fleet.semaphore import Semaphore

PREFIX = "host-reconciler/rollout/"
HOSTS = PREFIX + "hosts/"
REVISIONS = PREFIX + "revisions/"


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def client(url: str, timeout: float = 10.0) -> Any:
    import etcd3gw  # imported here: only a host with settings.coordination.etcd needs it

    parts = urlsplit(url if "//" in url else f"http://{url}")
    return etcd3gw.client(host=parts.hostname, port=parts.port or 2379,
                          protocol=parts.scheme or "http", timeout=timeout)


class RolloutReports:
    """One host's reports, written under its own lease."""

    def __init__(self, url: str, node_id: str, lease_ttl: int = 60):
        self.url, self.node_id, self.lease_ttl = url, node_id, lease_ttl
        self.client = client(url)
        self._lease: Any = None
        self._written: set[str] = set()  # revision keys this daemon wrote (to drop stale ones)

    def publish(self, record: Mapping[str, Any], revisions: Mapping[str, Mapping[str, Any]]
                ) -> None:
        """Write the host's record and one key per revision in ``revisions`` in one etcd
        transaction, under the lease (created, or refreshed); revision keys this daemon wrote
        before and no longer reports are deleted in the same transaction."""
        lease = self._live_lease()
        keys = {f"{REVISIONS}{commit}/{self.node_id}": {"id": self.node_id, **value}
                for commit, value in revisions.items()}
        puts = [{"request_put": {"key": _b64(HOSTS + self.node_id),
                                 "value": _b64(json.dumps({"id": self.node_id, **record})),
                                 "lease": lease.id}}]
        puts += [{"request_put": {"key": _b64(k), "value": _b64(json.dumps(v)),
                                  "lease": lease.id}} for k, v in keys.items()]
        deletes = [{"request_delete_range": {"key": _b64(k)}}
                   for k in sorted(self._written - set(keys))]
        self.client.transaction({"compare": [], "success": puts + deletes, "failure": []})
        self._written = set(keys)

    def _live_lease(self) -> Any:
        if self._lease is not None:
            try:
                if self._lease.refresh() > 0:
                    return self._lease
            except Exception:  # noqa: BLE001 - an expired or unknown lease: take a new one
                pass
        self._lease = self.client.lease(self.lease_ttl)
        return self._lease

    def reports(self, revision: str) -> list[Report]:
        """Every live host's report on ``revision``."""
        found = []
        for value, _meta in self.client.get_prefix(f"{REVISIONS}{revision}/"):
            document = json.loads(value)
            if document.get("result") in RESULTS:
                found.append(Report(str(document["id"]), revision, document["result"]))
        return found

    def withdraw(self) -> None:
        """The host's keys gone at once (a clean stop of a daemon that leaves the fleet is
        not this: a stopping daemon keeps its reports until the lease runs out)."""
        if self._lease is not None:
            self._lease.revoke()
            self._lease = None


def fleet_view(url: str) -> list[dict[str, Any]]:
    """Every live host's record, with the reboot slot it holds (group), sorted by id."""
    etcd = client(url)
    hosts = {}
    for value, _meta in etcd.get_prefix(HOSTS):
        document = json.loads(value)
        hosts[str(document["id"])] = {**document, "reboot_slot": None}
    for holder, group in held_slots(etcd).items():
        hosts.setdefault(holder, {"id": holder, "reboot_slot": None})["reboot_slot"] = group
    return [hosts[h] for h in sorted(hosts)]


def held_slots(etcd: Any) -> dict[str, str]:
    """Holder id -> group, for every group's semaphore in airlock's layout, live holders only
    (a leased holder whose lease ran out holds nothing)."""
    semaphores: dict[str, bytes] = {}
    leases: dict[str, set[str]] = {}
    for value, meta in etcd.get_prefix(slots_layout.PREFIX):
        key = meta["key"].decode() if isinstance(meta["key"], bytes) else str(meta["key"])
        group, _, rest = key[len(slots_layout.PREFIX):].partition("/v1/")
        if rest == "semaphore":
            semaphores[group] = value
        elif rest.startswith("leases/"):
            leases.setdefault(group, set()).add(rest[len("leases/"):])
    held = {}
    for group, raw in semaphores.items():
        parsed = Semaphore.parse(raw, 1)
        for holder in parsed.live(leases.get(group, set()), parsed.total_slots).holders:
            held[holder] = group
    return held
