"""`updog check-update` end to end: updog.toml + os-release + a served repository."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.updates.conftest import (
    ARCH,
    VARIANT,
    Env,
    build_release,
    run_updata,
    write_host_root,
)
from updates import updog


def make_host(env: Env, tmp: Path, *, transport: str = "http", seed: int = 1487,
              lock: str = "latest", ignore_waves: bool = False, version: str = "1.0.0") -> Path:
    root = write_host_root(tmp / "host", env.trusted_root, env.base(transport), seed=seed,
                           lock=lock, ignore_waves=ignore_waves)
    (root / "usr/lib").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/os-release").write_text(
        f'NAME=Bottlerocket\nVERSION_ID={version}\nVARIANT_ID="{VARIANT}"\n')
    return root


def updog_run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()  # drop output of earlier steps (updata)
    code = updog.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def publish(env: Env, version: str, **kw) -> None:
    manifest, files = build_release(env.path.parent, version, **kw)
    run_updata("add-targets", env.path, manifest, *files.values())


@pytest.mark.parametrize("transport", ["http", "file"])
def test_check_update_text_and_json(env: Env, tmp_path: Path, capsys, transport: str) -> None:
    root = make_host(env, tmp_path, transport=transport)
    assert updog_run(capsys, "check-update", "--root", root, "--arch", ARCH) == (
        0, f"{VARIANT} 1.1.0\n", "")
    code, out, _ = updog_run(capsys, "--json", "whats", "--root", root, "--arch", ARCH)
    assert code == 0
    obj = json.loads(out)
    assert list(obj) == ["variant", "arch", "version", "max_version", "waves", "images"]
    assert obj["images"]["root"] == "root-1.1.0.lz4"
    assert (root / "var/lib/updog/metadata/timestamp.json").exists()  # persistent cache


def test_telemetry_sent(env: Env, tmp_path: Path, capsys) -> None:
    root = make_host(env, tmp_path, seed=42)
    updog_run(capsys, "check-update", "--root", root, "--arch", ARCH)
    assert all(p.endswith("?seed=42&version=1.0.0") for p in env.server.seen)


def test_no_update_available(env: Env, tmp_path: Path, capsys) -> None:
    root = make_host(env, tmp_path, version="1.1.0")
    assert updog_run(capsys, "check-update", "--root", root, "--arch", ARCH) == (
        1, "", f"No update available: running 1.1.0, the newest release for {VARIANT} {ARCH} "
        "is 1.1.0\n")


def test_all_lists_applicable_updates(env: Env, tmp_path: Path, capsys) -> None:
    publish(env, "1.2.0")
    root = make_host(env, tmp_path, version="1.1.0")
    code, out, err = updog_run(capsys, "check-update", "-a", "--root", root, "--arch", ARCH)
    assert (code, out, err) == (0, "", f"{VARIANT} 1.2.0\n{VARIANT} 1.1.0\n")
    code, out, _ = updog_run(capsys, "check-update", "--all", "-j", "--root", root,
                             "--arch", ARCH)
    assert [u["version"] for u in json.loads(out)] == ["1.2.0", "1.1.0"]
    code, out, _ = updog_run(capsys, "check-update", "--all", "--json", "--root", root,
                             "--arch", "aarch64")
    assert (code, json.loads(out)) == (0, [])


def test_waves_image_and_ignore_waves(env: Env, tmp_path: Path, capsys) -> None:
    start = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    publish(env, "1.2.0", waves="default", start_at=start)  # only seeds < 20 are due
    early = make_host(env, tmp_path / "early", seed=0)
    late = make_host(env, tmp_path / "late", seed=2000)
    args = ("--arch", ARCH)
    assert updog_run(capsys, "check-update", "--root", early, *args)[1] == f"{VARIANT} 1.2.0\n"
    assert updog_run(capsys, "check-update", "--root", late, *args)[1] == f"{VARIANT} 1.1.0\n"
    assert updog_run(capsys, "check-update", "--root", late, "-n", *args)[1] == \
        f"{VARIANT} 1.2.0\n"
    assert updog_run(capsys, "check-update", "--root", late, "--image", "1.2.0", *args)[0] == 1
    assert updog_run(capsys, "check-update", "--root", late, "--ignore-waves", "-i", "1.2.0",
                     *args)[1] == f"{VARIANT} 1.2.0\n"
    config_ignore = make_host(env, tmp_path / "cfg", seed=2000, ignore_waves=True)
    assert updog_run(capsys, "check-update", "--root", config_ignore, *args)[1] == \
        f"{VARIANT} 1.2.0\n"


def test_version_lock_and_regret(env: Env, tmp_path: Path, capsys) -> None:
    publish(env, "1.2.0")
    locked = make_host(env, tmp_path / "locked", lock="v1.1.0", version="1.2.0")
    assert updog_run(capsys, "check-update", "--root", locked, "--arch", ARCH)[1] == \
        f"{VARIANT} 1.1.0\n"
    run_updata("set-max-version", env.manifest, "-m", "1.1.0")  # pull 1.2.0
    run_updata("add-targets", env.path, env.manifest)
    on_bad = make_host(env, tmp_path / "bad", version="1.2.0")
    assert updog_run(capsys, "check-update", "--root", on_bad, "--arch", ARCH)[1] == \
        f"{VARIANT} 1.1.0\n"


def test_attack_is_an_error_exit(env: Env, tmp_path: Path, capsys) -> None:
    root = make_host(env, tmp_path)
    run_updata("resign", env.path, "--expires", "timestamp=-1d")
    code, out, err = updog_run(capsys, "check-update", "--root", root, "--arch", ARCH)
    assert (code, out) == (1, "")
    assert err.startswith("updog: freeze attack: timestamp metadata has expired")


@pytest.mark.parametrize("argv", [
    [], ["check-update", "whats"], ["check-update", "--bogus"], ["check-update", "-t"],
    ["check-update", "--image"], ["check-update", "--image", "v1.0.0"], ["frobnicate"],
    ["check-update", "--log-level", "loud"],
])
def test_usage_errors(capsys, argv: list[str]) -> None:
    code, out, err = updog_run(capsys, *argv)
    assert (code, out) == (1, "")
    assert "USAGE" in err


def test_config_errors(env: Env, tmp_path: Path, capsys) -> None:
    root = make_host(env, tmp_path)
    toml = root / "etc/updog.toml"
    toml.write_text(toml.read_text().replace("ignore_waves = false\n", ""))
    code, _, err = updog_run(capsys, "check-update", "--root", root)
    assert code == 1 and "missing key `ignore_waves`" in err
    root = make_host(env, tmp_path / "b", lock="newest")
    code, _, err = updog_run(capsys, "check-update", "--root", root)
    assert code == 1 and "version_lock" in err


def test_explicit_paths_and_identity_flags(env: Env, tmp_path: Path, capsys) -> None:
    root = make_host(env, tmp_path)
    code, out, _ = updog_run(
        capsys, "check-update", "--config", root / "etc/updog.toml",
        "--trusted-root", root / "usr/share/updog/root.json", "--state-dir", tmp_path / "state",
        "--os-release", tmp_path / "missing", "--version", "1.0.0", "--variant", VARIANT,
        "--arch", ARCH)
    assert (code, out) == (0, f"{VARIANT} 1.1.0\n")
    assert (tmp_path / "state/metadata/root.json").exists()


def test_ab_subcommands_need_an_os_disk(capsys, tmp_path: Path) -> None:
    # (the A/B verbs themselves are tested in test_apply.py)
    code, _, err = updog_run(capsys, "update-apply", "--disk", tmp_path / "missing.img")
    assert code == 1 and "cannot open" in err


def test_console_script_entry_point(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("updog")
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "check-update" in done.stdout
