"""Reboot slots in etcd: airlock's semaphore key, plus one leased key per holder.

Keys, per group ``G`` (airlock's prefix, so that the two can share an etcd):

* ``com.coreos.airlock/groups/G/v1/semaphore``: the :class:`Semaphore` document;
* ``com.coreos.airlock/groups/G/v1/leases/<id>``: ``{"id", "lease", "since"}``, attached to an
  etcd lease of ``lease_ttl`` seconds. When the lease expires (the host died, or never came back
  from its reboot), etcd deletes the key and the next lock drops that holder.

Every change is one etcd transaction comparing the semaphore's value with the one it was computed
from (or its absence), so two servers, or two requests to one, never both take the last slot.
A lock refreshes the holder's lease (a recursive lock is Zincati's retry), so a host that keeps
asking keeps its slot; an unlock deletes the key in the same transaction.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from reconciler.fleet.semaphore import Semaphore

PREFIX = "com.coreos.airlock/groups/"
_RETRIES = 20


def semaphore_key(group: str) -> str:
    return f"{PREFIX}{group}/v1/semaphore"


def leases_prefix(group: str) -> str:
    return f"{PREFIX}{group}/v1/leases/"


def _b64(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return base64.b64encode(data).decode()


class Contention(Exception):
    """The semaphore kept changing under us (many concurrent writers); try again later."""


@dataclass(frozen=True)
class Holder:
    id: str
    ttl: int | None  # seconds left on its lease; None: an airlock holder without one


@dataclass(frozen=True)
class Outcome:
    granted: bool
    semaphore: Semaphore


class EtcdSlots:
    """The slots of every group, in the etcd at ``url`` (its v3 JSON gateway)."""

    def __init__(self, url: str, lease_ttl: int = 900, timeout: float = 10.0):
        from urllib.parse import urlsplit

        import etcd3gw  # imported here: only a fleet lock server or an etcd strategy needs it

        parts = urlsplit(url)
        self.url = url
        self.lease_ttl = lease_ttl
        self.client = etcd3gw.client(host=parts.hostname, port=parts.port or 2379,
                                     protocol=parts.scheme or "http", timeout=timeout)

    def _read(self, group: str) -> tuple[bytes | None, dict[str, dict[str, Any]]]:
        found = self.client.get(semaphore_key(group))
        raw = found[0] if found else None
        leases = {}
        for value, _meta in self.client.get_prefix(leases_prefix(group)):
            document = json.loads(value)
            leases[document["id"]] = document
        return raw, leases

    def _swap(self, group: str, raw: bytes | None, new: Semaphore,
              puts: list[dict[str, Any]], deletes: list[str]) -> bool:
        key = _b64(semaphore_key(group))
        compare = (
            {"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}
            if raw is None
            else {"key": key, "result": "EQUAL", "target": "VALUE", "value": _b64(raw)}
        )
        success = [{"request_put": {"key": key, "value": _b64(new.dump())}}, *puts]
        success += [{"request_delete_range": {"key": _b64(k)}} for k in deletes]
        result = self.client.transaction({"compare": [compare], "success": success,
                                          "failure": []})
        return bool(result.get("succeeded"))

    def lock(self, group: str, holder: str, slots: int) -> Outcome:
        """RecursiveLock: a slot for ``holder`` (refreshing its lease), or not granted."""
        for _ in range(_RETRIES):
            raw, leases = self._read(group)
            current = Semaphore.parse(raw, slots).live(leases, slots)
            if holder in current.holders:  # recursive: Zincati asking again
                if holder in leases:
                    self._lease(int(leases[holder]["lease"])).refresh()
                return Outcome(True, current)
            taken = current.lock(holder)
            if taken is None:
                return Outcome(False, current)
            lease = self.client.lease(self.lease_ttl)
            record = {"id": holder, "lease": lease.id, "since": time.time()}
            put = {"request_put": {"key": _b64(leases_prefix(group) + holder),
                                   "value": _b64(json.dumps(record)), "lease": lease.id}}
            if self._swap(group, raw, taken, [put], []):
                return Outcome(True, taken)
            lease.revoke()
        raise Contention(f"the semaphore of group {group!r} changed {_RETRIES} times in a row")

    def unlock(self, group: str, holder: str, slots: int) -> Outcome:
        """UnlockIfHeld: ``holder``'s slot given back (success too when it held none)."""
        for _ in range(_RETRIES):
            raw, leases = self._read(group)
            parsed = Semaphore.parse(raw, slots)
            if holder not in parsed.holders and holder not in leases:
                return Outcome(True, parsed.live(leases, slots))
            freed = parsed.live(leases, slots).unlock(holder)
            if self._swap(group, raw, freed, [], [leases_prefix(group) + holder]):
                if holder in leases:
                    self._lease(int(leases[holder]["lease"])).revoke()
                return Outcome(True, freed)
        raise Contention(f"the semaphore of group {group!r} changed {_RETRIES} times in a row")

    def holders(self, group: str, slots: int) -> tuple[Semaphore, list[Holder]]:
        raw, leases = self._read(group)
        current = Semaphore.parse(raw, slots).live(leases, slots)
        found = []
        for holder in current.holders:
            if holder not in leases:  # airlock's: no lease
                found.append(Holder(holder, None))
                continue
            ttl = self._ttl(int(leases[holder]["lease"]))
            if ttl is not None:  # None: given back or expired since the read
                found.append(Holder(holder, ttl))
        live = {h.id for h in found}
        return Semaphore(current.total_slots, tuple(h for h in current.holders if h in live),
                         tuple(h for h in current.leased if h in live)), found

    def _ttl(self, lease_id: int) -> int | None:
        """Seconds left on a lease; None once it is gone (etcd's JSON gateway then leaves out
        the zero or negative TTL, which etcd3gw reads as a KeyError)."""
        try:
            ttl = self._lease(lease_id).ttl()
        except KeyError:
            return None
        return ttl if ttl > 0 else None

    def _lease(self, lease_id: int):
        from etcd3gw.lease import Lease

        return Lease(lease_id, self.client)
