"""`updog tuf-client`: the client-under-test CLI of the tuf-conformance suite.

It drives the same `TufClient` the updater uses (cache, lock, limits, streaming and
verified downloads), so the suite measures the real client, not a separate wrapper.

    updog tuf-client --metadata-dir DIR init TRUSTED_ROOT
    updog tuf-client --metadata-dir DIR --metadata-url URL refresh
    updog tuf-client --metadata-dir DIR --metadata-url URL --target-name NAME [...]
                     --target-base-url URL --target-dir DIR download

Options may come in any order before the verb. Exit 0 on full success, 1 otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from updates.errors import UpdateError
from updates.tuf_client import TufClient, target_filename

USAGE = __doc__.split("\n\n")[2]
_VALUED = {"--metadata-dir", "--metadata-url", "--target-name", "--target-base-url",
           "--target-dir"}


class UsageError(Exception):
    pass


@dataclass
class Args:
    verb: str = ""
    operands: list[str] = field(default_factory=list)
    metadata_dir: str | None = None
    metadata_url: str | None = None
    target_names: list[str] = field(default_factory=list)
    target_base_url: str | None = None
    target_dir: str | None = None
    verbose: int = 0


def parse_args(argv: list[str]) -> Args:
    args = Args()
    it = iter(argv)
    for arg in it:
        name, eq, inline = arg.partition("=")
        if name in _VALUED:
            value = inline if eq else next(it, None)
            if value is None:
                raise UsageError(f"{name} needs a value")
            if name == "--target-name":
                args.target_names.append(value)
            else:
                setattr(args, name[2:].replace("-", "_"), value)
        elif arg in ("-v", "--verbose"):
            args.verbose += 1
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}")
        elif not args.verb:
            args.verb = arg
        else:
            args.operands.append(arg)
    if args.verb not in ("init", "refresh", "download"):
        raise UsageError(f"unknown or missing command {args.verb!r}")
    if not args.metadata_dir:
        raise UsageError("--metadata-dir is required")
    if args.verb == "init" and len(args.operands) != 1:
        raise UsageError("init takes exactly one TRUSTED_ROOT file")
    if args.verb != "init" and (args.operands or not args.metadata_url):
        raise UsageError(f"{args.verb} needs --metadata-url and no operands")
    if args.verb == "download" and not (
        args.target_names and args.target_base_url and args.target_dir
    ):
        raise UsageError("download needs --target-name, --target-base-url and --target-dir")
    return args


def init(metadata_dir: Path, trusted_root: Path) -> None:
    """Anchor trust on `trusted_root` (its self-signature is checked; no network)."""
    with TufClient(metadata_dir, "file:///nonexistent/", trusted_root=trusted_root.read_bytes()):
        pass


def refresh(metadata_dir: Path, metadata_url: str) -> None:
    with TufClient(metadata_dir, metadata_url, trusted_root=None) as client:
        client.refresh()


def download(
    metadata_dir: Path, metadata_url: str, names: list[str], base_url: str, target_dir: Path
) -> list[Path]:
    """Refresh, then fetch each target in order with one client; stop at the first failure."""
    done = []
    with TufClient(metadata_dir, metadata_url, trusted_root=None,
                   targets_base_url=base_url) as client:
        client.refresh()
        for name in names:
            info = client.get_target(name)
            dest = target_dir / target_filename(name)
            if not client.is_cached(info, dest):
                client.download_target(info, dest)
            done.append(dest)
    return done


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except UsageError as e:
        print(f"updog tuf-client: {e}\n\nusage:\n{USAGE}", file=sys.stderr)
        return 1
    metadata_dir = Path(args.metadata_dir)
    try:
        metadata_dir.mkdir(parents=True, exist_ok=True)
        if args.verb == "init":
            init(metadata_dir, Path(args.operands[0]))
        elif args.verb == "refresh":
            refresh(metadata_dir, args.metadata_url)
        else:
            for path in download(metadata_dir, args.metadata_url, args.target_names,
                                 args.target_base_url, Path(args.target_dir)):
                if args.verbose:
                    print(f"verified {path}")
    except (UpdateError, OSError) as e:
        print(f"updog tuf-client: {args.verb} failed: {e}", file=sys.stderr)
        return 1
    if args.verbose:
        print(f"updog tuf-client: {args.verb} OK")
    return 0
