"""`updata`: build and maintain an update repository (the publisher's side).

Manifest commands edit a `manifest.json` file exactly like Bottlerocket's `updata`;
repository commands create, sign and rotate a TUF repository (see `updates.repo`).
A typical release:

    updata create REPO                       # keys go to REPO.keys, outside REPO
    updata init MANIFEST
    updata make-images --os-version VERSION --variant VARIANT -o DIR
    updata add-update MANIFEST -f VARIANT -a ARCH -v VERSION --compress lz4 \
        -b DIR/BOOT.img -r DIR/ROOT.img -h DIR/HASH.img
    updata set-waves MANIFEST -f VARIANT -a ARCH -v VERSION -w default
    updata add-targets REPO MANIFEST DIR/*.lz4
    updata resign REPO                       # periodically: fresh snapshot + timestamp
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import lz4.frame
from securesystemslib.signer import CryptoSigner

from hostcore.durable import replace_file, replacing
from updates import manifest as mf
from updates import osimage
from updates.errors import UpdateError
from updates.repo import (
    ROLES,
    ExpiryPolicy,
    RepoError,
    Repository,
    is_published,
    load_signer,
    parse_duration,
)
from updates.semver import Version, VersionError
from updates.timefmt import TimeFormatError, parse_time, utcnow
from updates.waves import WaveError, load_policy


def _version(text: str) -> Version:
    try:
        return Version.parse(text)
    except VersionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _role_value(text: str) -> tuple[str, str]:
    role, sep, value = text.partition("=")
    if not sep or role not in ROLES:
        raise argparse.ArgumentTypeError(f"expected ROLE=VALUE with ROLE in {', '.join(ROLES)}")
    return role, value


def _load_manifest(path: Path) -> mf.Manifest:
    try:
        return mf.parse_manifest(Path(path).read_bytes())
    except OSError as e:
        raise mf.ManifestError(f"cannot read {path}: {e}") from None


def _write_manifest(path: Path, manifest: mf.Manifest) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, mf.dump_manifest(manifest).encode())


def _expires(pairs: list[tuple[str, str]] | None) -> dict[str, timedelta]:
    return {role: parse_duration(value) for role, value in pairs or []}


def _keys(pairs: list[tuple[str, str]] | None) -> dict[str, list[CryptoSigner]]:
    keys: dict[str, list[CryptoSigner]] = {}
    for role, path in pairs or []:
        keys.setdefault(role, []).append(load_signer(Path(path)))
    return keys


# ---------------------------------------------------------------- manifest commands


def cmd_init(a: argparse.Namespace) -> None:
    _write_manifest(a.file, mf.Manifest())


def compress_lz4(path: Path) -> Path:
    """`path` as an LZ4 frame at `path.lz4` (decoded size stored: updog checks it up front)."""
    dest = path.with_name(path.name + ".lz4")
    enc = lz4.frame.LZ4FrameCompressor(content_checksum=True)
    with open(path, "rb") as src, replacing(dest) as out:
        out.write(enc.begin(source_size=os.fstat(src.fileno()).st_size))
        while chunk := src.read(1 << 20):
            out.write(enc.compress(chunk))
        out.write(enc.flush())
    return dest


def cmd_add_update(a: argparse.Namespace) -> None:
    names = {"boot": a.boot, "root": a.root, "hash": a.hash}
    if a.compress == "lz4":  # the values are image files; publish their LZ4 frames
        for kind, value in names.items():
            dest = compress_lz4(Path(value))
            print(f"{dest}: {kind} image, {Path(value).stat().st_size} -> "
                  f"{dest.stat().st_size} bytes (lz4)")
            names[kind] = dest.name
    m = mf.add_update(
        _load_manifest(a.file), variant=a.variant, arch=a.arch, version=a.version,
        max_version=a.max_version, images=mf.Images(**names),
    )
    _write_manifest(a.file, m)


def cmd_remove_update(a: argparse.Namespace) -> None:
    m = mf.remove_update(_load_manifest(a.file), variant=a.variant, arch=a.arch,
                         version=a.version)
    _write_manifest(a.file, m)


def cmd_set_max_version(a: argparse.Namespace) -> None:
    _write_manifest(a.file, mf.set_max_version(_load_manifest(a.file), a.max_version))


def cmd_set_waves(a: argparse.Namespace) -> None:
    start = parse_time(a.start_at) if a.start_at else utcnow()
    m, count = mf.set_waves(
        _load_manifest(a.file), variant=a.variant, arch=a.arch, version=a.version,
        policy=load_policy(a.wave_file), start_at=start,
    )
    if count == 0:
        raise mf.ManifestError(f"no update matches {a.variant} {a.arch} {a.version}")
    _write_manifest(a.file, m)


def cmd_set_migrations(a: argparse.Namespace) -> None:
    _, migrations = mf.parse_release(Path(a.release).read_text())
    _write_manifest(a.manifest, mf.set_migrations(_load_manifest(a.manifest), migrations))


def cmd_make_images(a: argparse.Namespace) -> None:
    """Root image (header + payload), its verity hash tree, the boot image with the root hash."""
    payload = a.payload.read_bytes() if a.payload else b""
    images = osimage.build_set(str(a.version), a.variant, arch=a.arch, payload=payload)
    a.out.mkdir(parents=True, exist_ok=True)
    for kind, name in osimage.image_names(a.variant, str(a.version)).items():
        replace_file(a.out / name, getattr(images, kind))
        print(f"{a.out / name}: {kind} image, {len(getattr(images, kind))} bytes")
    print(f"verity root hash {images.root_hash} (in the boot image)")


def cmd_validate(a: argparse.Namespace) -> None:
    m = _load_manifest(a.file)
    print(f"{a.file}: {len(m.updates)} update(s), {len(m.migrations)} migration key(s)")


# ---------------------------------------------------------------- repository commands


def cmd_create(a: argparse.Namespace) -> None:
    policy = ExpiryPolicy.from_toml(Path(a.expiry_policy).read_text()) if a.expiry_policy \
        else ExpiryPolicy()
    policy = policy.with_overrides(_expires(a.expires))
    thresholds = {role: int(n) for role, n in a.threshold or []}
    repo = Repository.create(a.repo, keys_dir=a.keys_dir, policy=policy, keytype=a.keytype,
                             keys=_keys(a.key), thresholds=thresholds)
    where = "INSIDE the published directory: do not serve it as it is" \
        if is_published(repo.keys_dir, repo.path) else "outside the published directory"
    print(f"created {repo.path}: serve it (metadata/ and targets/); private keys in "
          f"{repo.keys_dir} ({where}); install metadata/1.root.json on hosts with "
          f"`updog install-root {repo.metadata_dir / '1.root.json'}`")


def _parse_target_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    return (name, Path(path)) if sep else (Path(text).name, Path(text))


def cmd_add_targets(a: argparse.Namespace) -> None:
    repo = Repository.open(a.repo, keys_dir=a.keys_dir)
    for role in ("targets", "snapshot", "timestamp"):
        repo.signers(role)  # fail before copying anything when a key is missing
    for item in a.targets:
        name, path = _parse_target_arg(item)
        info = repo.add_target(name, path)
        print(f"{name}: {info.length} bytes sha256 {info.hashes['sha256']}")
    repo.publish(expires=_expires(a.expires))


def cmd_remove_targets(a: argparse.Namespace) -> None:
    repo = Repository.open(a.repo, keys_dir=a.keys_dir)
    for name in a.names:
        repo.remove_target(name)
    repo.publish(expires=_expires(a.expires))


def cmd_resign(a: argparse.Namespace) -> None:
    repo = Repository.open(a.repo, keys_dir=a.keys_dir)
    repo.resign(a.role or ("snapshot", "timestamp"), expires=_expires(a.expires))


def cmd_rotate_keys(a: argparse.Namespace) -> None:
    repo = Repository.open(a.repo, keys_dir=a.keys_dir)
    version = repo.rotate_keys(a.role, keytype=a.keytype, new_keys=_keys(a.key))
    print(f"root v{version} published; keys of {', '.join(a.role)} rotated")


def cmd_show(a: argparse.Namespace) -> None:
    repo = Repository.open(a.repo, keys_dir=a.keys_dir)
    for role in ROLES:
        s = repo.md[role].signed
        print(f"{role:9} v{s.version} expires {s.expires.isoformat()}")
    for name, info in sorted(repo.targets().items()):
        print(f"target {name} {info.length} {info.hashes['sha256']}")


# ---------------------------------------------------------------- parser


def _manifest_parser(sub: argparse._SubParsersAction, name: str, fn: Callable, help_: str,
                     *, match: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, add_help=False)
    p.add_argument("--help", action="help")
    p.add_argument("file", type=Path, help="manifest.json")
    if match:
        p.add_argument("-f", "-l", "--variant", required=True,
                       help="the updates' variant, e.g. aws-k8s-1.30")
        p.add_argument("-a", "--arch", required=True, help="the updates' architecture, e.g. "
                       "x86_64")
        p.add_argument("-v", "--version", type=_version, required=True,
                       help="the updates' version, e.g. 1.2.0")
    p.set_defaults(fn=fn)
    return p


def _repo_parser(sub: argparse._SubParsersAction, name: str, fn: Callable,
                 help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_)
    p.add_argument("repo", type=Path, help="repository directory")
    p.add_argument("--keys-dir", type=Path,
                   help="private keys (default: REPO.keys next to REPO, recorded by create)")
    p.add_argument("--expires", type=_role_value, action="append", metavar="ROLE=DURATION",
                   help="override the expiry policy for this signing, e.g. timestamp=1d")
    p.set_defaults(fn=fn)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="updata", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write an empty manifest")
    p.add_argument("file", type=Path, help="manifest.json to create")
    p.set_defaults(fn=cmd_init)
    p = _manifest_parser(sub, "add-update", cmd_add_update, "append an update")
    p.add_argument("-m", "--max-version", type=_version,
                   help="the newest version hosts may reach (default: the larger of "
                   "--version and the first update's max_version)")
    p.add_argument("-b", "--boot", required=True, help="boot image target name (a file "
                   "with --compress)")
    p.add_argument("-r", "--root", required=True, help="root image target name (a file "
                   "with --compress)")
    p.add_argument("-h", "--hash", required=True, help="verity hash image target name (a "
                   "file with --compress)")
    p.add_argument("--compress", choices=("lz4",),
                   help="compress the image files given to -b/-r/-h into FILE.lz4 and list "
                        "those (add them with add-targets)")
    _manifest_parser(sub, "remove-update", cmd_remove_update, "drop matching updates")
    p = _manifest_parser(sub, "set-max-version", cmd_set_max_version,
                         "set max_version on all updates (the regret lever)", match=False)
    p.add_argument("-m", "--max-version", type=_version, required=True,
                   help="the newest version hosts may reach")
    p = _manifest_parser(sub, "set-waves", cmd_set_waves, "set waves from a policy")
    p.add_argument("-w", "--wave-file", "--policy", required=True,
                   help="default, accelerated, ohno, or a wave policy TOML file")
    p.add_argument("--start-at", help="RFC 3339 start of the release (default now)")
    p = sub.add_parser(
        "set-migrations", help="replace the manifest's migrations with a Release.toml's",
        description="Replace MANIFEST's migrations with those of a Release.toml: "
        'version = "1.1.0" and a [migrations] table of "(FROM, TO)" = [names]. Releases '
        "without migrations need no entry.")
    p.add_argument("--release", "-f", "--from", dest="release", required=True, type=Path,
                   metavar="RELEASE_TOML", help="the Release.toml (-f/--from: old spelling)")
    p.add_argument("--manifest", "-t", "--to", dest="manifest", required=True, type=Path,
                   metavar="MANIFEST", help="manifest.json to edit (-t/--to: old spelling)")
    p.set_defaults(fn=cmd_set_migrations)
    p = sub.add_parser("make-images", help="build a release's root, hash and boot images",
                       description=osimage.__doc__.split("\n\n")[0])
    p.add_argument("--os-version", dest="version", type=_version, required=True,
                   help="the release's version, e.g. 1.2.0")
    p.add_argument("--variant", required=True, help="the release's variant")
    p.add_argument("--arch", help="the release's architecture, written to its os-release "
                   "as ARCH (default: none written)")
    p.add_argument("--payload", type=Path, help="file appended to the root image's header")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.set_defaults(fn=cmd_make_images)
    p = sub.add_parser("validate", help="parse a manifest")
    p.add_argument("file", type=Path, help="manifest.json to check")
    p.set_defaults(fn=cmd_validate)

    p = _repo_parser(sub, "create", cmd_create, "create a repository with fresh keys")
    p.add_argument("--keytype", default="ed25519", choices=("ed25519", "ecdsa", "rsa"),
                   help="type of the fresh keys (default: ed25519)")
    p.add_argument("--key", type=_role_value, action="append", metavar="ROLE=PEM",
                   help="use this private key for ROLE instead of a fresh one")
    p.add_argument("--threshold", type=_role_value, action="append", metavar="ROLE=N",
                   help="signatures ROLE needs (default: 1 for every role)")
    p.add_argument("--expiry-policy", type=Path, help="TOML: <role>_expiration = '1 week'")
    p = _repo_parser(sub, "add-targets", cmd_add_targets, "add files as targets and publish")
    p.add_argument("targets", nargs="+", metavar="[NAME=]PATH",
                   help="files to list (NAME: the target name, default the file's name)")
    p = _repo_parser(sub, "remove-targets", cmd_remove_targets, "unlist targets and publish")
    p.add_argument("names", nargs="+", help="target names to unlist")
    p = _repo_parser(sub, "resign", cmd_resign, "re-sign roles (default snapshot, timestamp)")
    p.add_argument("--role", action="append", choices=ROLES,
                   help="a role to re-sign, repeatable (default: snapshot and timestamp)")
    p = _repo_parser(sub, "rotate-keys", cmd_rotate_keys, "replace role keys in a new root")
    p.add_argument("--role", action="append", choices=ROLES, required=True,
                   help="a role whose keys are replaced, repeatable")
    p.add_argument("--keytype", default="ed25519", choices=("ed25519", "ecdsa", "rsa"),
                   help="type of the fresh keys (default: ed25519)")
    p.add_argument("--key", type=_role_value, action="append", metavar="ROLE=PEM",
                   help="use this private key for ROLE instead of a fresh one")
    _repo_parser(sub, "show", cmd_show, "print role versions, expiries and targets")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (mf.ManifestError, WaveError, RepoError, TimeFormatError, OSError, UpdateError) as e:
        print(f"updata: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
