"""Config rollouts with a failure budget, on a real etcd, real daemons and a real git repository.

Twenty daemons follow one fleet repository; three have seeds in the first wave, seventeen in
the last.
A revision whose health check fails on every host (budget 2) is applied by the first wave only:
they revert to the previous revision and report failure under their lease; the third failure
halts it, so the last wave never applies it, even once its wave has opened, and every host's
status says RolloutHalted with the counts. A fixed revision then rolls out to all twenty, and
``reconciler fleet status`` shows each host's revision, OS version, result and reboot slot.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from reconciler.fleet import protocol
from reconciler.fleet.client import FleetLockClient
from reconciler.fleet.reports import REVISIONS, client
from reconciler.fleet.rollout_watch import META
from reconciler.store import Store
from tests.daemon import Daemon, cli, eventually, ok
from tests.etcd import Etcd, FleetLockServer
from tests.gitutil import git

FIRST_WAVE = {"h1": 1, "h2": 2, "h3": 3}  # seeds of the first wave (Bottlerocket's rule)
# the rest of a 20-host fleet (the fleet), seeds 1100-1900: the last wave
LAST_WAVE = {f"h{n}": 1100 + 50 * (n - 4) for n in range(4, 21)}
BUDGET = 2
LAST_WAVE_DELAY = 90  # seconds after the commit: the first wave fails in ~6 s (unloaded)


def policy(budget: int, window: int, last_wave_after: int) -> str:
    return (f"failure-budget = {budget}\nhealth-window = {window}\n"
            '[[waves]]\nstart_after = "0 seconds"\nfleet_percentage = 50\n'
            f'[[waves]]\nstart_after = "{last_wave_after} seconds"\nfleet_percentage = 100\n')


class Repo:
    def __init__(self, base: Path):
        self.bare, self.work = base / "fleet.git", base / "work"
        self.work.mkdir()
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=base, home=base)
        git("init", "-q", "-b", "main", cwd=self.work, home=base)
        git("remote", "add", "origin", str(self.bare), cwd=self.work, home=base)

    def commit(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            (self.work / name).parent.mkdir(parents=True, exist_ok=True)
            (self.work / name).write_text(text)
        home = self.work.parent
        git("add", "-A", cwd=self.work, home=home)
        git("commit", "-q", "-m", message, cwd=self.work, home=home)
        git("push", "-q", "origin", "main", cwd=self.work, home=home)
        return git("rev-parse", "HEAD", cwd=self.work, home=home)


def motd(text: str, failing_check: bool = False) -> str:
    document = f'[settings]\nmotd = "{text}"\n'
    if failing_check:  # what breaks this revision on every host
        document += '[settings.updates.health-checks.app]\ncommand = ["false"]\n'
    return document


@pytest.fixture
def etcd(tmp_path):
    server = Etcd(tmp_path / "etcd")
    yield server
    server.stop()


def start(tmp_path: Path, repo: Repo, etcd: Etcd, name: str, seed: int) -> Daemon:
    user_data = tmp_path / f"{name}.toml"
    user_data.write_text(
        f'[settings.gitops]\nurl = "file://{repo.bare}"\nref = "main"\npath = "fleet"\n'
        f'host-id = "{name}"\ninterval = 2\n'
        f"[settings.updates]\nseed = {seed}\n"
        f'[settings.coordination]\nnode-id = "{name}"\n'
        f'[settings.coordination.etcd]\nurl = "{etcd.url}"\nlease-ttl = 30\n')
    return Daemon(tmp_path / name, ["--user-data", str(user_data)])


def status(daemon: Daemon) -> dict:
    return daemon.ok("GET", "/status")


def halted(daemon: Daemon) -> dict | None:
    found = [c for c in status(daemon)["conditions"] if c["type"] == "RolloutHalted"]
    return found[0] if found and found[0]["status"] else None


def applied_events(daemon: Daemon, commit: str) -> list[str]:
    return [e["data"]["message"] for e in daemon.ok("GET", "/events")
            if e["data"]["message"].startswith(f"applied {commit[:12]}")]


def fleet_status(etcd: Etcd) -> list[dict]:
    return json.loads(ok(cli("fleet", "status", "--etcd", etcd.url, "--json")))


def test_a_revision_failing_health_halts_within_its_budget_and_a_fix_rolls_out(tmp_path, etcd):
    repo = Repo(tmp_path)
    good = repo.commit({"fleet/common.toml": motd("good 1"),
                        "fleet/rollout.toml": policy(BUDGET, 2, LAST_WAVE_DELAY)}, "good 1")
    seeds = {**FIRST_WAVE, **LAST_WAVE}
    daemons = {}
    try:
        for name, seed in seeds.items():
            daemons[name] = start(tmp_path, repo, etcd, name, seed)
        for daemon in daemons.values():
            eventually(lambda d=daemon: status(d)["gitops"]["applied_commit"] == good, 120)

        bad = repo.commit({"fleet/common.toml": motd("bad", failing_check=True)}, "bad")
        opened = time.time() - 1 + LAST_WAVE_DELAY  # committer time has whole seconds
        for daemon in daemons.values():  # every host: halted, with the counts
            condition = eventually(lambda d=daemon: halted(d), 120)
            assert condition["revision"] == bad and condition["failed"] == BUDGET + 1
            assert f"{BUDGET + 1} hosts failed it (budget {BUDGET})" in condition["reason"]
        assert time.time() < opened, "the first wave took longer than the last wave's delay"
        # past the opening of the last wave, and two syncs more: still not applied there
        eventually(lambda: time.time() > opened + 5, LAST_WAVE_DELAY + 10, interval=0.5)
        for name, daemon in daemons.items():
            rollout = status(daemon)["rollout"]
            assert status(daemon)["gitops"]["applied_commit"] == good, name
            assert (daemon.root / "etc/motd").read_text().startswith("good 1"), name
            if name in FIRST_WAVE:  # applied it, failed it, went back to the last good one
                assert applied_events(daemon, bad), name
                assert "health check(s) failed: app" in rollout["failed"][bad]
                assert rollout["decision"]["action"] == "refused"
            else:
                assert not applied_events(daemon, bad), name
                assert rollout["decision"]["action"] == "halted" and bad not in rollout["failed"]
        reported = sorted(json.loads(v)["id"] for v, _ in
                          client(etcd.url).get_prefix(f"{REVISIONS}{bad}/"))
        assert reported == sorted(FIRST_WAVE)  # at most budget + 1 (the wave in flight)
        assert len(reported) <= BUDGET + len(FIRST_WAVE)

        fixed = repo.commit({"fleet/common.toml": motd("good 2"),
                             "fleet/rollout.toml": policy(BUDGET, 2, 3)}, "fixed")
        for daemon in daemons.values():
            eventually(lambda d=daemon: (status(d)["rollout"]["last_good"] == fixed
                                         and halted(d) is None), 180)
            eventually(lambda d=daemon: (d.root / "etc/motd").read_text().startswith("good 2"))
        view = eventually(lambda: (lambda hosts: hosts if all(
            h["result"] == "succeeded" and h["revision"] == fixed for h in hosts)
            and len(hosts) == len(seeds) else None)(fleet_status(etcd)), 60)
        assert [h["id"] for h in view] == sorted(seeds)
        assert all(h["os_version"] and h["reboot_slot"] is None for h in view)
    finally:
        for daemon in daemons.values():
            daemon.stop()


def test_fleet_status_shows_revision_os_result_and_the_reboot_slot(tmp_path, etcd):
    repo = Repo(tmp_path)
    good = repo.commit({"fleet/common.toml": motd("one"), "fleet/rollout.toml": policy(0, 0, 1)},
                       "one")
    lock = FleetLockServer(etcd, tmp_path / "fleetlock.log", "--slots", "1")
    daemon = start(tmp_path, repo, etcd, "web-1", 5)
    try:
        eventually(lambda: any(h["id"] == "web-1" and h["revision"] == good
                               for h in fleet_status(etcd)), 60)
        FleetLockClient(lock.base, protocol.ClientParams("web-1", "workers")).pre_reboot()
        hosts = fleet_status(etcd)
        assert hosts[0]["reboot_slot"] == "workers" and hosts[0]["result"] == "succeeded"
        table = ok(cli("fleet", "status", "--etcd", etcd.url)).splitlines()
        assert table[0].split() == ["HOST", "REVISION", "OS", "RESULT", "SLOT", "ROLLOUT"]
        assert table[1].split()[:5] == ["web-1", good[:12], hosts[0]["os_version"],
                                        "succeeded", "workers"]
    finally:
        daemon.stop()
        lock.stop()
    with Store(tmp_path / "web-1/store.db") as store:  # the store is the truth, etcd a view
        assert store.get_meta(META)["last_good"] == good
    refused = cli("fleet", "status", "--etcd", "http://127.0.0.1:9")
    assert refused.returncode == 1
    assert refused.stderr.startswith("reconciler fleet status: cannot read etcd "
                                     "http://127.0.0.1:9:")


def sync(daemon: Daemon) -> dict:
    """The sync's status: 200 when applied (or held by the rollout), 422 when refused."""
    status, answer = daemon.request("POST", "/actions/sync?wait=true")
    assert status in (200, 422), (status, answer)
    return answer["sync"]


def test_a_bad_policy_is_refused_whole_and_an_unreachable_etcd_holds_a_rollout(tmp_path):
    from tests.etcd import free_port

    repo = Repo(tmp_path)
    first = repo.commit({"fleet/common.toml": motd("one"), "fleet/rollout.toml": policy(1, 0, 1)},
                        "one")
    dead = Etcd.__new__(Etcd)  # an etcd URL nothing listens on
    dead.url = f"http://127.0.0.1:{free_port()}"
    daemon = start(tmp_path, repo, dead, "h1", 0)
    try:  # a new host takes the fleet's revision at once: nothing to protect yet
        eventually(lambda: status(daemon)["gitops"]["applied_commit"] == first, 60)
        bad = repo.commit({"fleet/common.toml": motd("two"),
                           "fleet/rollout.toml": "failure-budget = -1\n"}, "bad policy")
        answer = sync(daemon)
        assert answer["condition"] == "Invalid" and answer["applied_commit"] == first
        assert answer["reason"].startswith(f"commit {bad[:12]}: fleet/rollout.toml: "
                                           "failure-budget: must be a whole number >= 0")
        held = repo.commit({"fleet/rollout.toml": policy(1, 0, 1)}, "good policy")
        answer = sync(daemon)
        assert answer["applied_commit"] == first and answer["fetched_commit"] == held
        assert f"cannot read the rollout reports from etcd {dead.url}" in answer["reason"]
        assert (daemon.root / "etc/motd").read_text().startswith("one")
    finally:
        daemon.stop()


def test_a_restart_inside_the_health_window_resumes_it_and_reverts(tmp_path):
    repo = Repo(tmp_path)
    flag = tmp_path / "app-healthy"
    flag.touch()
    first = repo.commit({"fleet/common.toml": motd("one"),
                         "fleet/rollout.toml": "health-window = 600\n"}, "one")
    user_data = tmp_path / "h1.toml"
    user_data.write_text(f'[settings.gitops]\nurl = "file://{repo.bare}"\npath = "fleet"\n'
                         "interval = 3600\n")
    daemon = Daemon(tmp_path / "h1", ["--user-data", str(user_data)])
    try:
        eventually(lambda: status(daemon)["gitops"]["applied_commit"] == first, 60)
        second = repo.commit({"fleet/common.toml": motd("two") + (
            f'[settings.updates.health-checks.app]\ncommand = ["test", "-e", "{flag}"]\n')},
            "two, with a health check")
        assert sync(daemon)["applied_commit"] == second
        trial = eventually(lambda: status(daemon)["rollout"]["trial"], 30)
        assert trial["revision"] == second and trial["previous"] == first
    finally:
        daemon.process.kill()  # SIGKILL inside the window: the trial is in the store
        daemon.stop()
    flag.unlink()  # the application breaks while the host is down
    daemon = Daemon(tmp_path / "h1")
    try:
        eventually(lambda: status(daemon)["gitops"]["applied_commit"] == first, 60)
        rollout = status(daemon)["rollout"]
        assert rollout["trial"] is None and rollout["last_good"] == first
        assert rollout["failed"][second].startswith("health check(s) failed: app")
        eventually(lambda: (daemon.root / "etc/motd").read_text().startswith("one"), 30)
        reverted = f"revision {second[:12]} failed within its health window"
        assert any(e["data"]["message"].startswith(reverted) for e in daemon.ok("GET", "/events"))
    finally:
        daemon.stop()


def test_reports_live_under_the_hosts_lease(tmp_path, etcd):
    from reconciler.fleet.reports import HOSTS, RolloutReports

    one, two = "1" * 40, "2" * 40
    reports = RolloutReports(etcd.url, "h1", lease_ttl=5)
    reports.publish({"revision": one, "result": "applying"},
                    {one: {"result": "applying", "reason": ""}})
    assert [(r.host, r.result) for r in reports.reports(one)] == [("h1", "applying")]
    reports.publish({"revision": two, "result": "succeeded"},  # the stale key goes
                    {two: {"result": "succeeded", "reason": ""}})
    assert reports.reports(one) == [] and [r.result for r in reports.reports(two)] == [
        "succeeded"]
    # the host stops refreshing its lease (it died): its reports stop counting after the TTL
    eventually(lambda: RolloutReports(etcd.url, "other").reports(two) == [], timeout=30,
               interval=0.5)
    assert client(etcd.url).get_prefix(HOSTS) == []
