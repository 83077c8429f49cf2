"""apiclient's command line: the subcommands, their options (each with its default), and
Bottlerocket's default ``raw`` subcommand; argparse is built for the one subcommand named (and
skipped entirely for a plain ``get``), to start fast.
"""

from __future__ import annotations

import os

from reconciler.apiclient.transport import ClientError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUBCOMMANDS = (
    "raw",
    "get",
    "set",
    "apply",
    "exec",
    "plan",
    "status",
    "history",
    "rollback",
    "confirm",
    "explain",
    "reboot",
    "sync",
    "events",
    "update",
)
# Options that take a value, to find the subcommand in argv (and insert the default ``raw``).
_VALUE_OPTIONS = {
    "-s",
    "--socket-path",
    "--log-level",
    "-u",
    "--uri",
    "-m",
    "-X",
    "--method",
    "-d",
    "--data",
    "--color",
}

def first_word(argv: list[str]) -> int:
    """Index of the first token that is neither an option nor an option's value."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            break
        if token.startswith("-") and token != "-":
            i += 2 if token in _VALUE_OPTIONS else 1
            continue
        break
    return i


def with_default_subcommand(argv: list[str]) -> list[str]:
    """Bottlerocket's ``raw`` is the default subcommand: ``apiclient -u /settings`` works."""
    i = first_word(argv)
    if i < len(argv) and argv[i] != "--":
        if argv[i] in SUBCOMMANDS:
            return argv
        raise ClientError(
            f"apiclient: unknown subcommand {argv[i]!r}; subcommands: {', '.join(SUBCOMMANDS)}"
        )
    if any(t in ("-h", "--help", "--version") for t in argv[:i]) and not any(
        t in ("-u", "--uri") or t.startswith(("-u", "--uri=")) for t in argv
    ):
        return argv  # top-level help or version
    return ["raw", *argv]


def subcommand_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names, to build only its parser (None: the whole parser)."""
    i = first_word(argv)
    return argv[i] if i < len(argv) and argv[i] in SUBCOMMANDS else None


def formatter_class() -> Any:
    """argparse's help formatter, without the ``shutil`` import (with ``bz2``, ``lzma``...) its
    ``__init__`` makes on every ``add_argument`` only to read the terminal width."""
    import argparse

    class Formatter(argparse.HelpFormatter):
        def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                     width: int | None = None):
            if width is None:
                try:
                    columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(2)[0]
                except (ValueError, OSError):
                    columns = 80
                width = max(columns - 2, 20)
            super().__init__(prog, indent_increment, max_help_position, width)

    return Formatter


def build_parser(only: str | None = None) -> Any:
    """The command line; with ``only``, just that subcommand's parser (a third of the start-up
    time of a ``get`` went into building the fourteen others)."""
    import argparse

    formatter = formatter_class()
    common = argparse.ArgumentParser(add_help=False, formatter_class=formatter)
    common.add_argument(
        "-s",
        "--socket-path",
        default=argparse.SUPPRESS,
        help="API socket (default $APICLIENT_SOCKET, else /run/api.sock)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="print the HTTP status to stderr (twice: requests too)",
    )
    common.add_argument(
        "--color", choices=("auto", "always", "never"), default=argparse.SUPPRESS,
        help="colour in human output (default auto: on a terminal, unless NO_COLOR is set)",
    )
    common.add_argument("--log-level", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog="apiclient",
        description="Client for the reconciler API on its Unix socket.",
        parents=[common],
        formatter_class=formatter,
        epilog="Without a subcommand, 'raw' is assumed: apiclient -u /settings",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def sub(name: str, help_text: str) -> argparse.ArgumentParser | None:
        if only is not None and name != only:
            return None
        return commands.add_parser(
            name, help=help_text, description=help_text, parents=[common],
            formatter_class=formatter,
        )

    if raw := sub("raw", "make one HTTP request (the default)"):
        raw.add_argument(
            "-u", "--uri", required=True, help="request path and query, e.g. /settings"
        )
        raw.add_argument("-m", "-X", "--method", default="GET", help="HTTP method (default GET)")
        raw.add_argument("-d", "--data", help="request body (default: none)")

    if get := sub("get", "print settings (and os, services...) under key prefixes, or one /uri"):
        get.add_argument(
            "prefixes", nargs="*", metavar="PREFIX|/URI",
            help="e.g. settings.motd, motd, os (default: os and settings); exit 1 when a prefix "
            "matches nothing",
        )
        get.add_argument(
            "--reveal", action="store_true",
            help="show secrets (host-container user-data, credentials...) instead of "
            "\"(redacted)\" (default: redacted, as 'explain' does; 'raw -u /settings' never "
            "redacts)",
        )

    if set_ := sub("set", "change settings in their own transaction, commit and apply"):
        set_.add_argument(
            "pairs", nargs="*", metavar="KEY=VALUE",
            help="e.g. motd=hi; KEY=null removes the key (its default comes back)",
        )
        set_.add_argument("-j", "--json", help="settings as a JSON object (inside 'settings')")
        set_.add_argument(
            "--confirm",
            metavar="SECONDS",
            help="try the change: unless 'apiclient confirm' is run within SECONDS (or the pass "
            "fails), the host returns to the settings before it by itself",
        )
        change_options(set_)

    if apply := sub("apply", "apply settings documents (TOML, YAML, JSON) all or nothing"):
        apply.add_argument(
            "inputs", nargs="*", metavar="FILE|-",
            help="files, file:// or http(s):// URIs; - is stdin (default: stdin)",
        )
        change_options(apply)

    if plan := sub("plan", "dry run: what committing a transaction would change"):
        plan.add_argument("--tx", default="default", help="transaction (default 'default')")
        plan.add_argument("--json", action="store_true", help="print the raw answer")

    if status := sub("status", "state, generations, reasons and the last reconcile receipt"):
        status.add_argument("--json", action="store_true", help="print the raw answer")

    if history := sub("history", "settings generations, newest first"):
        history.add_argument("--limit", type=int, default=20, help="how many (default 20)")
        history.add_argument("--before", type=int, help="only generations older than this one")
        history.add_argument("--json", action="store_true", help="print the raw answer")

    if rollback := sub("rollback", "restore the settings of an earlier generation"):
        rollback.add_argument(
            "--generation", type=int,
            help="target generation (default: the one before the live one)",
        )
        rollback.add_argument(
            "--no-wait", action="store_true", help="do not wait for the reconcile pass"
        )

    sub("confirm", "keep the change made with 'set --confirm' (stops its automatic rollback)")

    if explain := sub("explain", "where a setting's value comes from, and its history"):
        explain.add_argument("key", help="e.g. motd or settings.motd")
        explain.add_argument("--json", action="store_true", help="print the raw answer")

    sub("reboot", "reboot the host")

    if exec_ := sub(
        "exec", "run a command in a host container (stdin streamed, exit status kept)"
    ):
        terminal = exec_.add_mutually_exclusive_group()
        terminal.add_argument("-t", "--tty", action="store_true", default=None,
                              help="allocate a terminal (default: when stdin and stdout are one)")
        terminal.add_argument("-T", "--no-tty", dest="tty", action="store_false", default=None,
                              help="never allocate a terminal")
        exec_.add_argument("target", metavar="NAME", help="host container, e.g. admin")
        exec_.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]",
                           help="the command and its arguments, e.g. bash")

    if sync := sub("sync", "fetch the git source now and wait for its pass; exit 1 on failure"):
        sync.add_argument("--json", action="store_true", help="print the raw answer")

    if events := sub("events", "the daemon's recent events, oldest first"):
        events.add_argument(
            "-f", "--follow", action="store_true", help="keep printing new events (Ctrl-C stops)"
        )
        events.add_argument(
            "--since", type=int, default=0, help="only events after this id (default 0: all kept)"
        )
        events.add_argument(
            "--interval", type=float, default=1.0,
            help="seconds between polls with --follow (default 1)",
        )
        events.add_argument("--json", action="store_true", help="one JSON object per line")

    if update := sub("update", "check for, apply or cancel OS updates"):
        actions = update.add_subparsers(dest="update_command", metavar="ACTION", required=True)
        actions.add_parser(
            "check", help="refresh the list of available updates", parents=[common],
            formatter_class=formatter,
        )
        update_apply = actions.add_parser(
            "apply", help="download and activate the chosen update", parents=[common],
            formatter_class=formatter,
        )
        update_apply.add_argument("-c", "--check", action="store_true", help="check first")
        update_apply.add_argument(
            "-r", "--reboot", action="store_true", help="reboot afterwards"
        )
        actions.add_parser(
            "cancel", help="deactivate a staged update", parents=[common],
            formatter_class=formatter,
        )
        for action in actions.choices.values():
            action.add_argument(
                "--timeout", type=float, default=1800.0,
                help="seconds to wait for each step (default 1800)",
            )
    return parser


def change_options(parser: Any) -> None:
    """Options shared by ``set`` and ``apply``."""
    parser.add_argument(
        "--force", action="store_true",
        help="change keys the git source owns too (until git changes them again)",
    )
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print the plan (settings, files, services) and change nothing",
    )
    parser.add_argument(
        "--tx", help="stage the change in this transaction and leave it pending (no commit); "
        "'apiclient plan --tx NAME' shows it, 'apiclient -m POST -u "
        "/tx/commit_and_apply?tx=NAME' applies it",
    )


class Args:
    def __init__(self, **values: Any):
        self.__dict__.update(values)


def plain_get(argv: list[str]) -> Args | None:
    """``get PREFIX...`` without any option, parsed without argparse: importing it (with gettext
    and locale) and building the parser took more time than the rest of the most common call."""
    if argv[:1] != ["get"] or any(token.startswith("-") for token in argv[1:]):
        return None
    return Args(command="get", prefixes=argv[1:], reveal=False)


def version() -> str:
    try:
        from importlib.metadata import version

        return version("host-reconciler")
    except Exception:  # the zipapp carries no package metadata
        return "unknown (no package metadata)"


