"""`updog`: the host's update client CLI (check-update now; A/B apply arrives with issue 7).

Parsing follows Bottlerocket's hand-written parser: flags may appear anywhere, exactly one
bare word is the subcommand, and any usage error prints the usage on stderr and exits 1.
`updog tuf-client ...` is the tuf-conformance client (see `updates.conformance`).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from updates import conformance
from updates.check import CheckRequest, HostPaths, applicable, check_update, load_host
from updates.errors import UpdateError
from updates.manifest import ManifestError
from updates.semver import Version, VersionError
from updates.waves import WaveError

USAGE = """\
USAGE:
    updog <SUBCOMMAND> <OPTIONS>
    updog tuf-client <CONFORMANCE OPTIONS> init|refresh|download

SUBCOMMANDS:
    check-update            Show if an update is available
        [ -a | --all ]                Output all applicable updates
        [ --ignore-waves ]            Ignore release schedule (also -n, --now)
        [ -i | --image version ]      Consider only this version
    whats                   Same as check-update
    prepare                 Load the repository and manifest, then do nothing
    tuf-client              TUF conformance client (run `updog tuf-client` for its usage)

GLOBAL OPTIONS:
    [ -j | --json ]               JSON-formatted output
    [ --log-level trace|debug|info|warn|error ]
    [ --root DIR ]                Filesystem prefix for the paths below (default /)
    [ --config PATH ]             updog.toml (default <root>/etc/updog.toml)
    [ --state-dir DIR ]           Persistent TUF metadata cache (default <root>/var/lib/updog)
    [ --trusted-root PATH ]       Shipped root.json (default <root>/usr/share/updog/root.json)
    [ --os-release PATH ]         Running OS identity (default <root>/usr/lib/os-release)
    [ --version V ]               Override VERSION_ID
    [ --variant V ]               Override VARIANT_ID
    [ --arch A ]                  Override the architecture (default: this machine)
    [ --absolute-seed-quirk ]     Place hosts in a wave by absolute seed, as upstream did
"""

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
           "warn": logging.WARNING, "error": logging.ERROR}
_VALUED = {"-i": "image", "--image": "image", "--log-level": "log_level", "--root": "root",
           "--config": "config", "--state-dir": "state_dir", "--trusted-root": "trusted_root",
           "--os-release": "os_release", "--version": "version", "--variant": "variant",
           "--arch": "arch"}
_FLAGS = {"-j": "json", "--json": "json", "-a": "all", "--all": "all", "-n": "ignore_waves",
          "--now": "ignore_waves", "--ignore-waves": "ignore_waves",
          "--absolute-seed-quirk": "absolute_seed"}
SUBCOMMANDS = ("check-update", "whats", "prepare")
LATER = ("update", "update-image", "update-apply", "update-revert")


class UsageError(Exception):
    pass


@dataclass
class Args:
    subcommand: str = ""
    json: bool = False
    all: bool = False
    ignore_waves: bool = False
    absolute_seed: bool = False
    image: str | None = None
    log_level: str = "info"
    root: str = "/"
    config: str | None = None
    state_dir: str | None = None
    trusted_root: str | None = None
    os_release: str | None = None
    version: str | None = None
    variant: str | None = None
    arch: str | None = None
    extra: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> Args:
    args = Args()
    it = iter(argv)
    for arg in it:
        if arg in _FLAGS:
            setattr(args, _FLAGS[arg], True)
        elif arg in _VALUED:
            value = next(it, None)
            if value is None:
                raise UsageError(f"{arg} needs a value")
            setattr(args, _VALUED[arg], value)
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}")
        elif args.subcommand:
            raise UsageError(f"unexpected argument {arg!r}")
        else:
            args.subcommand = arg
    if not args.subcommand:
        raise UsageError("missing subcommand")
    if args.subcommand not in SUBCOMMANDS + LATER:
        raise UsageError(f"unknown subcommand {args.subcommand!r}")
    if args.log_level not in _LEVELS:
        raise UsageError(f"unknown log level {args.log_level!r}")
    if args.image is not None:
        try:
            Version.parse(args.image)
        except VersionError as e:
            raise UsageError(f"--image: {e}") from None
    return args


def _paths(args: Args) -> HostPaths:
    root = Path(args.root)

    def under(value: str | None, default: str) -> Path:
        return Path(value) if value else root / default

    return HostPaths(
        config=under(args.config, "etc/updog.toml"),
        state_dir=under(args.state_dir, "var/lib/updog"),
        trusted_root=under(args.trusted_root, "usr/share/updog/root.json"),
        os_release=under(args.os_release, "usr/lib/os-release"),
    )


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def run(args: Args) -> int:
    if args.subcommand in LATER:
        print(f"updog: {args.subcommand}: not available yet (A/B partition support is a later "
              "milestone)", file=sys.stderr)
        return 1
    request = CheckRequest(
        ignore_waves=args.ignore_waves,
        absolute_seed=args.absolute_seed,
        image=Version.parse(args.image) if args.image else None,
    )
    host = load_host(_paths(args), version=args.version, variant=args.variant, arch=args.arch)
    if args.subcommand == "prepare":
        check_update(host, request)  # loads repository and manifest, like upstream
        return 0
    if args.all:
        updates = applicable(host, request)
        if args.json:
            _print_json([u.to_json() for u in updates])
        else:
            for u in updates:
                print(f"{u.variant} {u.version}", file=sys.stderr)
        return 0
    chosen = check_update(host, request)
    if chosen is None:
        print("No update available", file=sys.stderr)
        return 1
    if args.json:
        _print_json(chosen.to_json())
    else:
        print(f"{chosen.variant} {chosen.version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tuf-client"]:
        return conformance.main(argv[1:])
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
    except UsageError as e:
        print(f"updog: {e}\n\n{USAGE}", file=sys.stderr)
        return 1
    logging.basicConfig(level=_LEVELS[args.log_level], stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (UpdateError, ManifestError, WaveError, ValueError, OSError) as e:
        print(f"updog: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
