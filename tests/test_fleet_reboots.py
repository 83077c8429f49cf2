"""A fleet of 20 real daemons updates itself through 2 reboot slots (issue 16, Must show 1).

Real parts only: etcd (Debian's etcd-server) on loopback, ``fleetlock serve`` on it, a TUF
repository built by ``updata`` and served on 127.0.0.1, and per host a GPT disk image with the
A/B sets and a ``reconciler serve --disk`` daemon. Each daemon refreshes, prepares and activates
1.1.0 by itself (``settings.updates.automatic``), then, with ``automatic-reboot``, takes a slot
before rebooting; ``tests/fleet.py`` plays the machines (power cycle, bootloader). What held a
slot when is read afterwards from etcd's own history (every revision of the group's keys), not
from the hosts' word.

One host dies (SIGKILL) holding its slot: etcd frees the slot when the holder's lease expires,
which the history shows as the lease key deleted in a revision of its own (a steady-state
deletes it in the same transaction that rewrites the semaphore). Brought back, it boots into
its activated update like the others.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import pytest

from reconciler.fleet.etcd import EtcdSlots, leases_prefix, semaphore_key
from reconciler.fleet.reboots import SLOT_META
from reconciler.store import Store
from tests.daemon import eventually
from tests.etcd import Etcd, FleetLockServer, history
from tests.fleet import ASKED, RELEASED, Fleet, FleetHost

# The lease outlasts a reboot even on a crowded machine: a healthy host that lost its slot to
# expiry while rebooting would let a third host in (checked below).
HOSTS, SLOTS, LEASE_TTL = 20, 2, 120
GROUP = "default"
# 40 daemon starts and 60 updog runs: minutes on a 2-core machine, more when it is shared
pytestmark = pytest.mark.timeout(1800)


def test_twenty_hosts_update_through_two_reboot_slots(tmp_path: Path) -> None:
    etcd = Etcd(tmp_path / "etcd")
    lock = FleetLockServer(etcd, tmp_path / "fleetlock.log", "--slots", str(SLOTS),
                           "--lease-ttl", str(LEASE_TTL))
    fleet = Fleet(tmp_path, HOSTS, lock.base, retry_interval=2.0)
    victim = fleet.hosts[0]
    deadline = time.monotonic() + 1500
    died = threading.Event()
    etcd_view = EtcdSlots(etcd.url)
    try:
        fleet.publish("1.1.0")

        def dies_holding_its_slot(host: FleetHost) -> None:
            host.boot()
            eventually(lambda: host.log_has(ASKED), timeout=600, interval=0.2)
            assert host.name in lock.holders(GROUP)  # it took a slot before "rebooting"
            host.kill()
            died.set()
            # nothing gives the slot back: the lease expires (well within the test's wait).
            # Waited for until etcd has deleted the lease key: the server stops listing a holder
            # whose TTL has run out, which on a loaded machine can be seconds before etcd
            # revokes the lease; a host back by then would give the key back itself.
            lease_key = leases_prefix(GROUP) + host.name
            eventually(lambda: host.name not in lock.holders(GROUP)
                       and not etcd_view.client.get(lease_key),
                       timeout=LEASE_TTL * 4, interval=0.5)
            host.boot()  # the machine comes back, on its activated update
            eventually(lambda: host.log_has(RELEASED), timeout=300, interval=0.2)

        def updates(host: FleetHost) -> None:
            if host is victim:
                dies_holding_its_slot(host)
            else:
                host.boot()
                host.follow(deadline)

        fleet.each(updates)
        assert died.is_set()

        # -- every host ends on the new version, its boot marked, no slot held
        for host in fleet.hosts:
            assert host.daemon is not None
            assert host.daemon.ok("GET", "/os")["version_id"] == "1.1.0", host.name
            assert host.sim.running_version() == "1.1.0", host.name
            assert host.sim.flags()["B"].successful, host.name
            status = host.daemon.ok("GET", "/status")
            assert status["updates"]["boot"]["marked_successful"], (host.name, status)
            assert status["coordination"]["held"] is None, host.name
        assert lock.holders(GROUP) == []
    finally:
        fleet.stop()
        lock.stop()
        states = history(etcd.url, f"com.coreos.airlock/groups/{GROUP}/v1/")
        etcd.stop()
    for host in fleet.hosts:
        with Store(host.sim.state / "store.db") as store:
            assert store.get_meta(SLOT_META) is None, host.name

    # -- from etcd's history: never more than 2 holders, every host held one once
    holders_at = []
    for revision, keys in states:
        leased = {k.removeprefix(leases_prefix(GROUP)) for k in keys
                  if k.startswith(leases_prefix(GROUP))}
        semaphore = keys.get(semaphore_key(GROUP))
        listed = json.loads(semaphore[0])["holders"] if semaphore else []
        assert len(leased) <= SLOTS and len(listed) <= SLOTS, (revision, leased, listed)
        holders_at.append((revision, leased, semaphore[1] if semaphore else None))
    ever = set().union(*(leased for _, leased, _ in holders_at))
    assert ever == {h.name for h in fleet.hosts}
    assert max(len(leased) for _, leased, _ in holders_at) == SLOTS  # both slots were used

    # -- how each slot was given back: by steady-state (the same transaction rewrote the
    # semaphore), except the dead host's, deleted by etcd alone when its lease expired
    freed_by_expiry = set()
    for (_, before, _), (revision, after, semaphore_mod) in itertools.pairwise(holders_at):
        for name in before - after:
            if semaphore_mod != revision:
                freed_by_expiry.add(name)
    assert freed_by_expiry == {victim.name}, f"slots lost to lease expiry: {freed_by_expiry}"
    # hosts were refused (the slots were full) and asked again until they got one
    assert any(h.timeline.waited for h in fleet.hosts[1:])
    fleetlock_log = (tmp_path / "fleetlock.log").read_text()
    released = [json.loads(x)["id"] for x in fleetlock_log.splitlines()
                if '"slot released"' in x]
    # one steady-state per host, after its new boot (the victim's once it came back)
    assert sorted(released) == sorted(h.name for h in fleet.hosts)
