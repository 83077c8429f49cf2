"""``reconciler``: the daemon (``serve``) and tools (``validate``, ``plan``, ``version``).

Every bad flag or file ends in a one-line ``reconciler: ...`` message and a non-zero exit, never a
traceback; every option's help names its default (``_Formatter``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reconciler.osinfo import package_version
from reconciler.platform.imds import (
    DEFAULT_DEADLINE,
    DEFAULT_ENDPOINT,
    IPV6_ENDPOINT,
    check_endpoint,
)

PROVIDERS_HELP = """\
At first boot, user data is read from these providers, in this order, each applied over the
earlier ones (Bottlerocket's early-boot-config order; paths under --root):
  10-local-defaults     local/user-data-defaults.toml                  every variant
  20-local-file         --user-data FILE..., else var/lib/bottlerocket/user-data.toml
  40-ec2-imds           IMDSv2 GET /latest/user-data (--imds-endpoint)  aws-* variants
  45-vmware-guestinfo   vmware-rpctool 'info-get guestinfo.userdata'    vmware-* variants
  99-local-overrides    local/user-data-overrides.toml                 every variant
A provider that does not answer (IMDS past --imds-deadline) is tried again at the next boot.
Documents may be TOML, YAML or JSON, gzip-compressed or base64-encoded."""

# Kept literal (not reconciler.schema.VARIANT_HELP): the CLI imports the schema lazily.
VARIANT_HELP = (
    "aws-dev, aws-k8s, aws-ecs or a Bottlerocket variant name (aws-k8s-1.30, aws-ecs-2, "
    "metal-k8s-1.30, vmware-k8s-1.31, ...)"
)


DESCRIPTION = """\
The host reconciler: the daemon (serve) and its offline tools (validate, plan, generate,
version). 'reconciler COMMAND --help' describes each command."""
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Plain-text help whose every option ends with its default, unless it says it already or
    there is none to show (a flag, an empty list, nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, [], argparse.SUPPRESS)
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler", description=DESCRIPTION, formatter_class=_Formatter
    )
    parser.add_argument(
        "--log-level", default="info", type=str.lower, choices=LOG_LEVELS,
        help="the least severe log lines printed",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, **kwargs: object) -> argparse.ArgumentParser:
        kwargs.setdefault("description", help_text[:1].upper() + help_text[1:] + ".")
        return commands.add_parser(name, help=help_text, formatter_class=_Formatter, **kwargs)

    serve = command("serve", "run the daemon (or one pass with --once)")
    _state_args(serve)
    serve.add_argument(
        "--socket", type=Path, metavar="PATH", help="API socket (default: <state-dir>/api.sock)"
    )
    serve.add_argument(
        "--user-data",
        action="append",
        default=[],
        metavar="FILE",
        help="user data applied at first boot; later files override earlier (they replace the "
        "20-local-file provider's /var/lib/bottlerocket/user-data.toml under --root)",
    )
    serve.add_argument(
        "--imds-endpoint",
        type=_endpoint,
        metavar="URL",
        help="EC2 instance metadata service, for user data and platform settings on aws-* "
        f"variants (IPv6: {IPV6_ENDPOINT}); default: {DEFAULT_ENDPOINT} when the firmware says "
        "this is an EC2 instance, else not tried",
    )
    serve.add_argument(
        "--imds-deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        metavar="SECONDS",
        help="the longest boot waits for the metadata service, retries included "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--once",
        action="store_true",
        help="run the boot pipeline, apply the --desired files and run one pass, print the "
        "receipt (a summary; JSON with --json), exit: 0 when the pass succeeded",
    )
    serve.add_argument(
        "--json", action="store_true",
        help="with --once: print the receipt as JSON instead of the summary",
    )

    serve.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between periodic passes that catch drift the file watch missed",
    )
    serve.add_argument(
        "--disk", metavar="PATH",
        help="OS disk or disk image holding the A/B partition sets (default: none, updates "
        "are off)",
    )
    serve.add_argument(
        "--desired",
        action="append",
        default=[],
        metavar="FILE",
        help="local desired-state file, applied at start and whenever it changes",
    )
    serve.add_argument(
        "--metrics-listen",
        type=_listen_address,
        metavar="HOST:PORT",
        help="also serve GET /metrics (Prometheus text) over TCP on this address, e.g. "
        "127.0.0.1:9101 ([::1]:9101 for IPv6; port 0 picks one, logged); default: off, "
        "/metrics is on the API socket only",
    )
    serve.add_argument(
        "--allowed-uids",
        type=_ids,
        metavar="UID[,UID...]",
        help="access policy: only these callers' uids (SO_PEERCRED) may use the API, besides "
        "root and --allowed-gids; others get 403 (default: anyone who can open the socket)",
    )
    serve.add_argument(
        "--allowed-gids",
        type=_ids,
        metavar="GID[,GID...]",
        help="access policy: callers whose (effective) gid is one of these may use the API",
    )
    serve.add_argument(
        "--store-reserve", type=_size, default=16 << 20, metavar="SIZE",
        help="room kept for the store on the state disk: writes that would eat it get 507, "
        "disabling a host container always works (default: 16M; 0: none)",
    )
    serve.add_argument(
        "--host-container-quota", type=_size, default=None, metavar="SIZE",
        help="give each host container's persistent storage a file system of its own of SIZE "
        "(a loop-mounted ext4 image; needs root), so it cannot fill the state disk "
        "(default: none, storage shares the state disk)",
    )

    validate = command(
        "validate",
        "check user-data documents offline",
        description="Check user-data documents offline, as the boot pipeline would.",
        epilog=PROVIDERS_HELP,
    )
    validate.add_argument(
        "--variant", default=None, help=VARIANT_HELP + " (default: aws-dev)",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="TOML, YAML or JSON documents")

    plan = command("plan", "dry run: what a pass would change now")
    _state_args(plan)
    plan.add_argument(
        "--json", action="store_true",
        help="print the plan as JSON (default: a summary, diffs coloured on a terminal)",
    )
    _color_arg(plan)
    _color_arg(serve)

    generate = command(
        "generate", "run one setting generator and print its value as JSON (exit 2: no value)"
    )
    generate.add_argument("name", help="generator name (GET /metadata/setting-generators)")
    generate.add_argument(
        "--imds-endpoint", type=_endpoint, metavar="URL", default=None,
        help="EC2 instance metadata service (default: tried only on an EC2 instance)",
    )
    generate.add_argument(
        "--imds-deadline", type=float, default=DEFAULT_DEADLINE, metavar="SECONDS",
        help="the longest the metadata service is waited for",
    )

    command("version", "print the version")

    fleet = command("fleet", "the fleet, as its hosts report it into etcd")
    fleet_commands = fleet.add_subparsers(dest="fleet_command", required=True)
    fleet_status = fleet_commands.add_parser(
        "status", formatter_class=_Formatter,
        help="per host: git revision, OS version, rollout result, reboot slot held")
    fleet_status.add_argument("--etcd", required=True, metavar="URL",
                              help="the fleet's etcd, e.g. http://10.0.0.5:2379")
    fleet_status.add_argument("--json", action="store_true", help="JSON instead of a table")

    images = command("images", "the project's own host-container images")
    image_commands = images.add_subparsers(dest="images_command", required=True)
    build = image_commands.add_parser(
        "build", formatter_class=_Formatter,
        help="build the admin and control images (cached; offline but for Debian's package "
        "registry)")
    build.add_argument("roles", nargs="*", metavar="ROLE", help="admin, control (default both)")
    build.add_argument("--output", type=Path, help="image directory (default: the machine's,"
                       " $RECONCILER_IMAGES or /var/lib/host-reconciler/images)")
    return parser


def _color_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto",
        help="colour in the summary: auto is on a terminal unless NO_COLOR is set",
    )


def _style(choice: str) -> Any:
    """The summary's colours: ``--color``, else a terminal without ``NO_COLOR``/``TERM=dumb``."""
    import os

    from reconciler.apiclient.format import Style

    if choice != "auto":
        return Style(choice == "always")
    return Style(sys.stdout.isatty() and not os.environ.get("NO_COLOR")
                 and os.environ.get("TERM") != "dumb")


def _print_plan(answer: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    from reconciler.apiclient.format import plan_lines

    title = f"Plan for {args.state_dir}"
    print("\n".join(plan_lines(answer, title, _style(args.color))))
    return 0


def _receipt_reporter(args: argparse.Namespace) -> Any:
    """How ``serve --once`` prints its receipt: JSON (``--json``), else the summary."""
    if args.json:
        return None

    def report(receipt: dict[str, Any]) -> None:
        from reconciler.apiclient.format import receipt_lines

        out, err, _ = receipt_lines(receipt, _style(args.color))
        if out:
            print("\n".join(out))
        if err:
            print("\n".join(err), file=sys.stderr)

    return report


def _endpoint(text: str) -> str:
    try:
        check_endpoint(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT``) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9101)")
    return host, int(port)


def _ids(text: str) -> list[int]:
    """``1000,1001`` -> [1000, 1001]."""
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ids") from None
    if not ids or any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ids")
    return ids


def _size(text: str) -> int:
    """A size in bytes: ``1048576``, ``64K``, ``16M``, ``2G`` (powers of 1024); 0 is off."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units \
        else (text, 1)
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or with K, M or G)")
    return int(number) * unit


def _state_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, required=True, metavar="DIR",
        help="where the settings store, the API socket and the daemon's own files live",
    )
    parser.add_argument(
        "--root", type=Path, metavar="DIR",
        help="prefix for rendered files (default: <state-dir>/root)",
    )
    parser.add_argument(
        "--variant", default=None,
        help=VARIANT_HELP + " (default: the state dir's, else aws-dev)",
    )
    parser.add_argument(
        "--renderers",
        type=Path,
        metavar="DIR",
        help="directory with metadata.toml and templates/ (default: the built-in ones)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except OSError as error:  # a file or directory named on the command line
        where = f" {error.filename}" if error.filename else ""
        print(f"reconciler {args.command}:{where}: {error.strerror or error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "version":
        print(package_version())
        return 0
    if args.command == "validate":
        return _validate(args.files, args.variant)
    if args.command == "generate":
        return _generate(args.name, args.imds_endpoint, args.imds_deadline)
    if args.command == "images":
        return _build_images(args.roles, args.output)
    if args.command == "fleet":
        from reconciler.fleet import view

        return view.main(args.etcd, args.json)
    if args.command == "serve":
        _without_rich()
    from reconciler import logs
    from reconciler.host import HostError, open_host

    logs.configure(args.log_level)
    try:
        serving = args.command == "serve"
        host = open_host(args.state_dir, args.root, args.variant, args.renderers,
                         getattr(args, "disk", None), exclusive=serving, create=serving,
                         store_reserve=getattr(args, "store_reserve", None),
                         container_quota=getattr(args, "host_container_quota", None))
    except HostError as error:
        print(f"reconciler: {error}", file=sys.stderr)
        return 2
    from reconciler import redact
    from reconciler.platform.providers import Platform

    redact.track(host.schema, host.store)  # no secret in a log line, whatever the command
    with host:
        if args.command == "plan":
            return _print_plan(host.dry_run(), args)
        platform = Platform(args.imds_endpoint, args.imds_deadline)
        if args.once:
            return host.serve_once(args.user_data, platform, args.desired,
                                   _receipt_reporter(args))
        from reconciler.daemon import serve

        return serve(host, args.socket, args.user_data, args.interval, args.desired,
                     allowed=(args.allowed_uids, args.allowed_gids), platform=platform,
                     metrics_listen=args.metrics_listen)


def _without_rich() -> None:
    """Keep ``rich`` out of the daemon: structlog imports it (for pretty tracebacks on a
    terminal) whenever it is installed, as it is in a development venv (import-linter and
    schemathesis need it), which cost the idle daemon 3.6 MiB for nothing; a host's install
    has no rich. Marking it absent makes the daemon the same in both (bench/bench_idle_rss.py)."""
    if "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]


def _build_images(roles: Sequence[str], output: Path | None) -> int:
    from reconciler.hostimages.build import ROLES, BuildError, build_all

    def progress(message: str) -> None:
        print(f"reconciler images: {message}", file=sys.stderr, flush=True)

    try:
        built = build_all(output, roles or tuple(ROLES), progress)
    except BuildError as error:
        print(f"reconciler images: {error}", file=sys.stderr)
        return 1
    for image in built:
        print(f"{image.reference}: {'up to date' if image.cached else 'built'} ({image.archive})")
    return 0


def _validate(files: Sequence[str], variant: str | None) -> int:
    from hostcore.documents import DocumentError, load_document, settings_of
    from hostcore.keys import merge_patch
    from reconciler.schema import DEFAULT_VARIANT, Schema, UnknownVariant

    try:
        schema = Schema.load(variant or DEFAULT_VARIANT)
    except UnknownVariant as error:
        print(f"reconciler validate: {error}", file=sys.stderr)
        return 2
    failed = False
    for name in files:
        try:
            settings = settings_of(load_document(name), name)
            # As the host applies it: on top of the defaults (admin's source comes from there).
            problems = schema.validate(merge_patch(schema.defaults(), settings))
        except DocumentError as error:
            print(f"{error}", file=sys.stderr)
            failed = True
            continue
        for problem in problems:
            print(f"{name}: {problem}", file=sys.stderr)
        failed = failed or bool(problems)
        if not problems:
            print(f"{name}: valid for variant {schema.variant}")
    return 1 if failed else 0


def _generate(name: str, endpoint: str | None, deadline: float) -> int:
    """Sundog's contract: the value as JSON on stdout and exit 0, or exit 2 for no value."""
    import random

    from reconciler.generators import Context, generator_names, run_one
    from reconciler.platform.facts import read_facts
    from reconciler.platform.imds import ImdsClient, ImdsUnavailable, on_ec2

    if name not in generator_names():
        print(f"reconciler generate: unknown generator {name!r}; known: "
              f"{', '.join(generator_names())}", file=sys.stderr)
        return 1
    facts = None
    if endpoint or on_ec2():
        try:
            facts = read_facts(ImdsClient(endpoint or DEFAULT_ENDPOINT, deadline))
        except ImdsUnavailable as error:
            print(f"reconciler generate: {error}", file=sys.stderr)
    value = run_one(name, Context(random.SystemRandom(), facts))
    if value is None:
        return 2
    print(json.dumps(value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
