"""Crash-consistency matrix: SIGKILL the daemon at every step boundary of a pass, then recover.

Each case starts a real daemon with ``RECONCILER_CRASH_AT=<point>`` (``hostcore.faults``),
commits a change that rewrites three files and restarts two services, lets the daemon die at
that point, checks what a crash leaves behind (the old or the new generation, never a mix; each
file one whole version, never ahead of the store), restarts the daemon without the variable and
checks that it converges: every file is the desired one, no temporary file is left, nothing is
owed, status is Ready, and each restart ran exactly once across the crash, after all of its files
were written. The one exception is inherent to restarts recorded *after* they ran: a kill
between a restart command's exit and the store recording it (``after-restart``,
``before-settle``) runs that restart once more, never less (at-least-once).

The services' restart commands append a line (service name and the configuration it saw) to a
log file, so restarts are counted exactly. Host-container recreation points belong to the
container work and are not in this matrix. Updates: image write and GPT table writes are killed
through the same seam at the end of this module (random mid-write kills and kills between
update steps are in ``tests/updates/test_apply.py``). A git fetch is killed mid-pack (a remote
that stalls), an update download mid-fetch (a silent server), a host container's image pull
mid-load and a bootstrap container mid-run, at the very end.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
from pathlib import Path

import pytest

from hostcore.commands import CommandResult
from reconciler.host import open_host
from reconciler.store import Store
from tests.daemon import Daemon, eventually
from tests.faultutil import StallingGitRemote
from tests.scratch import write_renderers
from tests.test_gitops import Fleet, pointer
from tests.updates.simhost import make_sim
from tests.updates.test_gpt import assert_sgdisk_agrees
from updates.partitions import OsDisk

RESTART = """
import os, sys
base = os.environ["CRASH_MATRIX_DIR"]
seen = "|".join(open(base + "/state/root" + p).read().strip() for p in sys.argv[2:])
with open(base + "/restarts.log", "a") as log:
    log.write(f"{sys.argv[1]} {seen}\\n")
"""

METADATA = """
[configuration-files.alpha]
path = "/etc/alpha.conf"
template = "alpha.j2"

[configuration-files.beta]
path = "/etc/beta/beta.conf"
template = "beta.j2"

[configuration-files.common]
path = "/etc/common.conf"
template = "common.j2"
mode = "0600"

[services.alpha]
configuration-files = ["alpha", "common"]
affected-by = ["settings.motd"]
restart-commands = [["{python}", "{restart}", "alpha", "/etc/alpha.conf", "/etc/common.conf"]]
sandbox-safe = true

[services.beta]
configuration-files = ["beta", "common"]
affected-by = ["settings.ntp"]
restart-commands = [["{python}", "{restart}", "beta", "/etc/beta/beta.conf", "/etc/common.conf"]]
sandbox-safe = true
"""

TEMPLATES = {
    "alpha.j2": "motd={{ settings.motd }}\n",
    "beta.j2": "servers={{ settings.ntp['time-servers'] | join(',') }}\n",
    "common.j2": "region={{ settings.aws.region }} motd={{ settings.motd }}\n",
}
FILES = {"alpha": "/etc/alpha.conf", "beta": "/etc/beta/beta.conf", "common": "/etc/common.conf"}
MODES = {"alpha": 0o644, "beta": 0o644, "common": 0o600}
SERVICE_FILES = {"alpha": ("alpha", "common"), "beta": ("beta", "common")}
KEYS = ("settings.motd", "settings.ntp.time-servers", "settings.aws.region")


def settings(tag: str, region: str) -> dict:
    return {"motd": tag, "ntp": {"time-servers": [f"{tag}.example"]}, "aws": {"region": region}}


OLD, NEW = settings("old", "us-east-1"), settings("new", "eu-west-1")


def contents(s: dict) -> dict[str, str]:
    servers = ",".join(s["ntp"]["time-servers"])
    return {
        "alpha": f"motd={s['motd']}\n",
        "beta": f"servers={servers}\n",
        "common": f"region={s['aws']['region']} motd={s['motd']}\n",
    }


def flat(s: dict) -> dict[str, object]:
    return dict(zip(KEYS, (s["motd"], s["ntp"]["time-servers"], s["aws"]["region"]), strict=True))


def restart_line(service: str, s: dict) -> str:
    return f"{service} " + "|".join(contents(s)[f].strip() for f in SERVICE_FILES[service])


# --------------------------------------------------------------------------------- helpers


def start(base: Path, renderers: Path, crash_at: str | None = None) -> Daemon:
    env = {"CRASH_MATRIX_DIR": str(base)}
    if crash_at:
        env["RECONCILER_CRASH_AT"] = crash_at
    return Daemon(base / "state", ["--variant", "aws-dev", "--renderers", str(renderers)], env)


def pass_done(d: Daemon) -> dict:
    """The status once this daemon finished a pass (restored receipts carry no pass number)."""
    status = d.ok("GET", "/status")
    receipt = status["last_receipt"] or {}
    return status if receipt.get("pass") and status["state"] != "Reconciling" else {}


def converged(d: Daemon) -> dict:
    status = pass_done(d)
    if status and status["applied_generation"] == status["live_generation"]:
        return status
    return {}


def commit(d: Daemon, patch: dict) -> None:
    """PATCH and commit_and_apply; the daemon may die before it answers."""
    d.ok("PATCH", "/settings", patch)
    with contextlib.suppress(OSError, http.client.HTTPException):
        d.request("POST", "/tx/commit_and_apply")


def wait_killed(d: Daemon) -> None:
    eventually(lambda: d.process.poll() is not None, timeout=30)
    code = d.stop()
    assert code == -signal.SIGKILL, f"the crash point was never reached (exit {code}):\n" + d.logs()


def read_files(root: Path) -> dict[str, tuple[str, int] | None]:
    found: dict[str, tuple[str, int] | None] = {}
    for name, path in FILES.items():
        target = root / path.lstrip("/")
        found[name] = (
            (target.read_text(), target.stat().st_mode & 0o7777) if target.exists() else None
        )
    return found


def temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp-*"))


def restarts(base: Path) -> list[str]:
    log = base / "restarts.log"
    return log.read_text().splitlines() if log.exists() else []


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    renderers = tmp_path_factory.mktemp("renderers")
    (renderers / "restart.py").write_text(RESTART)
    return write_renderers(renderers, METADATA, TEMPLATES, restart=renderers / "restart.py")


@pytest.fixture(scope="module")
def converged_host(tmp_path_factory, catalog) -> Path:
    """A state dir converged on OLD (built once, copied by each case)."""
    base = tmp_path_factory.mktemp("template")
    d = start(base, catalog)
    try:
        d.ok("PATCH", "/settings", OLD)
        receipt = d.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]
        assert receipt["ok"], receipt
        eventually(lambda: converged(d))
    finally:
        assert d.stop() == 0
    assert {n: f[0] for n, f in read_files(base / "state/root").items() if f} == contents(OLD)
    return base


@pytest.fixture
def host(tmp_path, converged_host) -> Path:
    base = tmp_path / "host"
    shutil.copytree(converged_host, base, symlinks=True)
    (base / "restarts.log").unlink(missing_ok=True)
    return base


# --------------------------------------------------------------------------------- the matrix

POINTS = [
    "before-commit",
    "after-commit",
    "after-owe",
    *(
        f"{when}:{path}"
        for path in FILES.values()
        for when in ("before-file", "before-rename", "after-file")
    ),
    *(
        f"{when}:{service}"
        for service in ("alpha", "beta")
        for when in ("before-restart", "after-restart", "before-settle", "after-settle")
    ),
    "before-receipt#2",  # the first is the (empty) boot pass of the crashing daemon
]
# where the kill lands after a restart command ran and before the store recorded it
RUN_BUT_UNRECORDED = {"after-restart", "before-settle"}


def check_crash_left(base: Path) -> int:
    """What the SIGKILL left: one whole generation, whole files never ahead of the store."""
    with Store(base / "state/store.db") as store:
        generation = store.generation()
        live = {k: v for k, v in store.live().items() if k in KEYS}
    assert live in (flat(OLD), flat(NEW)), f"store holds a mix of generations: {live}"
    committed = live == flat(NEW)
    files = read_files(base / "state/root")
    for name, found in files.items():
        assert found is not None, f"{name} vanished"
        text, mode = found
        assert text in (contents(OLD)[name], contents(NEW)[name]), f"torn {name}: {text!r}"
        assert mode == MODES[name]
        if not committed:
            assert text == contents(OLD)[name], f"{name} is ahead of the store"
    for line in restarts(base):
        service = line.split()[0]
        assert line == restart_line(service, NEW), f"restart saw a half-written config: {line}"
    return generation


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_every_step_boundary(host: Path, catalog: Path, point: str) -> None:
    with Store(host / "state/store.db") as store:
        before = store.generation()
        assert store.owed() == {}

    d = start(host, catalog, crash_at=point)
    try:
        eventually(lambda: pass_done(d))  # its boot pass: nothing to do
        commit(d, NEW)
        wait_killed(d)
    finally:
        d.stop()

    generation = check_crash_left(host)
    assert generation == (before if point == "before-commit" else before + 1)

    d = start(host, catalog)
    try:
        status = eventually(lambda: converged(d), timeout=20)
        if point == "before-commit":  # nothing was committed; the transaction died with it
            assert status["live_generation"] == before and restarts(host) == []
            assert d.ok("GET", "/tx/list") == []
            d.ok("PATCH", "/settings", NEW)
            d.ok("POST", "/tx/commit_and_apply?wait=true")
            status = eventually(lambda: converged(d))
        assert status["state"] == "Ready", status
        assert status["live_generation"] == before + 1
        # one more pass changes nothing and restarts nothing (idempotent after recovery)
        count = len(restarts(host))
        last = status["last_receipt"]["pass"]
        d.ok("POST", "/tx/apply")
        status = eventually(lambda: (s := converged(d)) and s["last_receipt"]["pass"] > last and s)
        assert [
            s for s in status["last_receipt"]["steps"] if s["kind"] in ("file", "service")
        ] == []
        assert len(restarts(host)) == count
    finally:
        assert d.stop() == 0

    root = host / "state/root"
    assert read_files(root) == {n: (contents(NEW)[n], MODES[n]) for n in FILES}
    assert temp_files(root) == [], "a crash left temporary files behind"
    with Store(host / "state/store.db") as store:
        assert store.owed() == {}
        assert {k: v for k, v in store.live().items() if k in KEYS} == flat(NEW)

    lines = restarts(host)
    for line in lines:
        service = line.split()[0]
        assert line == restart_line(service, NEW), f"restart saw an old config: {line}"
    when, _, service = point.partition(":")
    expected = {"alpha": 1, "beta": 1}
    if when in RUN_BUT_UNRECORDED:
        expected[service] = 2  # ran, killed before it was recorded: runs again, never zero
    counts = {s: sum(1 for line in lines if line.split()[0] == s) for s in expected}
    assert counts == expected, lines


class FlakyRunner:
    """Records restarts by service name; fails the services in ``failing`` (once each)."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.failing: set[str] = set()

    def run(self, argv, env, timeout) -> CommandResult:  # noqa: ANN001 - CommandRunner
        service = argv[2]
        if service in self.failing:
            self.failing.discard(service)
            return CommandResult(tuple(argv), 1, "refused", 0.0)
        self.ran.append(service)
        return CommandResult(tuple(argv), 0, "", 0.0)


def test_retry_after_a_failed_pass_restarts_only_what_is_still_owed(tmp_path, catalog) -> None:
    """The same rule in-process: a service that restarted in a failed pass is not restarted
    again by the retry (nor shown in the dry run); the one that failed is."""
    with open_host(tmp_path / "state", variant="aws-dev", renderers=catalog) as host:
        runner = host.reconciler.runner = FlakyRunner()
        host.boot([])
        for patch, failing in ((OLD, set()), (NEW, {"beta"})):
            host.store.add_patch("t", patch, "api:t", host.schema)
            host.store.commit("t", host.schema)
            runner.ran.clear()
            runner.failing = set(failing)
            receipt = host.reconciler.run_pass()
        assert not receipt["ok"] and runner.ran == ["alpha"]
        assert [s["name"] for s in host.dry_run()["services"]] == ["beta"]
        runner.ran.clear()
        assert host.reconciler.run_pass("retry")["ok"]
        assert runner.ran == ["beta"]
        runner.ran.clear()
        assert host.reconciler.run_pass("again")["ok"] and runner.ran == []


# --------------------------------------------------------------------------------- first boot

USER_DATA = """
[settings]
motd = "from user data"
[settings.ntp]
time-servers = ["ud.example"]
[settings.aws]
region = "ap-south-1"
"""
UD = settings("ud", "ap-south-1") | {"motd": "from user data"}


@pytest.mark.parametrize(
    "point",
    ["before-commit", "after-commit", "after-file:*#2", "before-restart:*#2", "before-receipt"],
)
def test_sigkill_during_first_boot(tmp_path: Path, catalog: Path, point: str) -> None:
    """The boot pipeline's commit and first pass: user data is applied once, whole."""
    user_data = tmp_path / "user-data.toml"
    user_data.write_text(USER_DATA)
    state = tmp_path / "host" / "state"
    state.parent.mkdir()
    args = ["--variant", "aws-dev", "--renderers", str(catalog), "--user-data", str(user_data)]
    env = {"CRASH_MATRIX_DIR": str(state.parent)}
    try:  # the boot commit dies before the socket answers, the boot pass after
        wait_killed(Daemon(state, args, env | {"RECONCILER_CRASH_AT": point}))
    except RuntimeError as error:
        assert "exited -9" in str(error)
    with Store(state / "store.db") as store:
        live = {k: v for k, v in store.live().items() if k in KEYS}
        assert live in ({}, flat(UD)), live
        assert (store.get_meta("user-data-applied") is not None) == bool(live)

    d = Daemon(state, args, env)
    try:
        status = eventually(lambda: converged(d), timeout=20)
        assert status["state"] == "Ready" and status["live_generation"] == 1
    finally:
        assert d.stop() == 0
    assert read_files(state / "root") == {n: (contents(UD)[n], MODES[n]) for n in FILES}
    assert temp_files(state / "root") == []
    lines = restarts(state.parent)
    assert sorted(lines) == [restart_line("alpha", UD), restart_line("beta", UD)], lines


# --------------------------------------------------------------------------------- updates

UPDATE_POINTS = [
    "after-gpt-backup#1",  # clearing the inactive set: backup copy written
    "after-gpt-primary#1",
    "image-write:root",  # streamed, not yet fsynced nor verified
    "image-write:hash",
    "after-gpt-backup#2",  # marking the inactive set valid
    "after-gpt-primary#2",
    "after-gpt-backup#3",  # flipping the flags to boot it
    "after-gpt-primary#3",
]


@pytest.mark.parametrize("point", UPDATE_POINTS)
def test_sigkill_during_update(tmp_path: Path, serve, point: str) -> None:
    sim = make_sim(tmp_path, serve)
    sim.publish("1.1.0")
    os.environ["RECONCILER_CRASH_AT"] = point
    try:
        done = sim.updog("update", check=False)
    finally:
        del os.environ["RECONCILER_CRASH_AT"]
    assert done.returncode == -signal.SIGKILL, done.stderr
    with OsDisk(sim.disk, writable=False) as disk:
        # GRUB, the kernel and our reader take the primary copy, valid in every case; between
        # the two copies' writes they differ (sgdisk -v calls that a bad backup CRC) until the
        # next boot rewrites both
        assert disk.read.source == "primary"
    if not point.startswith("after-gpt-backup#"):
        assert_sgdisk_agrees(sim.disk)
    booted = sim.reboot()
    assert_sgdisk_agrees(sim.disk)
    if point == "after-gpt-primary#3":  # the flip is durable: the new, verified set boots
        assert booted == "B" and sim.running_version() == "1.1.0"
        return
    assert booted == "A" and sim.running_version() == "1.0.0"
    sim.updog("update")  # a retry starts over and succeeds
    assert sim.reboot() == "B" and sim.running_version() == "1.1.0"


# --------------------------------------------------------------------------------- git fetch


def _git_processes_in(directory: Path) -> list[int]:
    """Pids of processes working in ``directory`` (a git fetch and its index-pack)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "cwd") == str(directory):
                found.append(int(entry.name))
    return found


def test_sigkill_during_a_git_fetch_then_the_source_recovers_by_itself(tmp_path):
    """systemd's SIGKILL (or any kill) mid-fetch: the fetch child dies with the daemon, the
    stale ``shallow.lock`` it leaves is cleared by the restarted daemon, which converges."""
    fleet = Fleet(tmp_path)
    (fleet.work / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # a pack worth stalling
    fleet.commit("a big blob")
    remote = StallingGitRemote(tmp_path)
    user_data = tmp_path / "ud.toml"
    user_data.write_text(pointer(fleet).replace(fleet.url, remote.url("fleet.git")))
    state = tmp_path / "host"
    try:
        d = Daemon(state, ["--user-data", str(user_data)])
        lock = eventually(lambda: next((state / "git").glob("*/shallow.lock"), None), timeout=30)
        assert d.ok("GET", "/status")["gitops"]["condition"] == "Fetching"
        d.process.kill()  # SIGKILL, the daemon alone: its children must not outlive it
        d.stop()
        eventually(lambda: not _git_processes_in(lock.parent), timeout=10)
        assert lock.exists()  # what the kill left behind
        remote.release()
        again = Daemon(state, ["--user-data", str(user_data)])
        try:
            eventually(lambda: again.ok("GET", "/status")["gitops"]["condition"] == "Synced",
                       timeout=60)
            eventually(lambda: (state / "root/etc/motd").exists()
                       and (state / "root/etc/motd").read_text().startswith("web-1: serving"))
            assert not lock.exists()
            assert any("shallow.lock" in e["data"]["message"] for e in again.ok("GET", "/events"))
        finally:
            assert again.stop() == 0
    finally:
        remote.close()


# --------------------------------------------------------------------------- update download


def _processes(needle: str) -> list[int]:
    """Pids whose command line holds ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace"):
                    found.append(int(entry.name))
    return found


def test_sigkill_during_an_update_download_leaves_no_updog_behind(tmp_path: Path, serve) -> None:
    """An ``updog`` hanging on a silent update server dies with the daemon (SIGKILL), so the
    restarted daemon's refresh is not refused by an orphan holding the update cache's lock."""
    from tests.faultutil import Blackhole
    from tests.updates.test_daemon_updates import start as start_updates
    from tests.updates.test_daemon_updates import user_data as updates_user_data

    sim = make_sim(tmp_path, serve)
    hole = Blackhole()
    silent = updates_user_data(sim)
    silent.write_text(silent.read_text().replace(sim.server.base_url,
                                                 f"http://127.0.0.1:{hole.port}"))
    assert sim.reboot() == "A"
    try:
        d = start_updates(sim, silent)
        eventually(lambda: d.ok("GET", "/status")["updates"]["boot"], timeout=30)
        assert d.request("POST", "/actions/refresh-updates")[0] in (202, 204)
        eventually(lambda: hole.held, timeout=30)  # updog is connected and waiting
        updog = _processes(f"updates.updog --root {sim.root}")
        assert updog
        d.process.kill()
        d.stop()
        eventually(lambda: not any(p in _processes("updates.updog") for p in updog), timeout=10)
    finally:
        hole.close()
    again = start_updates(sim)
    try:
        base = sim.server.base_url  # the real server again (user data applies at first boot)
        again.ok("PATCH", "/settings", {"updates": {"metadata-base-url": f"{base}/metadata/",
                                                    "targets-base-url": f"{base}/targets/"}})
        assert again.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]["ok"]
        assert again.request("POST", "/actions/refresh-updates")[0] in (202, 204)
        status = eventually(lambda: (s := again.request("GET", "/updates/status"))[0] == 200
                            and s[1], timeout=60)
        last = status["most_recent_command"]
        # it reached the real repository (which lists no update yet), no orphan's lock in the way
        assert last["cmd_type"] == "refresh" and "locked" not in last["stderr"], last
        assert "manifest.json" in last["stderr"], last
    finally:
        assert again.stop() == 0


# ----------------------------------------------------------------- host container pull, bootstrap



def test_sigkill_during_a_host_container_pull_then_it_converges_by_itself(tmp_path):
    """SIGKILL while ``podman pull oci-archive:...`` loads a local image archive (in the pass,
    status saying the container is pending): the pull dies with the daemon
    (no orphan holds the engine's storage), status said the container was being pulled, and the
    restarted daemon pulls again and runs it with no manual step."""
    from tests.images import build_image, podman, require_podman, reset_storage

    require_podman()
    source = build_image(tmp_path / "images", "heavy", "v1", ballast=96 << 20)
    state = tmp_path / "host"
    env = {"CONTAINERS_CONF": os.environ["CONTAINERS_CONF"]}
    d = Daemon(state, ["--variant", "aws-dev"], env=env)
    try:
        d.ok("PATCH", "/settings", {"host-containers": {"heavy": {"enabled": True,
                                                                  "source": source}}})
        d.ok("POST", "/tx/commit_and_apply")
        loading = eventually(lambda: [p for p in _processes(str(state / "containers"))
                                      if p in _processes(" pull ")], timeout=60, interval=0.01)
        view = d.ok("GET", "/status")["containers"]["host-containers"].get("heavy", {})
        assert view.get("state") in ("pending", "pulling"), view
        d.process.kill()
        d.stop()
        eventually(lambda: not any(p in _processes(" pull ") for p in loading), timeout=10)
        again = Daemon(state, [], env=env)
        try:
            def running():
                view = again.ok("GET", "/status")["containers"]["host-containers"]
                return view.get("heavy", {}).get("state") == "running"
            eventually(running, timeout=180, interval=0.5)
            assert "heavy" in podman(state / "containers", "ps", "--format", "{{.Names}}")
        finally:
            assert again.stop() == 0, again.logs()
    finally:
        d.stop()
        reset_storage(state / "containers")


def test_sigkill_during_a_bootstrap_container_then_it_runs_again_by_itself(tmp_path):
    """SIGKILL while a ``once`` bootstrap container runs: status said which one was running;
    the restarted daemon removes the leftover, runs it again (at least once, never never) and
    records it, with no manual step."""
    from tests.images import build_image, require_podman, reset_storage
    from tests.test_bootstrap import RUN_USER_DATA, b64, ready, write_user_data

    require_podman()
    image = build_image(tmp_path / "images", "bootscript", "v1", command=RUN_USER_DATA)
    mine = "/.bottlerocket/bootstrap-containers/slow"
    script = f"echo start >> {mine}/runs\nsleep 4\necho end >> {mine}/runs\n"
    user_data = write_user_data(tmp_path / "user-data.toml", {
        "slow": {"source": image, "mode": "once", "user-data": b64(script)}})
    state = tmp_path / "host"
    runs = state / "bootstrap-containers/slow/runs"
    env = {"CONTAINERS_CONF": os.environ["CONTAINERS_CONF"]}
    d = Daemon(state, ["--variant", "aws-dev", "--user-data", str(user_data)], env=env,
               wait=False)
    try:
        eventually(lambda: runs.exists() and runs.read_text() == "start\n", timeout=120,
                   interval=0.05)
        assert d.ok("GET", "/status")["bootstrap"]["running"] == "slow"
        d.process.kill()
        d.stop()
        again = Daemon(state, [], env=env)
        try:
            status = ready(again, "slow")
            assert status["bootstrap"]["containers"]["slow"]["ok"], status["bootstrap"]
            assert status["bootstrap"]["running"] is None
            assert runs.read_text().endswith("start\nend\n")
            assert again.ok("GET", "/settings")["bootstrap-containers"]["slow"]["mode"] == "off"
        finally:
            assert again.stop() == 0, again.logs()
    finally:
        d.stop()
        reset_storage(state / "containers")
