"""``reconciler fleet status --etcd URL``: one view of the fleet, from etcd.

Per host: the git revision it applied, its OS version, the result of its last rollout, the
reboot slot it holds (group), and where its rollout stands. Read from what hosts publish
(``reports``) and from the reboot slots' semaphores (airlock's layout); a host whose lease ran
out is no longer listed. A table for people, JSON with ``--json`` for scripts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

COLUMNS = ("HOST", "REVISION", "OS", "RESULT", "SLOT", "ROLLOUT")


def rows(hosts: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """The table's rows (pure): one per host, short revisions, '-' for what is unknown."""
    table = []
    for host in hosts:
        revision = str(host.get("revision") or "-")[:12]
        state = host.get("state") or "-"
        if host.get("halted"):
            state = f"halted ({str(host.get('target') or '')[:12]})"
        elif state == "wait":
            state = f"waiting ({str(host.get('target') or '')[:12]})"
        table.append((str(host.get("id")), revision, str(host.get("os_version") or "-"),
                      str(host.get("result") or "-"), str(host.get("reboot_slot") or "-"),
                      state))
    return table


def format_table(hosts: Sequence[Mapping[str, Any]]) -> str:
    """Aligned columns, a header first (pure)."""
    lines = [COLUMNS, *rows(hosts)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in lines)


def main(etcd_url: str, as_json: bool, out: TextIO = sys.stdout) -> int:
    from reconciler.fleet.reports import fleet_view

    try:
        hosts = fleet_view(etcd_url)
    except Exception as error:  # noqa: BLE001 - one line naming the endpoint, no traceback
        print(f"reconciler fleet status: cannot read etcd {etcd_url}: "
              f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(hosts, indent=2), file=out)
    elif not hosts:
        print(f"no host has reported to {etcd_url}", file=out)
    else:
        print(format_table(hosts), file=out)
    return 0
