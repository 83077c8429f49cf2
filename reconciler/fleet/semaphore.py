"""A counting semaphore with recursive locking and ownership, over plain data (pure).

The stored form is airlock's, ``{"total_slots": N, "holders": [sorted ids]}``, so that airlock
and our server can read each other's keys. What airlock lacks (coreos/airlock#81: a dead host
holds its slot forever) is the set of *live* holders, passed in from the leases: a holder
whose lease has expired is dropped before anyone is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Semaphore:
    total_slots: int
    holders: tuple[str, ...] = ()
    leased: tuple[str, ...] = ()  # holders that took their slot under a lease (ours, not airlock's)

    @classmethod
    def parse(cls, raw: bytes | None, slots: int) -> Semaphore:
        if raw is None:
            return cls(slots)
        document = json.loads(raw)
        return cls(
            int(document["total_slots"]),
            tuple(sorted(document.get("holders") or ())),
            tuple(sorted(document.get("leased") or ())),
        )

    def dump(self) -> bytes:
        """airlock's document; airlock ignores the extra ``leased`` list."""
        return json.dumps({"total_slots": self.total_slots, "holders": sorted(self.holders),
                           "leased": sorted(self.leased)}).encode()

    def live(self, alive: Iterable[str], slots: int) -> Semaphore:
        """Without leased holders whose lease has expired, with the configured slot count.

        A holder written by airlock (no lease) is kept: it can only be released by itself.
        """
        alive = set(alive)
        gone = {h for h in self.leased if h not in alive}
        return Semaphore(
            slots,
            tuple(h for h in self.holders if h not in gone),
            tuple(h for h in self.leased if h not in gone),
        )

    def lock(self, holder: str) -> Semaphore | None:
        """With ``holder`` holding a slot under a lease (recursive), or None when full."""
        if holder in self.holders:
            return self
        if len(self.holders) >= self.total_slots:
            return None
        return Semaphore(self.total_slots, tuple(sorted((*self.holders, holder))),
                         tuple(sorted((*self.leased, holder))))

    def unlock(self, holder: str) -> Semaphore:
        return Semaphore(self.total_slots, tuple(h for h in self.holders if h != holder),
                         tuple(h for h in self.leased if h != holder))
