"""`updog`: the host's update client CLI.

Parsing follows Bottlerocket's hand-written parser: flags may appear anywhere, exactly one
bare word is the subcommand, and any usage error prints the usage on stderr and exits 1.
`updog tuf-client ...` is the tuf-conformance client (see `updates.conformance`).

`update`/`update-image` write the chosen release into the inactive partition set of the OS
disk (`--disk PATH` for a disk image; the running identity is then read from the booted set).
Deliberate change from upstream: `update-apply` and `update-revert` only flip partition flags
and do not need the repository (activation works offline once an image is staged).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hostcore.durable import replace_file
from updates import apply, conformance
from updates.check import (
    CheckRequest,
    Host,
    HostPaths,
    check_update,
    fetch_manifest,
    host_policy,
    load_host,
    open_client,
    survey,
)
from updates.errors import UpdateError
from updates.gpt import GptError
from updates.gptprio import SignpostError
from updates.manifest import ManifestError
from updates.partitions import DiskError, open_os_disk
from updates.selection import NoUpdate, choose_update, explain
from updates.semver import Version, VersionError
from updates.timefmt import utcnow
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
        [ --with-reason ]             With --all --json: {"updates": [...], "reason": ...}
    whats                   Same as check-update
    update                  Write the update to the inactive set and activate it
        [ --ignore-waves ] [ -i | --image version ] [ -r | --reboot ]
    update-image            Write the update to the inactive set only
        [ --ignore-waves ] [ -i | --image version ]
    update-apply            Activate the written set for the next boot
        [ -r | --reboot ]
    update-revert           Deactivate it again (the running set boots next)
    prepare                 Load the repository and manifest, then do nothing
    install-root FILE       Install FILE (a repository's 1.root.json) as the trusted root
                            at <root>/usr/share/updog/root.json (or --trusted-root)
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
    [ --disk PATH ]               OS disk or disk image (default: the disk behind /)
"""

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
           "warn": logging.WARNING, "error": logging.ERROR}
_VALUED = {"-i": "image", "--image": "image", "--log-level": "log_level", "--root": "root",
           "--config": "config", "--state-dir": "state_dir", "--trusted-root": "trusted_root",
           "--os-release": "os_release", "--version": "version", "--variant": "variant",
           "--arch": "arch", "--disk": "disk",
           "--progress-file": "progress_file"}
_FLAGS = {"-j": "json", "--json": "json", "-a": "all", "--all": "all", "-n": "ignore_waves",
          "--now": "ignore_waves", "--ignore-waves": "ignore_waves",
          "--absolute-seed-quirk": "deprecated", "-r": "reboot", "--reboot": "reboot",
          "--with-reason": "with_reason", "-h": "help", "--help": "help"}
# --absolute-seed-quirk is accepted and ignored: Bottlerocket's rule is now the only one.
SUBCOMMANDS = ("check-update", "whats", "prepare", "install-root")
LATER = ("update", "update-image", "update-apply", "update-revert")  # the A/B verbs


class UsageError(Exception):
    pass


@dataclass
class Args:
    subcommand: str = ""
    json: bool = False
    all: bool = False
    ignore_waves: bool = False
    deprecated: bool = False
    with_reason: bool = False
    help: bool = False
    reboot: bool = False
    progress_file: str | None = None
    disk: str | None = None
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
        elif args.subcommand == "install-root" and not args.extra:
            args.extra.append(arg)
        elif args.subcommand:
            raise UsageError(f"unexpected argument {arg!r}")
        else:
            args.subcommand = arg
    if args.help:
        return args
    if args.subcommand == "install-root" and not args.extra:
        raise UsageError("install-root needs the root.json to install")
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


def _load_host(args: Args) -> Host:
    """Host inputs; with `--disk`, the running identity comes from the booted set's image."""
    version, variant, arch = args.version, args.variant, args.arch
    if args.disk and not (version and variant):
        with open_os_disk(args.disk, writable=False) as disk:
            fields = disk.identity(disk.require_active()) or {}
        version = version or fields.get("VERSION_ID")
        variant = variant or fields.get("VARIANT_ID")
        arch = arch or fields.get("ARCH")
    return load_host(_paths(args), version=version, variant=variant, arch=arch)


def _reboot(args: Args) -> None:
    """Reboot; on a disk image file the reboot is the boot simulator."""
    if args.disk and Path(args.disk).is_file():
        with open_os_disk(args.disk) as disk:
            booted = disk.boot()
        print(f"Rebooted (simulated): {'Set ' + booted if booted else 'None'}")
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let us finish printing, as upstream does
    subprocess.run(["shutdown", "-r", "now"], check=True)


def _progress(args: Args):  # -> Callable[[str], Progress]
    """A bar on a terminal; with `--progress-file`, also bytes done/total for the API."""
    if not args.progress_file:
        return apply.ProgressBar
    return apply.ProgressFile.factory(Path(args.progress_file), also=apply.ProgressBar)


def run_ab(args: Args, request: CheckRequest) -> int:
    """update, update-image, update-apply, update-revert."""
    if args.subcommand == "update-apply":
        with open_os_disk(args.disk) as disk:
            apply.update_flags(disk)
        if args.reboot:
            _reboot(args)
        return 0
    if args.subcommand == "update-revert":
        with open_os_disk(args.disk) as disk:
            apply.revert_flags(disk)
        return 0
    host = _load_host(args)
    policy = host_policy(host, request)
    with open_client(host) as client:
        manifest = fetch_manifest(client)
        now = utcnow()
        chosen = choose_update(manifest, policy, now, request.image)
        if chosen is None:
            no_update(explain(manifest, policy, now, request.image), "No update required")
            return 0
        print(f"Starting update to {chosen.version}", file=sys.stderr)
        client.fetcher.params["target"] = str(chosen.version)
        apply.cache_for_migrator(client, manifest, host.identity.version, chosen.version,
                                 apply.MigrationCache.under(host.paths.state_dir))
        with open_os_disk(args.disk) as disk:
            apply.update_image(disk, client, chosen, progress=_progress(args))
            if args.subcommand == "update":
                apply.update_flags(disk)
    if args.json:
        _print_json(chosen.to_json())
    else:
        print(f"Update applied: {chosen.variant} {chosen.version}")
    if args.subcommand == "update" and args.reboot:
        _reboot(args)
    return 0


def subcommand_help(name: str) -> str:
    """The usage lines of one subcommand (with the global options), for `updog SUB --help`."""
    lines, keep = [], False
    for line in USAGE.splitlines():
        if line.startswith("    ") and not line.startswith("     "):
            keep = line.split()[0] == name
        elif not line.startswith("     "):
            keep = False
        if keep:
            lines.append(line)
    globals_ = USAGE[USAGE.index("GLOBAL OPTIONS:"):]
    return f"USAGE:\n    updog {name} <OPTIONS>\n\n" + "\n".join(lines) + "\n\n" + globals_


def install_root(args: Args) -> int:
    """Verify that a file is a self-signed TUF root, then install it where updog reads it."""
    from tuf.api.metadata import Metadata, Root

    source = Path(args.extra[0])
    raw = source.read_bytes()
    try:
        md = Metadata[Root].from_bytes(raw)
        md.signed.verify_delegate("root", md.signed_bytes, md.signatures)
    except Exception as e:
        raise UpdateError(f"{source} is not a root.json signed by its own root keys: {e}") \
            from None
    dest = _paths(args).trusted_root
    dest.parent.mkdir(parents=True, exist_ok=True)
    replace_file(dest, raw)
    print(f"Installed trusted root v{md.signed.version} ({source}) at {dest}")
    return 0


def no_update(reason: NoUpdate | None, headline: str) -> None:
    print(f"{headline}: {reason.message}" if reason else headline, file=sys.stderr)


def run(args: Args) -> int:
    request = CheckRequest(
        ignore_waves=args.ignore_waves,
        image=Version.parse(args.image) if args.image else None,
    )
    if args.subcommand == "install-root":
        return install_root(args)
    if args.subcommand in LATER:
        return run_ab(args, request)
    host = _load_host(args)
    if args.subcommand == "prepare":
        check_update(host, request)  # loads repository and manifest, like upstream
        return 0
    if args.all:
        updates, reason = survey(host, request)
        if args.json and args.with_reason:
            _print_json({"updates": [u.to_json() for u in updates],
                         "reason": reason.to_json() if reason else None})
        elif args.json:
            _print_json([u.to_json() for u in updates])
        else:
            for u in updates:
                print(f"{u.variant} {u.version}", file=sys.stderr)
        return 0
    chosen, reason = check_update(host, request)
    if chosen is None:
        no_update(reason, "No update available")
        if args.json and args.with_reason and reason:
            _print_json({"reason": reason.to_json()})
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
    if argv[:1] == ["help"] or "-h" in argv or "--help" in argv:  # also `updog update --help`
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
    except UsageError as e:
        print(f"updog: {e}\n\n{USAGE}", file=sys.stderr)
        return 1
    if args.help:
        known = args.subcommand in SUBCOMMANDS + LATER
        print(subcommand_help(args.subcommand) if known else USAGE)
        return 0
    logging.basicConfig(level=_LEVELS[args.log_level], stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (UpdateError, ManifestError, WaveError, ValueError, OSError, DiskError, GptError,
            SignpostError, subprocess.CalledProcessError) as e:
        print(f"updog: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
