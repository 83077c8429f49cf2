"""Reboot slots: the FleetLock protocol as Zincati speaks it, served from etcd with leases."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import pytest

from reconciler.fleet import protocol
from reconciler.fleet.client import FleetLockClient, LockRejection
from reconciler.fleet.etcd import EtcdSlots, semaphore_key
from reconciler.fleet.semaphore import Semaphore
from tests.daemon import REPO, eventually
from tests.etcd import Etcd, FleetLockServer


@pytest.fixture
def etcd(tmp_path):
    server = Etcd(tmp_path / "etcd")
    yield server
    server.stop()


@pytest.fixture
def fleetlock(etcd, tmp_path):
    """``fleetlock serve`` as a process: 2 slots per group, a 2-second lease."""
    server = FleetLockServer(etcd, tmp_path / "fleetlock.log", "--slots", "2", "--group",
                             "solo=1", "--lease-ttl", "2")
    yield server.base
    server.stop()


def zincati(base: str, node: str, group: str, api: str = "pre-reboot"):
    """One request exactly as Zincati's ``src/fleet_lock`` sends it: POST to the base URL
    joined with ``v1/<api>``, the protocol header, a pretty-printed body, no Content-Type."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        if api == "holders":
            connection.request("GET", f"{parts.path}v1/holders?group={group}")
        else:
            body = json.dumps({"client_params": {"id": node, "group": group}}, indent=2)
            connection.request("POST", f"{parts.path}v1/{api}", body=body.encode(),
                               headers={"fleet-lock-protocol": "true"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


# --- pure ---------------------------------------------------------------------------------


def test_semaphore_is_recursive_owned_and_counted():
    empty = Semaphore(2)
    one = empty.lock("a")
    assert one.holders == ("a",) and one.lock("a") == one  # recursive
    two = one.lock("b")
    assert two.lock("c") is None  # full
    assert two.unlock("c") == two  # only the holder unlocks
    assert two.unlock("a").lock("c").holders == ("b", "c")


def test_expired_leases_free_slots_but_airlock_holders_stay():
    airlock = Semaphore.parse(b'{"total_slots": 2, "holders": ["old"]}', 2)
    ours = airlock.lock("a")
    assert ours.leased == ("a",)
    assert ours.live(alive=[], slots=2).holders == ("old",)  # a's lease is gone
    assert ours.live(alive=["a"], slots=3) == Semaphore(3, ("a", "old"), ("a",))


def test_protocol_parsing():
    good = protocol.parse_request({"fleet-lock-protocol": "true"},
                                  b'{"client_params": {"id": "n1", "group": "workers"}}')
    assert good == protocol.ClientParams("n1", "workers")
    assert protocol.parse_request({"fleet-lock-protocol": "true"},
                                  b'{"client_params": {"id": "n1"}}').group == "default"
    for headers, body, kind in (
        ({}, b'{"client_params": {"id": "n"}}', "bad_request"),
        ({"fleet-lock-protocol": "yes"}, b'{"client_params": {"id": "n"}}', "bad_request"),
        ({"fleet-lock-protocol": "true"}, b"nope", "bad_request"),
        ({"fleet-lock-protocol": "true"}, b'{"client_params": {"id": ""}}',
         "invalid_client_identity"),
        ({"fleet-lock-protocol": "true"}, b'{"client_params": {"id": "n", "group": "a b"}}',
         "invalid_client_identity"),
    ):
        with pytest.raises(protocol.ProtocolError) as caught:
            protocol.parse_request(headers, body)
        assert caught.value.kind == kind and caught.value.status == 400


# --- the server, as Zincati sees it ---------------------------------------------------------


def test_zincati_takes_and_gives_back_slots(fleetlock, etcd):
    assert zincati(fleetlock, "n1", "workers")[0] == 200
    assert zincati(fleetlock, "n2", "workers")[0] == 200
    status, body = zincati(fleetlock, "n3", "workers")
    assert status == 409
    assert body["kind"] == "failed_lock_semaphore_full" and "n1, n2" in body["value"]
    assert zincati(fleetlock, "n1", "workers")[0] == 200  # recursive: still n1's
    assert zincati(fleetlock, "n1", "workers", "steady-state")[0] == 200
    assert zincati(fleetlock, "n3", "workers")[0] == 200
    assert zincati(fleetlock, "nobody", "workers", "steady-state")[0] == 200  # UnlockIfHeld
    assert zincati(fleetlock, "x", "solo")[0] == 200
    assert zincati(fleetlock, "y", "solo")[0] == 409  # --group solo=1
    # airlock's layout in etcd
    stored = EtcdSlots(etcd.url).client.get(semaphore_key("workers"))[0]
    assert json.loads(stored)["holders"] == ["n2", "n3"]
    assert json.loads(stored)["total_slots"] == 2


def test_refusals_follow_the_protocol(fleetlock):
    parts = urlsplit(fleetlock)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("POST", "/v1/pre-reboot", body=b'{"client_params": {"id": "n"}}')
    response = connection.getresponse()  # no fleet-lock-protocol header
    assert response.status == 400
    assert json.loads(response.read())["kind"] == "bad_request"
    connection.close()
    status, body = zincati(fleetlock, "n", "bad group!")
    assert status == 400 and body["kind"] == "invalid_client_identity"


def test_a_dead_holder_frees_its_slot_after_the_lease(fleetlock):
    assert zincati(fleetlock, "dies", "solo")[0] == 200
    assert zincati(fleetlock, "waits", "solo")[0] == 409
    # "dies" never asks again: its 2-second lease expires and etcd drops it
    eventually(lambda: zincati(fleetlock, "waits", "solo")[0] == 200, timeout=15, interval=0.5)
    status, body = zincati(fleetlock, "", "solo", "holders")
    assert [h["id"] for h in body["holders"]] == ["waits"]
    assert 0 < body["holders"][0]["lease_ttl"] <= 2


def test_our_client(fleetlock):
    one = FleetLockClient(fleetlock, protocol.ClientParams("c1", "solo"))
    two = FleetLockClient(fleetlock, protocol.ClientParams("c2", "solo"))
    one.pre_reboot()
    with pytest.raises(LockRejection) as caught:
        two.pre_reboot()
    assert caught.value.kind == "failed_lock_semaphore_full" and caught.value.status == 409
    one.steady_state()
    two.pre_reboot()


def test_no_two_hosts_take_the_last_slot(etcd):
    """Two servers on one etcd, 20 hosts at once, 2 slots: exactly 2 granted."""
    servers = [EtcdSlots(etcd.url, lease_ttl=60), EtcdSlots(etcd.url, lease_ttl=60)]
    granted: list[str] = []
    barrier = threading.Barrier(20)

    def host(n: int) -> None:
        barrier.wait()
        if servers[n % 2].lock("race", f"h{n}", 2).granted:
            granted.append(f"h{n}")

    threads = [threading.Thread(target=host, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 2
    semaphore, holders = servers[0].holders("race", 2)
    assert sorted(semaphore.holders) == sorted(granted)


def test_fleetlock_cli_refuses_bad_flags():
    done = subprocess.run([sys.executable, "-m", "reconciler.fleet.server", "serve", "--group",
                           "x=0"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "expected NAME=SLOTS" in done.stderr
    done = subprocess.run([sys.executable, "-m", "reconciler.fleet.server", "--help"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and "FleetLock" in done.stdout


def test_holders_leaves_out_a_lease_gone_since_the_read(etcd):
    """GET /v1/holders while a holder gives its slot back: its lease is gone between reading
    the keys and asking etcd for the lease's TTL (found by the 20-host fleet test: a 500)."""

    class GivenBackMeanwhile(EtcdSlots):
        def _read(self, group):
            raw, leases = super()._read(group)
            for record in leases.values():
                self._lease(int(record["lease"])).revoke()
            return raw, leases

    EtcdSlots(etcd.url, lease_ttl=60).lock("race", "a", 2)
    semaphore, found = GivenBackMeanwhile(etcd.url).holders("race", 2)
    assert found == [] and semaphore.holders == ()
