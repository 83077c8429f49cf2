"""The repository side: create, sign, publish and rotate a TUF repository on disk.

Layout (serve only `metadata/` and `targets/`):

    REPO/metadata/   N.root.json (+ root.json), timestamp.json, N.snapshot.json, N.targets.json
    REPO/targets/    <sha256>.<name>   (consistent snapshots, as Bottlerocket publishes)
    REPO/updata.toml expiry policy (durations per role)
    KEYS/            <keyid>.pem       private keys, PKCS#8 (default: REPO/keys)

Every mutating operation leaves a complete, consistent repository: it re-signs what it
touched and everything above it (targets -> snapshot -> timestamp).
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from hostcore.durable import replace_file, replacing

ROLES = ("root", "targets", "snapshot", "timestamp")
_DURATION = re.compile(r"^\s*(?P<sign>-)?\s*(?P<n>\d+)\s*(?P<unit>[a-z]+?)s?\s*$", re.I)
_UNIT = {"second": 1, "sec": 1, "s": 1, "minute": 60, "min": 60, "m": 60, "hour": 3600,
         "h": 3600, "day": 86400, "d": 86400, "week": 604800, "w": 604800}


class RepoError(ValueError):
    """The repository or a request to change it is invalid."""


def parse_duration(text: str) -> timedelta:
    """`"2 weeks"`, `"1 day"`, `"36h"`; a leading `-` (already expired) is allowed."""
    m = _DURATION.match(text)
    unit = _UNIT.get(m["unit"].lower()) if m else None
    if m is None or unit is None:
        raise RepoError(f"bad duration {text!r}: expected e.g. '1 week', '2 days', '12 hours'")
    seconds = int(m["n"]) * unit
    return timedelta(seconds=-seconds if m["sign"] else seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for name, unit in (("weeks", 604800), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds % unit == 0:
            return f"{seconds // unit} {name}"
    return f"{seconds} seconds"


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long each role's signature is valid from the time it is signed.

    Bottlerocket's release policy is `2w-2w-1w` (targets, snapshot, timestamp).
    """

    root: timedelta = timedelta(weeks=52)
    targets: timedelta = timedelta(weeks=2)
    snapshot: timedelta = timedelta(weeks=2)
    timestamp: timedelta = timedelta(weeks=1)

    @classmethod
    def from_toml(cls, text: str) -> ExpiryPolicy:
        """Keys `<role>_expiration` (as in Bottlerocket's policy files) or plain `<role>`."""
        data = tomllib.loads(text)
        values = {}
        for role in ROLES:
            raw = data.get(f"{role}_expiration", data.get(role))
            if raw is not None:
                values[role] = parse_duration(str(raw))
        return cls(**values)

    def to_toml(self) -> str:
        return "".join(
            f'{role}_expiration = "{format_duration(getattr(self, role))}"\n' for role in ROLES
        )

    def with_overrides(self, overrides: Mapping[str, timedelta]) -> ExpiryPolicy:
        unknown = set(overrides) - set(ROLES)
        if unknown:
            raise RepoError(f"unknown role(s) {sorted(unknown)}: roles are {', '.join(ROLES)}")
        return replace(self, **dict(overrides))


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def generate_signer(keytype: str = "ed25519") -> CryptoSigner:
    """A fresh private key of `keytype`: ed25519, ecdsa (P-256) or rsa (RSA-PSS-SHA256)."""
    if keytype == "ed25519":
        return CryptoSigner.generate_ed25519()
    if keytype == "ecdsa":
        return CryptoSigner.generate_ecdsa()
    if keytype == "rsa":
        return CryptoSigner.generate_rsa()
    raise RepoError(f"unknown key type {keytype!r}: use ed25519, ecdsa or rsa")


def load_signer(pem_path: Path) -> CryptoSigner:
    """A signer from an unencrypted PKCS#8 PEM private key file."""
    try:
        return CryptoSigner(load_pem_private_key(Path(pem_path).read_bytes(), None))
    except (OSError, ValueError, TypeError) as e:
        raise RepoError(f"cannot load private key {pem_path}: {e}") from None


def default_keys_dir(path: Path) -> Path:
    """Where `create` keeps the private keys: next to the repository, never inside it (the
    repository directory is what gets published; `REPO.keys/` is not under it)."""
    path = Path(path).absolute()
    return path.parent / f"{path.name}.keys"


def recorded_keys_dir(path: Path) -> Path:
    """The key dir `create` recorded in `REPO/updata.toml` (older repositories: `REPO/keys`)."""
    path = Path(path)
    try:
        recorded = tomllib.loads((path / "updata.toml").read_text()).get("keys_dir")
    except (OSError, tomllib.TOMLDecodeError):
        recorded = None
    if recorded:
        return Path(recorded)
    return path / "keys" if (path / "keys").is_dir() else default_keys_dir(path)


def is_published(keys_dir: Path, repo: Path) -> bool:
    """Whether `keys_dir` lies inside the repository directory (served with it)."""
    return Path(keys_dir).resolve().is_relative_to(Path(repo).resolve())


@dataclass
class Repository:
    """An on-disk repository and the keys that sign it (see the module docstring)."""

    path: Path
    keys_dir: Path
    policy: ExpiryPolicy
    md: dict[str, Metadata] = field(default_factory=dict)

    @property
    def metadata_dir(self) -> Path:
        return self.path / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.path / "targets"

    # -- create / open

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        keys_dir: Path | None = None,
        policy: ExpiryPolicy = ExpiryPolicy(),  # noqa: B008 - frozen dataclass
        keytype: str = "ed25519",
        keys: Mapping[str, Iterable[CryptoSigner]] | None = None,
        thresholds: Mapping[str, int] | None = None,
        now: datetime | None = None,
    ) -> Repository:
        """A new repository with root v1 and empty targets; fresh keys unless `keys` given.

        `keys` maps a role to the signers to use for it; `thresholds` defaults to 1.
        """
        path = Path(path)
        if (path / "metadata").exists() and any((path / "metadata").iterdir()):
            raise RepoError(f"{path}/metadata already exists and is not empty")
        keys_dir = Path(keys_dir).absolute() if keys_dir else default_keys_dir(path)
        repo = cls(path, keys_dir, policy)
        repo.metadata_dir.mkdir(parents=True, exist_ok=True)
        repo.targets_dir.mkdir(parents=True, exist_ok=True)
        repo.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (path / "updata.toml").write_text(
            policy.to_toml() + f"keys_dir = {json.dumps(str(repo.keys_dir))}\n")
        now = now or _utcnow()
        root = Root(expires=now + policy.root, consistent_snapshot=True)
        given = {role: list(signers) for role, signers in (keys or {}).items()}
        for role in ROLES:
            signers = given.get(role) or [generate_signer(keytype)]
            for signer in signers:
                repo._store_key(signer)
                root.add_key(signer.public_key, role)
            threshold = (thresholds or {}).get(role, 1)
            if not 1 <= threshold <= len(signers):
                raise RepoError(f"{role}: threshold {threshold} needs that many keys")
            root.roles[role].threshold = threshold
        repo.md = {
            "root": Metadata(root),
            "targets": Metadata(Targets(expires=now + policy.targets)),
            "snapshot": Metadata(Snapshot(expires=now + policy.snapshot)),
            "timestamp": Metadata(Timestamp(expires=now + policy.timestamp)),
        }
        repo._write_root()
        repo._publish(("targets", "snapshot", "timestamp"), now=now, bump=False)
        return repo

    @classmethod
    def open(cls, path: Path, *, keys_dir: Path | None = None) -> Repository:
        """Load the newest published state of the repository at `path`."""
        path = Path(path)
        meta = path / "metadata"
        policy_file = path / "updata.toml"
        policy = ExpiryPolicy.from_toml(policy_file.read_text()) if policy_file.exists() \
            else ExpiryPolicy()
        repo = cls(path, Path(keys_dir) if keys_dir else recorded_keys_dir(path), policy)
        roots = sorted(int(p.name.split(".")[0]) for p in meta.glob("*.root.json"))
        if not roots:
            raise RepoError(f"{meta} holds no N.root.json: not a repository (run create)")
        try:
            repo.md["root"] = Metadata.from_file(str(meta / f"{roots[-1]}.root.json"))
            ts = Metadata.from_file(str(meta / "timestamp.json"))
            repo.md["timestamp"] = ts
            sv = ts.signed.snapshot_meta.version
            sn = Metadata.from_file(str(meta / f"{sv}.snapshot.json"))
            repo.md["snapshot"] = sn
            tv = sn.signed.meta["targets.json"].version
            repo.md["targets"] = Metadata.from_file(str(meta / f"{tv}.targets.json"))
        except (OSError, KeyError, ValueError) as e:
            raise RepoError(f"cannot load repository {path}: {e}") from None
        return repo

    # -- keys

    def _store_key(self, signer: CryptoSigner) -> None:
        pem = self.keys_dir / f"{signer.public_key.keyid}.pem"
        if not pem.exists():
            pem.touch(mode=0o600)
            pem.write_bytes(signer.private_bytes)

    def signers(self, role: str, root: Root | None = None) -> list[CryptoSigner]:
        """Signers for `role` under `root` (default: the current root) found in the key dir."""
        root = root or self.md["root"].signed
        found = []
        for keyid in root.roles[role].keyids:
            pem = self.keys_dir / f"{keyid}.pem"
            if pem.exists():
                found.append(load_signer(pem))
        if len(found) < root.roles[role].threshold:
            raise RepoError(
                f"{role}: only {len(found)} of threshold {root.roles[role].threshold} private "
                f"keys in {self.keys_dir} (pass --keys-dir DIR where `updata create` put them)"
            )
        return found

    # -- signing and writing

    def _sign(self, role: str, extra: Iterable[CryptoSigner] = ()) -> bytes:
        md = self.md[role]
        md.signatures.clear()
        seen = set()
        for signer in [*self.signers(role), *extra]:
            if signer.public_key.keyid not in seen:
                seen.add(signer.public_key.keyid)
                md.sign(signer, append=True)
        return md.to_bytes()

    def _write_root(self, extra: Iterable[CryptoSigner] = ()) -> None:
        data = self._sign("root", extra)
        version = self.md["root"].signed.version
        replace_file(self.metadata_dir / f"{version}.root.json", data)
        replace_file(self.metadata_dir / "root.json", data)  # the out-of-band copy

    def _publish(
        self,
        roles: Iterable[str],
        *,
        now: datetime | None = None,
        bump: bool = True,
        expires: Mapping[str, timedelta] | None = None,
    ) -> None:
        """Re-sign `roles` (some of targets, snapshot, timestamp) in dependency order."""
        roles = set(roles)
        now = now or _utcnow()
        policy = self.policy.with_overrides(expires or {})
        t, s, ts = (self.md[r].signed for r in ("targets", "snapshot", "timestamp"))
        if "targets" in roles:
            t.version += int(bump)
            t.expires = now + policy.targets
            data = self._sign("targets")
            replace_file(self.metadata_dir / f"{t.version}.targets.json", data)
            roles.add("snapshot")
        if "snapshot" in roles:
            s.version += int(bump)
            s.expires = now + policy.snapshot
            tdata = (self.metadata_dir / f"{t.version}.targets.json").read_bytes()
            s.meta["targets.json"] = MetaFile.from_data(t.version, tdata, ["sha256"])
            data = self._sign("snapshot")
            replace_file(self.metadata_dir / f"{s.version}.snapshot.json", data)
            roles.add("timestamp")
        if "timestamp" in roles:
            ts.version += int(bump)
            ts.expires = now + policy.timestamp
            sdata = (self.metadata_dir / f"{s.version}.snapshot.json").read_bytes()
            ts.snapshot_meta = MetaFile.from_data(s.version, sdata, ["sha256"])
            replace_file(self.metadata_dir / "timestamp.json", self._sign("timestamp"))

    def publish(
        self, *, now: datetime | None = None, expires: Mapping[str, timedelta] | None = None
    ) -> None:
        """Re-sign targets, snapshot and timestamp with new versions."""
        self._publish(("targets",), now=now, expires=expires)

    def resign(
        self,
        roles: Iterable[str] = ("snapshot", "timestamp"),
        *,
        now: datetime | None = None,
        expires: Mapping[str, timedelta] | None = None,
    ) -> None:
        """Refresh signatures and expiry (Bottlerocket re-signs the timestamp periodically)."""
        roles = set(roles)
        if "root" in roles:
            self.md["root"].signed.version += 1
            self.md["root"].signed.expires = (now or _utcnow()) + self.policy.with_overrides(
                expires or {}).root
            self._write_root(self._previous_root_signers())
            roles.discard("root")
        if roles - {"targets", "snapshot", "timestamp"}:
            raise RepoError(f"cannot re-sign {sorted(roles)}")
        if roles:
            self._publish(roles, now=now, expires=expires)

    # -- targets

    def add_target(self, name: str, source: Path | bytes) -> TargetFile:
        """Stage a target (copied in as `<sha256>.<name>`); call `publish()` to sign it."""
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise RepoError(f"bad target name {name!r}")
        if isinstance(source, bytes):
            info = TargetFile.from_data(name, source, ["sha256"])
        else:
            info = TargetFile.from_file(name, str(source), ["sha256"])
        dirname, _, basename = name.rpartition("/")  # clients fetch <dir>/<hash>.<base>
        dest = self.targets_dir / dirname / f"{info.hashes['sha256']}.{basename}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            with replacing(dest) as f:
                if isinstance(source, bytes):
                    f.write(source)
                else:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, f)
        self.md["targets"].signed.targets[name] = info
        return info

    def remove_target(self, name: str) -> None:
        """Unlist a target (its file stays: older metadata may still reference it)."""
        if self.md["targets"].signed.targets.pop(name, None) is None:
            raise RepoError(f"no target named {name!r}")

    def targets(self) -> dict[str, TargetFile]:
        return dict(self.md["targets"].signed.targets)

    # -- keys rotation

    def _previous_root_signers(self) -> list[CryptoSigner]:
        """Threshold of the previous root's root keys, which must co-sign a new root."""
        version = self.md["root"].signed.version - 1
        prev = Metadata[Root].from_file(str(self.metadata_dir / f"{version}.root.json")).signed
        return self.signers("root", prev)

    def rotate_keys(
        self,
        roles: Iterable[str],
        *,
        keytype: str = "ed25519",
        new_keys: Mapping[str, Iterable[CryptoSigner]] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Replace the keys of `roles` in a new root version; returns that version.

        The new root is signed by the old root keys and the new ones, so clients can walk
        the chain; rotated non-root roles are re-signed with their new keys.
        """
        roles = list(dict.fromkeys(roles))
        if not roles or set(roles) - set(ROLES):
            raise RepoError(f"rotate which roles? choose from {', '.join(ROLES)}")
        root = self.md["root"].signed
        for role in roles:
            signers = list((new_keys or {}).get(role) or [generate_signer(keytype)])
            threshold = root.roles[role].threshold
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            for signer in signers:
                self._store_key(signer)
                root.add_key(signer.public_key, role)
            root.roles[role].threshold = min(threshold, len(signers))
        root.version += 1
        root.expires = (now or _utcnow()) + self.policy.root
        self._write_root(self._previous_root_signers())
        rest = [r for r in roles if r != "root"]
        if rest:
            self._publish(rest, now=now)
        return root.version
