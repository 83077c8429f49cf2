"""apiclient's subcommands: one ``cmd_<name>(client, args)`` each, returning the exit status.

They make the requests (``transport``) and print: JSON as Bottlerocket's apiclient does (``raw``,
``get``, ``--json``), everything else through the pure ``format`` module, in colour on a terminal
(off when piped, with ``NO_COLOR`` set or ``--color never``).
"""

from __future__ import annotations

import json
import os
import sys
import time

from reconciler.apiclient.transport import (
    Client,
    ClientError,
    ResponseError,
    discard,
    query,
    random_suffix,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    # Imported by each command that prints for people: ``get`` prints JSON only, and every
    # module on its path counts (bench/bench_apiclient.py).
    from reconciler.apiclient import format as fmt

NAMESPACES = ("settings", "os", "services", "configuration-files")


def style(args: Any, stream: Any = None) -> fmt.Style:
    """Colour for ``stream`` (stdout): ``--color always|never``, else on a terminal unless
    ``NO_COLOR`` is set (https://no-color.org) or ``TERM=dumb``."""
    from reconciler.apiclient import format as fmt

    choice = getattr(args, "color", None) or "auto"
    if choice != "auto":
        return fmt.Style(choice == "always")
    stream = stream or sys.stdout
    enabled = (
        not os.environ.get("NO_COLOR")
        and os.environ.get("TERM") != "dumb"
        and hasattr(stream, "isatty")
        and stream.isatty()
    )
    return fmt.Style(enabled)


def _print_json(data: Any) -> None:
    """Bottlerocket's pretty JSON (two-space indent, sorted keys); ``format.json_text`` too."""
    print(json.dumps(data, indent=2, sort_keys=True))


def _print_lines(lines: list[str], stream: Any = None) -> None:
    for line in lines:
        print(line, file=stream or sys.stdout)


# ---- exec --------------------------------------------------------------------------------------


def cmd_exec(client: Client, args: Any) -> int:
    if not args.argv:
        raise ClientError("apiclient exec: a command to run is required: exec NAME CMD [ARGS...]")
    from reconciler import wsclient
    from reconciler.apiclient import session

    tty = args.tty if args.tty is not None else (os.isatty(0) and os.isatty(1))
    rows, cols = session.terminal_size()
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
    restore = session.raw_terminal() if tty else None
    try:
        return session.run(ws, tty)
    finally:
        if restore is not None:
            restore()
        ws.close()


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
    # Secrets redacted by the daemon, which knows the schema (``explain`` does the same).
    redact = None if getattr(args, "reveal", False) else "true"
    for prefix in args.prefixes or ["os.", "settings."]:
        if not prefix:
            raise ClientError("apiclient get: empty prefix")
        answer = client.call("GET", query("/", prefix=_model_prefix(prefix), redact=redact))
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


def _commit_and_apply(client: Client, tx: str, args: Any, confirm: str | None = None) -> int:
    """Commit ``tx``, wait for the reconcile pass, report it; 1 when the pass failed."""
    params = {"tx": tx, "wait": "true"} | ({"confirm": confirm} if confirm else {})
    try:
        answer = client.call("POST", query("/tx/commit_and_apply", **params))
    except ClientError:
        discard(client, tx)
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
    return _report_receipt(answer.get("receipt"), args)


def _report_receipt(receipt: Any, args: Any) -> int:
    """Print a pass's receipt (failures on stderr); 1 when the pass failed."""
    from reconciler.apiclient import format as fmt

    out, err, ok = fmt.receipt_lines(receipt, style(args))
    _print_lines(out)
    _print_lines(err, sys.stderr)
    return 0 if ok else 1


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
    tx = args.tx or f"apiclient-set-{random_suffix()}"
    force = "true" if args.force else None
    patches: list[tuple[str, Any]] = []
    if args.json:
        try:
            body = json.loads(args.json)
        except json.JSONDecodeError as error:
            raise ClientError(f"apiclient set: --json is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise ClientError("apiclient set: --json must be a JSON object")
        patches.append((query("/settings", tx=tx, force=force), body))
    else:
        bad = [p for p in args.pairs if "=" not in p or p.startswith("=")]
        if bad:
            raise ClientError(f"apiclient set: invalid KEY=VALUE: {bad[0]!r}")
        pairs, deleted = _null_pairs(args.pairs)
        if pairs:
            patches.append(
                (query("/settings/keypair", tx=tx, force=force), {"request_payload": pairs})
            )
        if deleted:
            patches.append((query("/settings", tx=tx, force=force), deleted))
    try:
        for uri, payload in patches:
            client.call("PATCH", uri, payload)
    except ClientError:
        if not args.tx:
            discard(client, tx)
        raise
    return _finish_change(client, tx, args, getattr(args, "confirm", None))


def _finish_change(client: Client, tx: str, args: Any, confirm: str | None = None) -> int:
    """After ``set``/``apply`` staged ``tx``: print the plan and discard it (``--dry-run``), leave
    it pending (``--tx``), or commit and apply it."""
    if args.dry_run:
        try:
            return _print_plan(client.call("POST", query("/tx/plan", tx=tx)), tx, args)
        finally:
            if not args.tx:
                discard(client, tx)
    if args.tx:
        print(f"Staged in transaction {tx!r}: 'apiclient plan --tx {tx}' shows it; "
              f"'apiclient -m POST -u /tx/commit_and_apply?tx={tx}' applies it")
        return 0
    return _commit_and_apply(client, tx, args, confirm)


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
    tx = args.tx or f"apiclient-apply-{random_suffix()}"
    force = "true" if args.force else None
    try:
        for name, settings in zip(inputs, documents, strict=True):
            try:
                client.call("PATCH", query("/settings", tx=tx, force=force), settings)
            except ResponseError as error:
                label = "<stdin>" if name == "-" else name
                raise ClientError(f"{label}: {error.reason(client.verbose)}") from None
    except ClientError:
        if not args.tx:
            discard(client, tx)
        raise
    return _finish_change(client, tx, args)


# ---- plan, status, history, rollback, explain --------------------------------------------------


def cmd_plan(client: Client, args: Any) -> int:
    answer = client.call("POST", query("/tx/plan", tx=args.tx))
    if args.json:
        _print_json(answer)
        return 0
    return _print_plan(answer, args.tx, args)


def _print_plan(answer: dict[str, Any], tx: str, args: Any) -> int:
    """The plan of ``tx`` for people; 1 when it holds errors."""
    from reconciler.apiclient import format as fmt

    _print_lines(fmt.plan_lines(answer, f"Plan for transaction {tx!r}", style(args)))
    return 1 if answer.get("errors") else 0


def cmd_status(client: Client, args: Any) -> int:
    from reconciler.apiclient import format as fmt

    answer = client.call("GET", "/status")
    if args.json:
        _print_json(answer)
        return 0
    _print_lines(fmt.status_lines(answer, time.time(), style(args)))
    return 0


def cmd_history(client: Client, args: Any) -> int:
    """Generations newest first: when, source, who (uid and user name) and what changed."""
    from reconciler.apiclient import format as fmt

    answer = client.call("GET", query("/generations", limit=args.limit, before=args.before))
    if args.json:
        _print_json(answer)
        return 0
    _print_lines(fmt.history_lines(answer or [], time.time(), style(args)))
    return 0


def cmd_rollback(client: Client, args: Any) -> int:
    target = args.generation
    if target is None:
        recent = client.call("GET", query("/generations", limit=2)) or []
        if len(recent) < 2:
            raise ClientError("apiclient rollback: there is no earlier generation to roll back to")
        target = recent[1]["generation"]
    # ``wait=true`` is ignored by servers that do not support it; then poll ``/status``.
    answer = client.call(
        "POST", query("/actions/rollback-settings", generation=target, wait="true")
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
    return _report_receipt(receipt, args)


def _wait_for_pass(client: Client, generation: int, timeout: float = 300.0) -> Any:
    """Poll ``/status`` until a reconcile pass covering ``generation`` has finished."""
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
    from reconciler.apiclient import format as fmt

    key = _settings_key(args.key)
    answer = client.call("GET", query("/provenance", keys=key, history="true")) or {}
    if args.json:
        _print_json(answer)
        return 0
    if not any(e.get("source") is not None or e.get("history") for e in answer.values()):
        print(f"{key} is not set and has no history")
        return 1
    _print_lines(fmt.explain_lines(answer, time.time(), style(args)))
    return 0


# ---- sync and events ---------------------------------------------------------------------------


def cmd_sync(client: Client, args: Any) -> int:
    """``POST /actions/sync?wait=true``; 1 unless the revision was fetched, valid and applied."""
    try:
        answer = client.call("POST", query("/actions/sync", wait="true")) or {}
    except ResponseError as error:  # a sync that did not apply: the same JSON, an error status
        try:
            answer = json.loads(error.body)
        except ValueError:
            raise error from None
        if not isinstance(answer, dict) or "sync" not in answer:
            raise
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
        return 1 if _report_receipt(receipt, args) or failed else 0
    return 1 if failed else 0


def cmd_events(client: Client, args: Any) -> int:
    """``GET /events?since=N``, printed oldest first; ``--follow`` polls for new ones."""
    from reconciler.apiclient import format as fmt

    since = args.since
    paint = style(args)
    while True:
        for event in client.call("GET", query("/events", since=since)) or []:
            since = max(since, int(event.get("seq") or 0))
            line = (json.dumps(event, sort_keys=True) if args.json
                    else fmt.event_line(event, time.time(), paint))
            print(line, flush=True)
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
