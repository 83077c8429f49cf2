"""The TUF client against real repositories built by updata, over HTTP and file://.

Each attack must be refused with its own error class, and the cache must keep the last
metadata it verified (the refused file never replaces the trusted one).
"""

from __future__ import annotations

import io
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from tests.updates.conftest import Env, cache_state, run_updata
from updates.errors import (
    EndlessDataError,
    FreezeError,
    LockedError,
    MixAndMatchError,
    RepositoryUnavailableError,
    RollbackError,
    SignatureError,
    TamperedTargetError,
    TargetNotFoundError,
)
from updates.lock import FileLock
from updates.manifest import parse_manifest

TRANSPORTS = ["http", "file"]


def refreshed(env: Env, cache: Path, transport: str = "http") -> dict[str, int]:
    with env.client(cache, transport) as c:
        c.refresh()
        return c.trusted_versions()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_found_and_images_downloaded(env: Env, tmp_path: Path, transport: str) -> None:
    cache = tmp_path / "cache"
    with env.client(cache, transport, seed="1487", version="1.0.0") as c:
        c.refresh()
        manifest = parse_manifest(c.read_target("manifest.json"))
        (update,) = manifest.updates
        assert str(update.version) == "1.1.0"
        for kind in ("boot", "root", "hash"):
            name = getattr(update.images, kind)
            dest = c.download_target(c.get_target(name), tmp_path / "out" / name)
            assert dest.read_bytes() == env.images[kind].read_bytes()
            assert c.is_cached(c.get_target(name), dest)
        assert c.trusted_versions() == {"root": 1, "timestamp": 2, "snapshot": 2, "targets": 2}
    assert not list((tmp_path / "out").glob(".*part"))


def test_telemetry_query_parameters_on_every_request(env: Env, tmp_path: Path) -> None:
    with env.client(tmp_path / "cache", seed="1487", version="1.0.0") as c:
        c.read_target("manifest.json")
    assert env.server.seen[0] == "/metadata/2.root.json?seed=1487&version=1.0.0"
    assert all(p.endswith("?seed=1487&version=1.0.0") for p in env.server.seen)
    assert any(p.startswith("/targets/") and ".manifest.json?" in p for p in env.server.seen)


def test_query_parameters_sorted_by_name(env: Env, tmp_path: Path) -> None:
    with env.client(tmp_path / "c", version="1.0.0", target="1.1.0", seed="7",
                    migrations="a,manifest.json") as c:
        c.refresh()
    assert env.server.seen[0].endswith(
        "?migrations=a%2Cmanifest.json&seed=7&target=1.1.0&version=1.0.0")


def test_missing_target_is_reported(env: Env, tmp_path: Path) -> None:
    with env.client(tmp_path / "cache") as c, pytest.raises(TargetNotFoundError):
        c.get_target("nope.lz4")


def test_persistent_cache_survives_runs_and_works_offline_for_verification(
    env: Env, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    assert refreshed(env, cache)["timestamp"] == 2
    run_updata("resign", env.path)
    assert refreshed(env, cache)["timestamp"] == 3
    assert (cache / "root.json").is_symlink()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rollback_refused_and_cache_kept(env: Env, tmp_path: Path, transport: str) -> None:
    cache = tmp_path / "cache"
    old_ts = env.meta("timestamp.json").read_bytes()
    run_updata("resign", env.path)
    refreshed(env, cache, transport)
    before = cache_state(cache)
    env.meta("timestamp.json").write_bytes(old_ts)  # replay the older, validly signed file
    with env.client(cache, transport) as c, pytest.raises(RollbackError, match="older"):
        c.refresh()
    assert cache_state(cache) == before
    # A cache-less client cannot tell: the persistent cache is what catches this.
    assert refreshed(env, tmp_path / "fresh", transport)["timestamp"] == 2


def test_snapshot_version_rollback_refused(env: Env, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    refreshed(env, cache)
    before = cache_state(cache)
    repo = env.repo
    repo.md["timestamp"].signed.version += 10  # newer timestamp naming an older snapshot
    repo.md["timestamp"].signed.snapshot_meta.version = 1
    env.meta("timestamp.json").write_bytes(repo._sign("timestamp"))
    with env.client(cache) as c, pytest.raises(RollbackError):
        c.refresh()
    assert cache_state(cache) == before


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_freeze_refused(env: Env, tmp_path: Path, transport: str) -> None:
    cache = tmp_path / "cache"
    refreshed(env, cache, transport)
    before = cache_state(cache)
    run_updata("resign", env.path, "--expires", "timestamp=-1d")
    with env.client(cache, transport) as c, pytest.raises(FreezeError, match="timestamp"):
        c.refresh()
    assert cache_state(cache) == before
    run_updata("resign", env.path)  # the repository recovers; so does the client
    assert refreshed(env, cache, transport)["timestamp"] == 4


def test_expired_targets_refused(env: Env, tmp_path: Path) -> None:
    run_updata("resign", env.path, "--role", "targets", "--expires", "targets=-1h")
    with env.client(tmp_path / "cache") as c, pytest.raises(FreezeError, match="targets"):
        c.refresh()
    assert not (tmp_path / "cache" / "targets.json").exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mix_and_match_targets_refused(env: Env, tmp_path: Path, transport: str) -> None:
    cache = tmp_path / "cache"
    refreshed(env, cache, transport)
    trusted_targets = (cache / "targets.json").read_bytes()
    old_targets = env.meta("2.targets.json").read_bytes()
    run_updata("add-targets", env.path, f"extra.txt={env.manifest}")
    env.meta("3.targets.json").write_bytes(old_targets)  # old targets under the new name
    with env.client(cache, transport) as c, pytest.raises(MixAndMatchError, match="targets"):
        c.refresh()
    assert (cache / "targets.json").read_bytes() == trusted_targets


def test_mix_and_match_snapshot_refused(env: Env, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    refreshed(env, cache)
    trusted_snapshot = (cache / "snapshot.json").read_bytes()
    run_updata("resign", env.path)
    env.meta("3.snapshot.json").write_bytes(env.meta("2.snapshot.json").read_bytes())
    with env.client(cache) as c, pytest.raises(MixAndMatchError, match="snapshot"):
        c.refresh()
    assert (cache / "snapshot.json").read_bytes() == trusted_snapshot


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tampered_target_same_length_refused(env: Env, tmp_path: Path, transport: str) -> None:
    stored = env.stored_target("root-1.1.0.lz4")
    stored.write_bytes(b"X" * stored.stat().st_size)
    dest = tmp_path / "out" / "root.img"
    with env.client(tmp_path / "cache", transport) as c:
        info = c.get_target("root-1.1.0.lz4")
        with pytest.raises(TamperedTargetError, match="sha256"):
            c.download_target(info, dest)
        with pytest.raises(TamperedTargetError):
            c.copy_target(info, io.BytesIO())
    assert list(dest.parent.iterdir()) == []  # nothing trusted, nothing left behind


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tampered_target_longer_refused(env: Env, tmp_path: Path, transport: str) -> None:
    stored = env.stored_target("root-1.1.0.lz4")
    stored.write_bytes(stored.read_bytes() + b"more")
    dest = tmp_path / "out" / "root.img"
    with env.client(tmp_path / "cache", transport) as c, \
            pytest.raises(EndlessDataError, match="signed length"):
        c.download_target(c.get_target("root-1.1.0.lz4"), dest)
    assert list(dest.parent.iterdir()) == []


def test_truncated_target_refused(env: Env, tmp_path: Path) -> None:
    stored = env.stored_target("boot-1.1.0.lz4")
    stored.write_bytes(stored.read_bytes()[:-1])
    with env.client(tmp_path / "cache") as c, pytest.raises(TamperedTargetError, match="bytes"):
        c.copy_target(c.get_target("boot-1.1.0.lz4"), io.BytesIO())


def test_endless_metadata_stream_refused(env: Env, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    refreshed(env, cache)
    before = cache_state(cache)
    env.server.endless.add("/metadata/timestamp.json")
    with env.client(cache) as c, pytest.raises(EndlessDataError, match="timestamp"):
        c.refresh()
    assert cache_state(cache) == before


def test_oversized_metadata_file_refused(env: Env, tmp_path: Path) -> None:
    env.meta("timestamp.json").write_bytes(b" " * (2 << 20))
    with env.client(tmp_path / "cache", "file") as c, pytest.raises(EndlessDataError):
        c.refresh()


def test_unsigned_timestamp_refused(env: Env, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    refreshed(env, cache)
    before = cache_state(cache)
    repo = env.repo
    repo.md["timestamp"].signed.version += 1
    repo.md["timestamp"].signatures.clear()
    env.meta("timestamp.json").write_bytes(repo.md["timestamp"].to_bytes())
    with env.client(cache) as c, pytest.raises(SignatureError, match="0/1"):
        c.refresh()
    assert cache_state(cache) == before


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_root_and_timestamp_key_rotation(env: Env, tmp_path: Path, transport: str) -> None:
    cache = tmp_path / "cache"
    refreshed(env, cache, transport)
    run_updata("rotate-keys", env.path, "--role", "root", "--role", "timestamp")
    versions = refreshed(env, cache, transport)
    assert versions["root"] == 2
    assert (cache / "root_history" / "2.root.json").exists()
    assert (cache / "root.json").resolve().name == "2.root.json"
    # A brand-new client anchored on the shipped v1 root walks the chain too.
    assert refreshed(env, tmp_path / "fresh", transport)["root"] == 2


def test_client_stuck_on_old_root_refused(env: Env, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    refreshed(env, cache)
    before = cache_state(cache)
    run_updata("rotate-keys", env.path, "--role", "timestamp")
    env.meta("2.root.json").unlink()  # the client can no longer learn the new key
    with env.client(cache) as c, pytest.raises(SignatureError, match="timestamp"):
        c.refresh()
    assert cache_state(cache) == before


def test_rotation_chain_over_several_roots(env: Env, tmp_path: Path) -> None:
    for _ in range(3):
        run_updata("rotate-keys", env.path, "--role", "root", "--role", "snapshot")
    assert refreshed(env, tmp_path / "cache")["root"] == 4


def test_new_root_not_signed_by_old_keys_refused(env: Env, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    refreshed(env, cache)
    repo = env.repo
    old = repo.md["root"].signed.roles["root"].keyids[0]
    repo.rotate_keys(["root"])
    (repo.keys_dir / f"{old}.pem").unlink()  # attacker without the old root key...
    env.meta("2.root.json").unlink()
    repo.md["root"].signed.version = 2
    data = repo._sign("root")  # ...signs a "v2" with only the new key
    env.meta("2.root.json").write_bytes(data)
    with env.client(cache) as c, pytest.raises(SignatureError, match="root"):
        c.refresh()
    assert (cache / "root.json").resolve().name == "1.root.json"


def test_repository_unavailable(tmp_path: Path, env: Env) -> None:
    shutil.rmtree(env.path / "metadata")
    with env.client(tmp_path / "cache", "file") as c, \
            pytest.raises(RepositoryUnavailableError, match="404"):
        c.refresh()


def test_one_updater_at_a_time(env: Env, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with FileLock(cache / ".lock"), pytest.raises(LockedError):
        env.client(cache)
    with env.client(cache):  # released again
        pass


def test_download_streams_with_progress(env: Env, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    with env.client(tmp_path / "cache") as c:
        info = c.get_target("root-1.1.0.lz4")
        c.download_target(info, tmp_path / "root.img", progress=lambda n, t: seen.append((n, t)))
    assert seen[-1] == (info.length, info.length)


def test_unknown_hash_algorithm_refused_before_download(env: Env, tmp_path: Path) -> None:
    with env.client(tmp_path / "cache") as c:
        info = c.get_target("hash-1.1.0.lz4")
        info.hashes = {"unknown-hash": "00"}
        with pytest.raises(TamperedTargetError, match="unsupported"):
            c.copy_target(info, io.BytesIO())


def test_expiry_policy_applies(env: Env) -> None:
    md = env.repo.md
    signed_at = md["timestamp"].signed.expires - timedelta(weeks=1)  # one publish, one clock
    assert md["snapshot"].signed.expires - signed_at == timedelta(weeks=2)
    assert md["targets"].signed.expires - signed_at == timedelta(weeks=2)
    # root was signed when the repository was created: the same second or shortly before
    root_signed_at = md["root"].signed.expires - timedelta(weeks=52)
    assert timedelta(0) <= signed_at - root_signed_at < timedelta(minutes=1)


def test_failed_refresh_is_sticky_for_that_client(env: Env, tmp_path: Path) -> None:
    run_updata("resign", env.path, "--expires", "timestamp=-1d")
    with env.client(tmp_path / "cache") as c:
        with pytest.raises(FreezeError):
            c.refresh()
        with pytest.raises(FreezeError):
            c.get_target("manifest.json")
