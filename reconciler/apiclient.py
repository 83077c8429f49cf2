"""apiclient: talk to the reconciler's API on its Unix socket (Bottlerocket-compatible).

Standard library only, so it can ship as a one-file zipapp into any container that has python3
(with ``hostcore``'s document parser, which ``apply`` shares with user data, and its small HTTP
client ``hostcore.unixhttp``); every command imports only what its path needs, to start fast:
``get`` within 1.3x of ``python -c pass`` (``bench/bench_apiclient.py``).

Raw form (Bottlerocket's README, the default subcommand)::

    apiclient -u /settings
    apiclient -m PATCH -u /settings -d '{"motd": "my own value!"}'
    apiclient -u /settings -X PATCH -d '...'
    apiclient -m POST -u /tx/commit_and_apply

Subcommands: raw, get, set, apply, exec, plan, status, history, rollback, confirm, explain,
reboot, sync, events, update check|apply|cancel.

The socket is ``-s/--socket-path``, else ``$APICLIENT_SOCKET``, else ``/run/api.sock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from hostcore import unixhttp  # in the zipapp too (reconciler/containers/executor.py)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~2 ms at startup; annotations are not evaluated
    from typing import Any

DEFAULT_SOCKET = "/run/api.sock"
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
}
NAMESPACES = ("settings", "os", "services", "configuration-files")
# commit_and_apply?wait=true lasts as long as the reconcile pass; $APICLIENT_TIMEOUT lowers it
REQUEST_TIMEOUT = float(os.environ.get("APICLIENT_TIMEOUT") or 600.0)


class ClientError(Exception):
    """A failure to report on stderr (exit 1)."""


class ResponseError(ClientError):
    """A non-2xx answer: ``Status <code> when <method>ing <uri>: <body>``."""

    def __init__(self, method: str, uri: str, status: int, body: str):
        self.method, self.uri, self.status, self.body = method, uri, status, body
        message = f"Status {status} when {method}ing {uri}: {body}"
        if status in (404, 405) and body.strip() in ("404: Not Found", "405: Method Not Allowed"):
            message += "\n(the API server does not provide this endpoint)"
        super().__init__(message)

    def reason(self, verbose: int = 0) -> str:
        """The server's reason first, the status at the end (with the request under ``-v``);
        the ``transaction '<name>': `` prefix of apiclient's own transactions dropped."""
        text = self.body.strip() or "(no reason given)"
        if text.startswith("transaction '"):
            end = text.find("': ", len("transaction '"))
            if end > 0 and text[len("transaction '"):end].startswith("apiclient-"):
                text = text[end + 3:]
        where = f" when {self.method}ing {self.uri}" if verbose else ""
        if self.status in (404, 405) and text in ("404: Not Found", "405: Method Not Allowed"):
            text = f"the API server does not provide {self.uri.split('?', 1)[0]}"
        return f"{text} (status {self.status}{where})"


# ---- transport ---------------------------------------------------------------------------------


class Client:
    """One HTTP/1.1 connection to the API socket, reused across requests."""

    def __init__(self, socket_path: str, verbose: int = 0):
        self.socket_path = socket_path
        self.verbose = verbose
        self._conn: Any = None
        self.content_type = ""  # of the last answer

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = unixhttp.UnixHTTPConnection(self.socket_path, timeout=REQUEST_TIMEOUT)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, uri: str, data: str | bytes | None = None
    ) -> tuple[int, str, str]:
        """Send one request; returns (status, reason, body text). Raises ClientError on I/O."""
        method = method.upper()
        body = data.encode() if isinstance(data, str) else data
        headers = {"Content-Type": "application/json"}
        if self.verbose > 1:
            print(f"> {method} {uri}", file=sys.stderr)
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.connected
            try:
                response = conn.request(method, uri, body=body, headers=headers)
                break
            except ValueError as error:  # a space or line break in the URI
                raise ClientError(f"apiclient: {error}") from None
            except (FileNotFoundError, ConnectionRefusedError, PermissionError) as error:
                self.close()
                raise ClientError(
                    f"Failed to connect to API socket {self.socket_path}: {error.strerror or error}"
                ) from None
            except OSError as error:
                self.close()
                # A kept-alive connection the server had closed: retry once on a fresh one.
                stale = isinstance(
                    error, BrokenPipeError | ConnectionResetError | unixhttp.RemoteDisconnected
                )
                if attempt == 2 or not reused or not stale:
                    raise ClientError(
                        f"Failed to {method} {uri} on {self.socket_path}: {error}"
                    ) from None
        text = response.body.decode("utf-8", errors="replace")
        self.content_type = (response.header("content-type") or "").split(";")[0].strip()
        if self.verbose > 1:
            print(f"< {response.status} {response.reason}", file=sys.stderr)
        return response.status, response.reason, text

    def call(self, method: str, uri: str, data: Any = None) -> Any:
        """Request with a JSON body (when given); JSON answer (None when empty); non-2xx raises."""
        payload = None if data is None else json.dumps(data)
        status, _, text = self.request(method, uri, payload)
        if not 200 <= status < 300:
            raise ResponseError(method.upper(), uri, status, text)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            if self.content_type in ("application/json", "text/html"):  # not what it says, or
                # not the daemon at all (a proxy's page)
                shown = " ".join(text.split())[:60]
                raise ClientError(
                    f"Failed to {method.upper()} {uri} on {self.socket_path}: the answer is not "
                    f"JSON ({self.content_type or 'no content type'}): {shown!r}"
                ) from None
            return text


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~,")


def _quote(text: str) -> str:
    """Percent-encode a query value (``urllib.parse.quote`` with ``safe=','``, without its
    import, which costs more than the rest of a ``get``)."""
    return "".join(
        chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


def _query(path: str, **params: Any) -> str:
    parts = [
        f"{name}={_quote(str(value))}"
        for name, value in params.items()
        if value is not None
    ]
    return path + ("?" + "&".join(parts) if parts else "")


def _random_suffix() -> str:
    return os.urandom(8).hex()


# ---- argument parsing --------------------------------------------------------------------------


def _first_word(argv: list[str]) -> int:
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


def _with_default_subcommand(argv: list[str]) -> list[str]:
    """Bottlerocket's ``raw`` is the default subcommand: ``apiclient -u /settings`` works."""
    i = _first_word(argv)
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


def _subcommand_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names, to build only its parser (None: the whole parser)."""
    i = _first_word(argv)
    return argv[i] if i < len(argv) and argv[i] in SUBCOMMANDS else None


def _formatter_class() -> Any:
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


def _parser(only: str | None = None) -> Any:
    """The command line; with ``only``, just that subcommand's parser (a third of the start-up
    time of a ``get`` went into building the fourteen others)."""
    import argparse

    formatter = _formatter_class()
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
        _change_options(set_)

    if apply := sub("apply", "apply settings documents (TOML, YAML, JSON) all or nothing"):
        apply.add_argument(
            "inputs", nargs="*", metavar="FILE|-",
            help="files, file:// or http(s):// URIs; - is stdin (default: stdin)",
        )
        _change_options(apply)

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
        terminal.add_argument("-T", "--no-tty", dest="tty", action="store_false",
                              help="never allocate a terminal")
        exec_.add_argument("target", metavar="NAME", help="host container, e.g. admin")
        exec_.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")

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


def _change_options(parser: Any) -> None:
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


class _Args:
    def __init__(self, **values: Any):
        self.__dict__.update(values)


def _plain_get(argv: list[str]) -> _Args | None:
    """``get PREFIX...`` without any option, parsed without argparse: importing it (with gettext
    and locale) and building the parser took more time than the rest of the most common call."""
    if argv[:1] != ["get"] or any(token.startswith("-") for token in argv[1:]):
        return None
    return _Args(command="get", prefixes=argv[1:])


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("host-reconciler")
    except Exception:  # the zipapp carries no package metadata
        return "unknown (no package metadata)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        _parser().print_help(sys.stderr)
        return 2
    try:
        argv = _with_default_subcommand(argv)
    except ClientError as error:
        print(str(error), file=sys.stderr)
        return 2
    args = _plain_get(argv) or _parser(_subcommand_of(argv)).parse_args(argv)
    if getattr(args, "version", False):
        print(f"apiclient {_version()}")
        return 0
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    socket_path = (
        getattr(args, "socket_path", None) or os.environ.get("APICLIENT_SOCKET") or DEFAULT_SOCKET
    )
    verbose = getattr(args, "verbose", 0) or 0
    client = Client(socket_path, verbose)
    handler = globals()["cmd_" + args.command.replace("-", "_")]
    try:
        return handler(client, args)
    except ResponseError as error:  # the raw form keeps Bottlerocket's wording, byte for byte
        print(str(error) if args.command == "raw" else error.reason(verbose), file=sys.stderr)
        return 1
    except ClientError as error:
        print(str(error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    finally:
        client.close()


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# ---- exec --------------------------------------------------------------------------------------


def cmd_exec(client: Client, args: Any) -> int:
    if not args.argv:
        raise ClientError("apiclient exec: a command to run is required: exec NAME CMD [ARGS...]")
    from reconciler import wsclient

    tty = args.tty if args.tty is not None else (os.isatty(0) and os.isatty(1))
    rows, cols = _terminal_size()
    try:
        ws = wsclient.connect(client.socket_path, "/exec")
    except wsclient.WebSocketError as error:
        raise ClientError(str(error)) from None
    except OSError as error:
        raise ClientError(
            f"Failed to connect to API socket {client.socket_path}: {error.strerror or error}"
        ) from None
    init = {"target": args.target, "command": args.argv, "tty": tty, "rows": rows,
            "cols": cols}
    ws.send_text(json.dumps(init))
    restore = _raw_terminal() if tty else None
    try:
        return _exec_session(ws, tty)
    finally:
        if restore is not None:
            restore()
        ws.close()


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(1 if os.isatty(1) else 0)
        return size.lines, size.columns
    except OSError:
        return 24, 80


def _raw_terminal() -> Any:
    """Our stdin in raw mode (keys reach the remote terminal as typed); the undo."""
    if not os.isatty(0):
        return None
    import termios
    import tty as tty_module

    saved = termios.tcgetattr(0)
    tty_module.setraw(0)
    return lambda: termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _exec_session(ws: Any, tty: bool) -> int:
    import signal
    import threading

    from reconciler import wsclient

    def forward_stdin() -> None:
        try:
            while data := os.read(0, 65536):
                ws.send_binary(data)
            ws.send_text('{"type": "eof"}')
        except (OSError, wsclient.WebSocketError):
            pass

    if tty and os.isatty(1):
        def resized(_signum: int, _frame: Any) -> None:
            rows, cols = _terminal_size()
            with contextlib.suppress(OSError, wsclient.WebSocketError):
                ws.send_text(json.dumps({"type": "resize", "rows": rows, "cols": cols}))

        signal.signal(signal.SIGWINCH, resized)
    threading.Thread(target=forward_stdin, name="stdin", daemon=True).start()
    while True:
        try:
            kind, payload = ws.receive()
        except EOFError:
            raise ClientError("apiclient exec: the server closed the connection") from None
        if kind == wsclient.BINARY and payload:
            fd = 2 if payload[:1] == b"\x02" else 1
            data = payload[1:]
            while data:
                data = data[os.write(fd, data):]
        elif kind == wsclient.TEXT:
            message = json.loads(payload)
            if message.get("type") == "exit":
                return int(message.get("code", 1))
            if message.get("type") == "error":
                raise ClientError(f"apiclient exec: {message.get('message')}")
        elif kind == wsclient.CLOSE:
            raise ClientError("apiclient exec: the server closed the session without an exit code")


# ---- raw ---------------------------------------------------------------------------------------


def cmd_raw(client: Client, args: Any) -> int:
    method = args.method.upper()
    status, reason, body = client.request(method, args.uri, args.data)
    if client.verbose:
        print(f"{status} {reason}".rstrip(), file=sys.stderr)
    if not 200 <= status < 300:
        raise ResponseError(method, args.uri, status, body)
    if body:
        sys.stdout.write(body if body.endswith("\n") else body + "\n")
    return 0


# ---- get ---------------------------------------------------------------------------------------


def _deep_merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def _model_prefix(prefix: str) -> str:
    """A raw key prefix; ``motd`` (matching no namespace at all) means ``settings.motd``."""
    if any(ns.startswith(prefix) or prefix.startswith(ns) for ns in NAMESPACES):
        return prefix
    return "settings." + prefix


def cmd_get(client: Client, args: Any) -> int:
    uris = [p for p in args.prefixes if p.startswith("/")]
    if uris:
        if len(args.prefixes) > 1:
            raise ClientError("apiclient get: give either key prefixes or one /uri, not both")
        _print_json(client.call("GET", uris[0]))
        return 0
    result: dict[str, Any] = {}
    missing = []
    for prefix in args.prefixes or ["os.", "settings."]:
        if not prefix:
            raise ClientError("apiclient get: empty prefix")
        answer = client.call("GET", _query("/", prefix=_model_prefix(prefix)))
        if isinstance(answer, dict) and answer:
            _deep_merge(result, answer)
        else:
            missing.append(_model_prefix(prefix))
    if missing and args.prefixes:
        if result:
            _print_json(result)
        raise ClientError(
            f"apiclient get: {', '.join(missing)}: not set (nothing under "
            f"{'this prefix' if len(missing) == 1 else 'these prefixes'}); "
            "'apiclient get settings' lists what is"
        )
    _print_json(result)
    return 0


# ---- set and apply -----------------------------------------------------------------------------


def _commit_and_apply(client: Client, tx: str, confirm: str | None = None) -> int:
    """Commit ``tx``, wait for the reconcile pass, report it; 1 when the pass failed."""
    query = {"tx": tx, "wait": "true"} | ({"confirm": confirm} if confirm else {})
    try:
        answer = client.call("POST", _query("/tx/commit_and_apply", **query))
    except ClientError:
        _discard(client, tx)
        raise
    if not isinstance(answer, dict):  # a server without wait support: a list of keys
        changed = answer or []
        print(f"Committed {len(changed)} changed setting(s): {', '.join(sorted(changed))}")
        return 0
    changed = sorted(answer.get("changed") or [])
    generation = answer.get("generation")
    if changed:
        print(f"Changed ({len(changed)}), generation {generation}:")
        for key in changed:
            print(f"  {key}")
    else:
        print(f"No setting changed (generation {generation})")
    trial = answer.get("confirm")
    if isinstance(trial, dict):
        when = time.strftime("%H:%M:%S", time.localtime(trial["deadline"]))
        print(f"On trial: run 'apiclient confirm' before {when}, or the settings of "
              f"generation {trial['previous']} come back by themselves")
    return _report_receipt(answer.get("receipt"))


def _report_receipt(receipt: Any) -> int:
    if not isinstance(receipt, dict):
        print("Applied: no receipt")
        return 0
    steps = receipt.get("steps") or []
    duration = receipt.get("duration_ms")
    timing = f" in {duration:.0f} ms" if isinstance(duration, int | float) else ""
    if receipt.get("ok"):
        work = f"{len(steps)} step(s)" if steps else "nothing to do"
        print(f"Applied: ok (generation {receipt.get('generation')}{timing}, {work})")
        for step in steps:
            print(f"  {_step_line(step)}")
        return 0
    print(
        f"Apply FAILED (generation {receipt.get('generation')}{timing})",
        file=sys.stderr,
    )
    if receipt.get("error"):
        print(f"  error: {receipt['error']}", file=sys.stderr)
    for step in steps:
        if step.get("result") == "failed":
            print(f"  {_step_line(step)}", file=sys.stderr)
    return 1


def _step_line(step: dict[str, Any]) -> str:
    detail = step.get("detail") or ""
    path = step.get("path")
    name = f"{step.get('name')} ({path})" if path else str(step.get("name"))
    return f"{step.get('kind')} {name}: {step.get('result')}" + (f" - {detail}" if detail else "")


def _discard(client: Client, tx: str) -> None:
    try:
        client.call("DELETE", _query("/tx", tx=tx))
    except ClientError as error:
        print(f"warning: could not discard transaction {tx!r}: {error}", file=sys.stderr)


def _null_pairs(pairs: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split ``KEY=null`` off the pairs: a JSON merge patch deleting those keys (Bottlerocket's
    keypair form would store the string "null"). Keys are parsed as everywhere else
    (``hostcore.keys``: quoted segments such as ``node-labels."a.b/c"``)."""
    kept: list[str] = []
    deleted: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if value != "null":
            kept.append(pair)
            continue
        name = key.strip()
        deleted[name if name.startswith("settings.") else f"settings.{name}"] = None
    if not deleted:
        return kept, {}
    from hostcore.keys import InvalidKeyError, unflatten  # only on this path: start fast

    try:
        return kept, unflatten(deleted, strip=1)
    except InvalidKeyError as error:
        raise ClientError(f"apiclient set: invalid key: {error}") from None


def cmd_set(client: Client, args: Any) -> int:
    if bool(args.pairs) == bool(args.json):
        raise ClientError("apiclient set: give KEY=VALUE pairs or -j/--json JSON (one of them)")
    tx = args.tx or f"apiclient-set-{_random_suffix()}"
    force = "true" if args.force else None
    patches: list[tuple[str, Any]] = []
    if args.json:
        try:
            body = json.loads(args.json)
        except json.JSONDecodeError as error:
            raise ClientError(f"apiclient set: --json is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise ClientError("apiclient set: --json must be a JSON object")
        patches.append((_query("/settings", tx=tx, force=force), body))
    else:
        bad = [p for p in args.pairs if "=" not in p or p.startswith("=")]
        if bad:
            raise ClientError(f"apiclient set: invalid KEY=VALUE: {bad[0]!r}")
        pairs, deleted = _null_pairs(args.pairs)
        if pairs:
            patches.append(
                (_query("/settings/keypair", tx=tx, force=force), {"request_payload": pairs})
            )
        if deleted:
            patches.append((_query("/settings", tx=tx, force=force), deleted))
    try:
        for uri, payload in patches:
            client.call("PATCH", uri, payload)
    except ClientError:
        if not args.tx:
            _discard(client, tx)
        raise
    return _finish_change(client, tx, args, getattr(args, "confirm", None))


def _finish_change(client: Client, tx: str, args: Any, confirm: str | None = None) -> int:
    """After ``set``/``apply`` staged ``tx``: print the plan and discard it (``--dry-run``), leave
    it pending (``--tx``), or commit and apply it."""
    if args.dry_run:
        try:
            return _print_plan(client.call("POST", _query("/tx/plan", tx=tx)), tx)
        finally:
            if not args.tx:
                _discard(client, tx)
    if args.tx:
        print(f"Staged in transaction {tx!r}: 'apiclient plan --tx {tx}' shows it; "
              f"'apiclient -m POST -u /tx/commit_and_apply?tx={tx}' applies it")
        return 0
    return _commit_and_apply(client, tx, confirm)


def cmd_confirm(client: Client, args: Any) -> int:
    client.call("POST", "/tx/confirm")
    print("Confirmed: the change stays")
    return 0


def _read_input(name: str) -> tuple[bytes, str]:
    """(bytes, label) of one apply input: ``-`` is stdin, else a file, file:// or http(s)://."""
    if name == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    if name.startswith(("http://", "https://")):
        from urllib.request import urlopen

        try:
            with urlopen(name, timeout=60) as response:
                return response.read(), name
        except OSError as error:
            raise ClientError(f"{name}: cannot fetch: {error}") from None
    path = name[len("file://") :] if name.startswith("file://") else name
    try:
        with open(path, "rb") as handle:
            return handle.read(), name
    except OSError as error:
        raise ClientError(f"{name}: cannot read: {error.strerror or error}") from None


def _parse_settings(data: bytes, label: str) -> dict[str, Any]:
    """The ``settings`` of one document, parsed exactly as user data is (``hostcore.documents``:
    TOML, YAML or JSON by extension, else sniffed; gzip detected; dates and NaN refused)."""
    from hostcore.documents import DocumentError, parse_document, settings_of

    try:
        return settings_of(parse_document(data, label), label)
    except DocumentError as error:
        raise ClientError(str(error)) from None


def cmd_apply(client: Client, args: Any) -> int:
    inputs = args.inputs or ["-"]
    if inputs.count("-") > 1:
        raise ClientError("apiclient apply: stdin ('-') can be given only once")
    # Read and parse everything before touching the server: a bad document changes nothing.
    documents = [_parse_settings(*_read_input(name)) for name in inputs]
    tx = args.tx or f"apiclient-apply-{_random_suffix()}"
    force = "true" if args.force else None
    try:
        for name, settings in zip(inputs, documents, strict=True):
            try:
                client.call("PATCH", _query("/settings", tx=tx, force=force), settings)
            except ResponseError as error:
                label = "<stdin>" if name == "-" else name
                raise ClientError(f"{label}: {error.reason(client.verbose)}") from None
    except ClientError:
        if not args.tx:
            _discard(client, tx)
        raise
    return _finish_change(client, tx, args)


# ---- plan, status, history, rollback, explain --------------------------------------------------


def _value(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float):
        return str(stamp)
    import time

    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(stamp))


def cmd_plan(client: Client, args: Any) -> int:
    answer = client.call("POST", _query("/tx/plan", tx=args.tx))
    if args.json:
        _print_json(answer)
        return 0
    return _print_plan(answer, args.tx)


def _print_plan(answer: dict[str, Any], tx: str) -> int:
    """The plan of ``tx`` for people; 1 when it holds errors."""
    settings = answer.get("settings") or []
    files = answer.get("files") or []
    services = answer.get("services") or []
    errors = answer.get("errors") or {}
    print(f"Plan for transaction {tx!r} (live generation {answer.get('generation')})")
    if settings:
        print(f"Settings ({len(settings)}):")
        for change in settings:
            key, old, new = change.get("key"), change.get("old"), change.get("new")
            if old is None:
                print(f"  + {key} = {_value(new)}")
            elif new is None:
                print(f"  - {key} (was {_value(old)})")
            else:
                print(f"  ~ {key}: {_value(old)} -> {_value(new)}")
    else:
        print("Settings: no pending change")
    if files:
        print(f"Files ({len(files)}):")
        for item in files:
            reason = f" ({item['reason']})" if item.get("reason") else ""
            print(f"  {item.get('name')} {item.get('path')}{reason}")
            for line in (item.get("diff") or "").splitlines():
                print(f"    {line}")
    else:
        print("Files: none would change")
    if services:
        print(f"Services ({len(services)}):")
        for svc in services:
            action = "would restart (skipped: sandbox)" if svc.get("skipped") else "would restart"
            keys = ", ".join(svc.get("changed_settings") or [])
            reason = f" - {svc['reason']}" if svc.get("reason") else ""
            print(f"  {svc.get('name')}: {action}{reason}" + (f" [{keys}]" if keys else ""))
    else:
        print("Services: none would restart")
    containers = [c for c in answer.get("containers") or [] if c.get("action") != "keep"]
    if containers:
        print(f"Host containers ({len(containers)}):")
        for item in containers:
            reason = f" - {item['reason']}" if item.get("reason") else ""
            print(f"  {item.get('name')}: would {item.get('action')}{reason}")
    if errors:
        print(f"Errors ({len(errors)}):")
        for name, message in sorted(errors.items()):
            print(f"  {name}: {message}")
        return 1
    return 0


def cmd_status(client: Client, args: Any) -> int:
    answer = client.call("GET", "/status")
    if args.json:
        _print_json(answer)
        return 0
    variant = f" (variant {answer['variant']})" if answer.get("variant") else ""
    print(f"State:       {answer.get('state')}{variant}")
    print(
        f"Generations: live {answer.get('live_generation')}, "
        f"applied {answer.get('applied_generation')}"
    )
    for condition in answer.get("conditions") or []:
        reasons = condition.get("reasons")
        reason = condition.get("reason")
        text = "; ".join(reasons) if reasons else (reason or "")
        flag = "yes" if condition.get("status") else "no"
        print(f"  {condition.get('type', '?'):<12} {flag:<3} {text}".rstrip())
    if answer.get("retries"):
        print(f"Retries:     {answer['retries']} failed pass(es) in a row")
    engine = answer.get("containers")
    managed = (engine or {}).get("host-containers") if isinstance(engine, dict) else None
    if managed:
        print(f"Host containers ({len(managed)}):")
        for name, item in sorted(managed.items()):
            digest = (item.get("digest") or "")[:19]
            restarts = f", {item['restarts']} restart(s)" if item.get("restarts") else ""
            problem = f", last error: {item['last_error']}" if item.get("last_error") else ""
            print(f"  {name}: {item.get('state')} {digest}{restarts}{problem}".rstrip())
    elif isinstance(engine, dict) and engine.get("engine_error"):
        print(f"Host containers: engine unavailable: {engine['engine_error']}")
    git = answer.get("gitops")
    if isinstance(git, dict) and git.get("condition") != "Disabled":
        print(f"Git:         {git.get('condition')} {git.get('url')} ref {git.get('ref') or 'HEAD'}"
              f" path {git.get('path') or '.'}")
        fetched, applied = git.get("fetched_commit") or "-", git.get("applied_commit") or "-"
        print(f"  fetched {fetched[:12]}, applied {applied[:12]}"
              + (f", last success {_when(git['last_success'])}" if git.get("last_success") else ""))
        if git.get("reason"):
            print(f"  {git['reason']}")
    receipt = answer.get("last_receipt")
    if isinstance(receipt, dict):
        outcome = "ok" if receipt.get("ok") else "FAILED"
        duration = receipt.get("duration_ms")
        timing = f", {duration:.0f} ms" if isinstance(duration, int | float) else ""
        started = f" at {_when(receipt['started'])}" if receipt.get("started") else ""
        number = f" #{receipt['pass']}" if receipt.get("pass") is not None else ""
        print(
            f"Last pass{number}: {outcome}, generation {receipt.get('generation')}{started}"
            f"{timing}, reason {receipt.get('reason')!r}"
        )
        if receipt.get("error"):
            print(f"  error: {receipt['error']}")
        for step in receipt.get("steps") or []:
            print(f"  {_step_line(step)}")
    else:
        print("Last pass: none yet")
    return 0


def cmd_history(client: Client, args: Any) -> int:
    answer = client.call("GET", _query("/generations", limit=args.limit, before=args.before))
    if args.json:
        _print_json(answer)
        return 0
    if not answer:
        print("No generations")
        return 0
    for item in answer:
        keys = [c.get("key", "?") for c in item.get("changes") or []]
        shown = ", ".join(keys[:8]) + (f", ... (+{len(keys) - 8})" if len(keys) > 8 else "")
        print(
            f"{item.get('generation'):>5}  {_when(item.get('time'))}  "
            f"{item.get('source')}  {shown or '(no change)'}"
        )
    return 0


def cmd_rollback(client: Client, args: Any) -> int:
    target = args.generation
    if target is None:
        recent = client.call("GET", _query("/generations", limit=2)) or []
        if len(recent) < 2:
            raise ClientError("apiclient rollback: there is no earlier generation to roll back to")
        target = recent[1]["generation"]
    # ``wait=true`` is ignored by servers that do not support it; then poll ``/status``.
    answer = client.call(
        "POST", _query("/actions/rollback-settings", generation=target, wait="true")
    )
    generation = answer.get("generation")
    changed = sorted(answer.get("changed") or [])
    if not changed:
        print(f"Settings already equal generation {target}; nothing changed")
        return 0
    print(f"Rolled back to generation {target} as generation {generation}; changed:")
    for key in changed:
        print(f"  {key}")
    if args.no_wait:
        return 0
    receipt = answer.get("receipt") or _wait_for_pass(client, generation)
    return _report_receipt(receipt)


def _wait_for_pass(client: Client, generation: int, timeout: float = 300.0) -> Any:
    """Poll ``/status`` until a reconcile pass covering ``generation`` has finished."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = client.call("GET", "/status")
        receipt = status.get("last_receipt")
        covered = isinstance(receipt, dict) and (receipt.get("generation") or 0) >= generation
        if covered and (status.get("applied_generation", 0) >= generation or not receipt["ok"]):
            return receipt
        if time.monotonic() > deadline:
            raise ClientError(
                f"timed out waiting for the pass that applies generation {generation}"
            )
        time.sleep(0.05)


def _settings_key(key: str) -> str:
    return key if key == "settings" or key.startswith("settings.") else "settings." + key


def cmd_explain(client: Client, args: Any) -> int:
    key = _settings_key(args.key)
    answer = client.call("GET", _query("/provenance", keys=key, history="true")) or {}
    if args.json:
        _print_json(answer)
        return 0
    if not any(e.get("source") is not None or e.get("history") for e in answer.values()):
        print(f"{key} is not set and has no history")
        return 1
    for name in sorted(answer):
        entry = answer[name]
        if entry.get("source") is None:
            print(f"{name} is not set")
        else:
            print(f"{name} = {_value(entry.get('value'))}")
            print(f"  source:     {entry.get('source')}")
            print(f"  generation: {entry.get('generation')} ({_when(entry.get('time'))})")
        history = entry.get("history") or []
        if history:
            print("  history (newest first):")
            for change in history:
                old, new = change.get("old"), change.get("new")
                what = (
                    f"set {_value(new)}"
                    if old is None
                    else f"removed (was {_value(old)})"
                    if new is None
                    else f"{_value(old)} -> {_value(new)}"
                )
                print(
                    f"    {change.get('generation'):>5}  {_when(change.get('time'))}  "
                    f"{change.get('source')}  {what}"
                )
    return 0


# ---- sync and events ---------------------------------------------------------------------------


def cmd_sync(client: Client, args: Any) -> int:
    """``POST /actions/sync?wait=true``; 1 unless the revision was fetched, valid and applied."""
    answer = client.call("POST", _query("/actions/sync", wait="true")) or {}
    if args.json:
        _print_json(answer)
    sync = answer.get("sync") or {}
    condition = sync.get("condition")
    commit = (sync.get("applied_commit") or sync.get("fetched_commit") or "-")[:12]
    failed = condition != "Synced"
    if not args.json:
        changed = sorted(sync.get("changed") or [])
        stream = sys.stderr if failed else sys.stdout
        print(f"Git: {condition} at {commit}" + (f": {sync['reason']}" if sync.get("reason")
                                                  else ""), file=stream)
        if changed:
            print(f"Changed ({len(changed)}): {', '.join(changed)}")
    receipt = answer.get("receipt")
    if isinstance(receipt, dict):
        if args.json:
            return 1 if failed or not receipt.get("ok") else 0
        return 1 if _report_receipt(receipt) or failed else 0
    return 1 if failed else 0


def _event_line(event: dict[str, Any]) -> str:
    known = ("seq", "time", "type", "message")
    extra = " ".join(f"{k}={_value(v)}" for k, v in sorted(event.items()) if k not in known)
    when = event.get("time")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if isinstance(
        when, int | float) else str(when)
    return f"{event.get('seq', '?'):>6}  {stamp}  {event.get('type', '?'):<10} " \
           f"{event.get('message', '')}" + (f"  [{extra}]" if extra else "")


def cmd_events(client: Client, args: Any) -> int:
    """``GET /events?since=N``, printed oldest first; ``--follow`` polls for new ones."""
    since = args.since
    while True:
        for event in client.call("GET", _query("/events", since=since)) or []:
            since = max(since, int(event.get("seq") or 0))
            print(json.dumps(event, sort_keys=True) if args.json else _event_line(event),
                  flush=True)
        if not args.follow:
            return 0
        time.sleep(max(args.interval, 0.05))


# ---- reboot and updates ------------------------------------------------------------------------


def cmd_reboot(client: Client, args: Any) -> int:
    client.call("POST", "/actions/reboot")
    print("Reboot requested")
    return 0


def _update_status(client: Client) -> dict[str, Any] | None:
    """``/updates/status``; None while it was never initialized (a 404 from the endpoint)."""
    try:
        return client.call("GET", "/updates/status")
    except ResponseError as error:
        if error.status == 423:  # an update command is running: keep polling
            try:
                progress = json.loads(error.body).get("progress")
            except (ValueError, AttributeError):
                progress = None
            return {"progress": progress} if progress else {}
        if error.status == 404 and error.body.strip() != "404: Not Found":
            return None
        raise


def _update_action(client: Client, action: str, command: str, timeout: float) -> dict[str, Any]:
    """POST an update action, then poll until ``most_recent_command`` reports it finished."""
    import time

    before = _update_status(client)
    before_stamp = ((before or {}).get("most_recent_command") or {}).get("timestamp")
    client.call("POST", f"/actions/{action}")
    deadline = time.monotonic() + timeout
    bar = _ProgressBar(sys.stderr)
    while True:
        status = _update_status(client)
        bar.show((status or {}).get("progress"))
        recent = (status or {}).get("most_recent_command") or {}
        if recent.get("timestamp") != before_stamp and recent.get("cmd_type") == command:
            if recent.get("cmd_status") == "Failed":
                raise ClientError(
                    f"update {command} failed (exit {recent.get('exit_status')}): "
                    f"{(recent.get('stderr') or '').strip()}"
                )
            if recent.get("cmd_status") == "Success":
                bar.end()
                return status or {}
        if time.monotonic() > deadline:
            raise ClientError(f"timed out waiting for update {command} to finish")
        time.sleep(0.25)


class _ProgressBar:
    """`update apply` on a terminal: the image being written, bytes done / total."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.drawn = stream, False
        self.enabled = stream.isatty()

    def show(self, progress: dict[str, Any] | None) -> None:
        if not self.enabled or not progress or not progress.get("total"):
            return
        done, total = int(progress.get("done", 0)), int(progress["total"])
        width = 30
        filled = width * done // total
        self.stream.write(f"\r{progress.get('image', 'image'):<12} [{'#' * filled:<{width}}] "
                          f"{done >> 20}/{total >> 20} MiB {100 * done // total:3d}%")
        self.stream.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


def _no_update_message(status: dict[str, Any]) -> str:
    reason = status.get("no_update_reason") or {}
    return f"No update available: {reason['message']}" if reason.get("message") \
        else "No update available"


def cmd_update(client: Client, args: Any) -> int:
    timeout = args.timeout
    if args.update_command == "check":
        status = _update_action(client, "refresh-updates", "refresh", timeout)
        _print_json(status)
        if not status.get("chosen_update"):
            print(_no_update_message(status), file=sys.stderr)
        return 0
    if args.update_command == "cancel":
        _update_action(client, "deactivate-update", "deactivate", timeout)
        print("Update has been canceled")
        return 0
    if args.check:
        status = _update_action(client, "refresh-updates", "refresh", timeout)
        if not status.get("chosen_update"):
            print(_no_update_message(status))
            return 0
    _update_action(client, "prepare-update", "prepare", timeout)
    _update_action(client, "activate-update", "activate", timeout)
    if args.reboot:
        client.call("POST", "/actions/reboot")
        print("Update applied; rebooting")
    else:
        print("Update has been applied and will take effect on next reboot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
