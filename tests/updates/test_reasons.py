"""Every "no update" has a typed reason: updog check-update, the pure `explain`, the API status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.updates.conftest import ARCH, VARIANT, Env, run_updata
from tests.updates.test_updog_cli import make_host, publish, updog_run
from updates.manifest import Images, Manifest, Update
from updates.selection import HostPolicy, explain
from updates.semver import Version
from updates.timefmt import format_time, parse_time
from updates.waves import place

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
V = Version.parse


def upd(version: str, max_version: str | None = None, waves=None) -> Update:
    return Update(VARIANT, ARCH, V(version), V(max_version or version),
                  Images("b", "r", "h"), waves or {})


def host(version: str, *, lock: str | None = None, seed: int = 1000) -> HostPolicy:
    return HostPolicy(VARIANT, ARCH, V(version), seed, V(lock) if lock else None)


def issue_waves(now: datetime) -> dict[int, datetime]:
    return {0: now - timedelta(hours=2), 512: now - timedelta(hours=1),
            1536: now + timedelta(hours=1)}


def test_wave_reason_names_the_wave_and_when_it_opens() -> None:
    m = Manifest((upd("1.1.0", waves=issue_waves(NOW)),))
    reason = explain(m, host("1.0.0"), NOW)
    opens = place(issue_waves(NOW), 1000).ready_at
    assert reason.kind == "wave"
    assert reason.detail["wave_start_seed"] == 512 and reason.detail["wave_end_seed"] == 1536
    assert reason.detail["opens_at"] == format_time(opens) and opens > NOW
    assert "wave 512..1536" in reason.message and format_time(opens) in reason.message
    assert explain(m, host("1.0.0"), opens) is None  # and then it is chosen


def test_other_reasons() -> None:
    assert explain(Manifest((upd("1.1.0"),)), host("1.1.0"), NOW).kind == "up-to-date"
    m = Manifest((upd("1.1.0"), upd("1.2.0", "1.1.0")))
    assert explain(m, host("1.1.0", lock="1.1.0"), NOW).kind == "version-lock"
    assert "no such release" in explain(m, host("1.0.0", lock="1.5.0"), NOW).message
    ceiling = explain(Manifest((upd("1.2.0", "1.1.0"),)), host("1.1.0"), NOW)
    assert ceiling.kind == "max-version" and ceiling.detail["max_version"] == "1.1.0"
    other = HostPolicy("aws-k8s-1.30", ARCH, V("1.0.0"), 1)
    assert explain(m, other, NOW).kind == "no-release"
    assert explain(m, host("1.0.0"), NOW) is None


def write_policy(path: Path, now: datetime) -> Path:
    times = issue_waves(now)
    path.write_text("".join(
        f'[[waves]]\nstart_after = "{format_time(times[bound])}"\nfleet_percentage = {pct}\n'
        for bound, pct in ((0, 25), (512, 75), (1536, 100))))
    return path


def test_updog_check_update_says_which_wave_and_when(env: Env, tmp_path: Path,
                                                     capsys) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    publish(env, "1.2.0")
    run_updata("set-waves", env.manifest, "-f", VARIANT, "-a", ARCH, "-v", "1.2.0",
               "-w", write_policy(tmp_path / "waves.toml", now))
    run_updata("add-targets", env.path, env.manifest)
    root = make_host(env, tmp_path, seed=1000, version="1.1.0")
    code, out, err = updog_run(capsys, "check-update", "--root", root, "--arch", ARCH)
    assert code == 1 and out == ""
    assert err.startswith("No update available: 1.2.0 is in wave 512..1536")
    assert "for seed 1000 it opens at " in err
    opens = parse_time(err.rsplit("opens at ", 1)[1].strip())
    assert now < opens < now + timedelta(hours=1)
    code, out, _ = updog_run(capsys, "check-update", "--all", "--json", "--with-reason",
                             "--root", root, "--arch", ARCH)
    found = json.loads(out)
    assert [u["version"] for u in found["updates"]] == ["1.1.0"]
    assert found["reason"]["kind"] == "wave" and found["reason"]["seed"] == 1000
