"""Pure formatting of the API's answers for people: plain data in, lines of text out.

Nothing here reads the clock, the environment or a terminal: the caller passes ``now`` (for
relative times) and a :class:`Style` (colour on or off), so every function is a plain function of
its input. The JSON forms (``--json``, ``raw``, ``get``) never come through here: they stay
byte-compatible with Bottlerocket's apiclient for scripts. Shared by ``apiclient`` and
``reconciler plan``/``serve --once`` (standard library only, like the rest of the client).
"""

from __future__ import annotations

import json
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

RESET = "\033[0m"
CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


class Style:
    """ANSI colours when ``enabled`` (a terminal without ``NO_COLOR``), else text unchanged."""

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled

    def paint(self, text: str, *names: str) -> str:
        if not self.enabled or not names or not text:
            return text
        return f"\033[{';'.join(CODES[n] for n in names)}m{text}{RESET}"

    def outcome(self, text: str, good: bool | None) -> str:
        """Green when good, red when bad, yellow when neither (None)."""
        return self.paint(text, "bold", "green" if good else "yellow" if good is None else "red")


PLAIN = Style(False)


def json_text(data: Any) -> str:
    """Bottlerocket's pretty JSON (two-space indent, sorted keys)."""
    return json.dumps(data, indent=2, sort_keys=True)


def value_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# ---- times -------------------------------------------------------------------------------------


def relative(stamp: float, now: float) -> str:
    """``now``, ``42 s ago``, ``3 min ago``, ``5 h ago``, ``2 days ago`` (or ``in ...``)."""
    delta = now - stamp
    ahead, seconds = delta < 0, abs(delta)
    if seconds < 1:
        return "now"
    for size, unit in ((86400, "days"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            count = int(seconds // size)
            text = f"{count} {'day' if unit == 'days' and count == 1 else unit}"
            return f"in {text}" if ahead else f"{text} ago"
    return "now"  # unreachable: seconds >= 1 matched the last unit


def local_time(stamp: float) -> str:
    """Local wall-clock time with its zone offset: ``2026-12-01 14:03:05 +0100``."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(stamp))


def when(stamp: Any, now: float, style: Style = PLAIN) -> str:
    """A timestamp (epoch seconds, or RFC 3339 as events carry it) for people: local time,
    then how long ago."""
    if isinstance(stamp, str):
        from datetime import datetime

        try:
            stamp = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            return stamp
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return "-" if stamp is None else str(stamp)
    return f"{local_time(stamp)} {style.paint(f'({relative(stamp, now)})', 'dim')}"


# ---- tables ------------------------------------------------------------------------------------


def visible_len(text: str) -> int:
    """Length on screen: ANSI colour sequences take no room."""
    length, i = 0, 0
    while i < len(text):
        if text[i] == "\033":
            end = text.find("m", i)
            i = end + 1 if end >= 0 else len(text)
            continue
        length += 1
        i += 1
    return length


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], style: Style = PLAIN,
          indent: str = "") -> list[str]:
    """Columns aligned to their widest cell (the last one left ragged), a bold header row."""
    rows = [list(row) for row in rows]
    widths = [visible_len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], visible_len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell + " " * (widths[i] - visible_len(cell)) if i < len(cells) - 1 else cell
            for i, cell in enumerate(cells)
        ]
        return (indent + "  ".join(padded)).rstrip()

    return [line([style.paint(h, "bold") for h in headers]), *(line(r) for r in rows)]


# ---- receipts and plans ------------------------------------------------------------------------


def step_line(step: dict[str, Any], style: Style = PLAIN) -> str:
    detail = step.get("detail") or ""
    path = step.get("path")
    name = f"{step.get('name')} ({path})" if path else str(step.get("name"))
    result = str(step.get("result"))
    painted = style.paint(result, "red" if result == "failed" else "green")
    return f"{step.get('kind')} {name}: {painted}" + (f" - {detail}" if detail else "")


def receipt_lines(receipt: Any, style: Style = PLAIN) -> tuple[list[str], list[str], bool]:
    """(lines for stdout, lines for stderr, ok) of a reconcile receipt."""
    if not isinstance(receipt, dict):
        return ["Applied: no receipt"], [], True
    steps = receipt.get("steps") or []
    duration = receipt.get("duration_ms")
    timing = f" in {duration:.0f} ms" if isinstance(duration, int | float) else ""
    if receipt.get("ok"):
        work = f"{len(steps)} step(s)" if steps else "nothing to do"
        out = [f"Applied: {style.outcome('ok', True)} (generation {receipt.get('generation')}"
               f"{timing}, {work})"]
        return out + [f"  {step_line(s, style)}" for s in steps], [], True
    err = [f"Apply {style.outcome('FAILED', False)} (generation {receipt.get('generation')}"
           f"{timing})"]
    if receipt.get("error"):
        err.append(f"  error: {receipt['error']}")
    err += [f"  {step_line(s, style)}" for s in steps if s.get("result") == "failed"]
    return [], err, False


def diff_lines(diff: str, style: Style = PLAIN, indent: str = "    ") -> list[str]:
    """A unified diff, additions green, removals red, hunk headers cyan."""
    out = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            colour: tuple[str, ...] = ("bold",)
        elif line.startswith("+"):
            colour = ("green",)
        elif line.startswith("-"):
            colour = ("red",)
        elif line.startswith("@@"):
            colour = ("cyan",)
        else:
            colour = ()
        out.append(indent + style.paint(line, *colour))
    return out


def plan_lines(answer: dict[str, Any], title: str, style: Style = PLAIN) -> list[str]:
    """A plan (``POST /tx/plan``, ``reconciler plan``) for people: settings, files with their
    diffs, services, host containers, updates, errors."""
    settings = answer.get("settings") or []
    files = answer.get("files") or []
    services = answer.get("services") or []
    errors = answer.get("errors") or {}
    out = [style.paint(f"{title} (live generation {answer.get('generation')})", "bold")]
    if settings:
        out.append(f"Settings ({len(settings)}):")
        for change in settings:
            key, old, new = change.get("key"), change.get("old"), change.get("new")
            if old is None:
                out.append(style.paint(f"  + {key} = {value_text(new)}", "green"))
            elif new is None:
                out.append(style.paint(f"  - {key} (was {value_text(old)})", "red"))
            else:
                out.append(f"  {style.paint('~', 'yellow')} {key}: {value_text(old)} -> "
                           f"{value_text(new)}")
    elif "settings" in answer:
        out.append("Settings: no pending change")
    if files:
        out.append(f"Files ({len(files)}):")
        for item in files:
            reason = f" ({item['reason']})" if item.get("reason") else ""
            out.append(f"  {style.paint(str(item.get('name')), 'bold')} {item.get('path')}{reason}")
            out += diff_lines(item.get("diff") or "", style)
    else:
        out.append("Files: none would change")
    if services:
        out.append(f"Services ({len(services)}):")
        for svc in services:
            action = "would restart (skipped: sandbox)" if svc.get("skipped") else "would restart"
            keys = ", ".join(svc.get("changed_settings") or [])
            reason = f" - {svc['reason']}" if svc.get("reason") else ""
            out.append(f"  {svc.get('name')}: {style.paint(action, 'yellow')}{reason}"
                       + (f" [{keys}]" if keys else ""))
    else:
        out.append("Services: none would restart")
    containers = [c for c in answer.get("containers") or [] if c.get("action") != "keep"]
    if containers:
        out.append(f"Host containers ({len(containers)}):")
        for item in containers:
            reason = f" - {item['reason']}" if item.get("reason") else ""
            out.append(f"  {item.get('name')}: would {item.get('action')}{reason}")
    updates = answer.get("updates") or []
    if updates:
        out.append(f"Updates ({len(updates)}):")
        out += [f"  {value_text(step)}" for step in updates]
    if errors:
        out.append(style.paint(f"Errors ({len(errors)}):", "bold", "red"))
        out += [f"  {name}: {message}" for name, message in sorted(errors.items())]
    return out


# ---- status, history, explain, events ----------------------------------------------------------


def status_lines(answer: dict[str, Any], now: float, style: Style = PLAIN) -> list[str]:
    state = str(answer.get("state"))
    variant = f" (variant {answer['variant']})" if answer.get("variant") else ""
    why = f": {answer['reason']}" if answer.get("reason") and state != "Ready" else ""
    out = [f"State:       {style.outcome(state + why, state == 'Ready' or None)}{variant}"]
    if why and answer.get("message"):
        out.append(f"Why:         {answer['message']}")
    out.append(f"Generations: live {answer.get('live_generation')}, "
               f"applied {answer.get('applied_generation')}")
    rows = []
    for condition in answer.get("conditions") or []:
        reasons = condition.get("reasons")
        reason, message = condition.get("reason"), condition.get("message")
        text = "; ".join(reasons) if reasons else (
            f"{reason}: {message}" if reason and message else (reason or message or ""))
        flag = "yes" if condition.get("status") else "no"
        rows.append([str(condition.get("type", "?")), flag, text])
    if rows:
        out += table(["CONDITION", "STATUS", "REASON"], rows, style, indent="  ")
    if answer.get("retries"):
        out.append(f"Retries:     {answer['retries']} failed pass(es) in a row")
    engine = answer.get("containers")
    managed = (engine or {}).get("host-containers") if isinstance(engine, dict) else None
    if managed:
        out.append(f"Host containers ({len(managed)}):")
        rows = []
        for name, item in sorted(managed.items()):
            digest = (item.get("digest") or "")[:19]
            problem = item.get("last_error") or ""
            rows.append([name, str(item.get("state")), digest, str(item.get("restarts") or 0),
                         problem])
        out += table(["NAME", "STATE", "DIGEST", "RESTARTS", "LAST ERROR"], rows, style, "  ")
    elif isinstance(engine, dict) and engine.get("engine_error"):
        out.append(f"Host containers: engine unavailable: {engine['engine_error']}")
    git = answer.get("gitops")
    if isinstance(git, dict) and git.get("condition") != "Disabled":
        out.append(f"Git:         {git.get('condition')} {git.get('url')} ref "
                   f"{git.get('ref') or 'HEAD'} path {git.get('path') or '.'}")
        fetched, applied = git.get("fetched_commit") or "-", git.get("applied_commit") or "-"
        success = git.get("last_success")
        out.append(f"  fetched {fetched[:12]}, applied {applied[:12]}"
                   + (f", last success {when(success, now, style)}" if success else ""))
        if git.get("reason"):
            out.append(f"  {git['reason']}")
    receipt = answer.get("last_receipt")
    if isinstance(receipt, dict):
        ok = bool(receipt.get("ok"))
        duration = receipt.get("duration_ms")
        timing = f", {duration:.0f} ms" if isinstance(duration, int | float) else ""
        started = f" at {when(receipt['started'], now, style)}" if receipt.get("started") else ""
        number = f" #{receipt['pass']}" if receipt.get("pass") is not None else ""
        out.append(f"Last pass{number}: {style.outcome('ok' if ok else 'FAILED', ok)}, "
                   f"generation {receipt.get('generation')}{started}{timing}, "
                   f"reason {receipt.get('reason')!r}")
        if receipt.get("error"):
            out.append(f"  error: {receipt['error']}")
        out += [f"  {step_line(step, style)}" for step in receipt.get("steps") or []]
    else:
        out.append("Last pass: none yet")
    return out


SOURCES = {"api": "api", "git": "git", "user-data": "user-data", "boot": "user-data",
           "desired": "desired", "rollback": "rollback", "default": "default"}


def source_kind(source: Any) -> str:
    """Where a generation came from, without its transaction name: ``api:apiclient-set-1f2e``
    is ``api``, ``git:clusters/prod`` is ``git``; several sources are joined with ``+``."""
    kinds = []
    for part in str(source).split(","):
        head = part.split(":", 1)[0].strip()
        kind = SOURCES.get(head, head)
        if kind not in kinds:
            kinds.append(kind)
    return "+".join(kinds) or "-"


def who(item: dict[str, Any]) -> str:
    """``alice (uid 1000)``, ``uid 1234`` (no passwd entry), or ``daemon`` for a generation
    that did not come through the API (git, desired files, user data)."""
    actor = item.get("actor")
    if not isinstance(actor, dict) or actor.get("uid") is None:
        return "daemon" if "actor" in item else "-"
    name = actor.get("user")
    return f"{name} (uid {actor['uid']})" if name else f"uid {actor['uid']}"


def change_text(change: dict[str, Any]) -> str:
    key, old, new = change.get("key", "?"), change.get("old"), change.get("new")
    if "old" not in change and "new" not in change:
        return str(key)
    if old is None:
        return f"+{key}={value_text(new)}"
    if new is None:
        return f"-{key}"
    return f"{key}: {value_text(old)} -> {value_text(new)}"


def history_lines(items: list[dict[str, Any]], now: float, style: Style = PLAIN,
                  shown: int = 8) -> list[str]:
    """``GET /generations`` as a table: generation, when, source, who, what changed."""
    if not items:
        return ["No generations"]
    rows = []
    for item in items:
        changes = item.get("changes") or []
        texts = [change_text(c) for c in changes[:shown]]
        what = "; ".join(texts) + (f"; ... (+{len(changes) - shown})"
                                   if len(changes) > shown else "")
        rows.append([str(item.get("generation")), when(item.get("time"), now, style),
                     source_kind(item.get("source")), who(item), what or "(no change)"])
    return table(["GEN", "WHEN", "SOURCE", "WHO", "WHAT"], rows, style)


def explain_lines(answer: dict[str, Any], now: float, style: Style = PLAIN) -> list[str]:
    out = []
    for name in sorted(answer):
        entry = answer[name]
        if entry.get("source") is None:
            out.append(f"{name} is not set")
        else:
            out.append(f"{style.paint(name, 'bold')} = {value_text(entry.get('value'))}")
            out.append(f"  source:     {entry.get('source')}")
            out.append(f"  generation: {entry.get('generation')} "
                       f"({when(entry.get('time'), now, style)})")
        history = entry.get("history") or []
        if history:
            out.append("  history (newest first):")
            rows = []
            for change in history:
                old, new = change.get("old"), change.get("new")
                what = (f"set {value_text(new)}" if old is None
                        else f"removed (was {value_text(old)})" if new is None
                        else f"{value_text(old)} -> {value_text(new)}")
                rows.append([str(change.get("generation")), when(change.get("time"), now, style),
                             source_kind(change.get("source")), who(change), what])
            out += table(["GEN", "WHEN", "SOURCE", "WHO", "CHANGE"], rows, style, "    ")
    return out


LEVEL_COLOURS = {"error": "red", "warning": "yellow"}


def event_line(event: dict[str, Any], now: float, style: Style = PLAIN) -> str:
    """One CloudEvents event (``data`` holds the message and the fields) as one line."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    event = {**{k: v for k, v in event.items() if k not in (
        "data", "specversion", "id", "source", "datacontenttype", "subject")}, **data}
    known = ("seq", "time", "type", "message", "level")
    extra = " ".join(f"{k}={value_text(v)}" for k, v in sorted(event.items()) if k not in known)
    kind = f"{event.get('type', '?'):<10}"
    colour = LEVEL_COLOURS.get(str(event.get("level")))
    return (f"{event.get('seq', '?'):>6}  {when(event.get('time'), now, style)}  "
            f"{style.paint(kind, colour) if colour else kind} {event.get('message', '')}"
            + (f"  [{extra}]" if extra else ""))
