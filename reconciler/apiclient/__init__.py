"""apiclient: talk to the reconciler's API on its Unix socket (Bottlerocket-compatible).

Standard library only, so it can ship in a zipapp into any container that has python3 (with
``hostcore``'s document parser, which ``apply`` shares with user data, and its small HTTP client
``hostcore.unixhttp``); every command imports only what its path needs, to start fast: ``get``
within 1.3x of ``python -c pass`` (``bench/bench_apiclient.py``).

Modules, one job each: ``transport`` (the connection and its errors), ``arguments`` (the command
line), ``commands`` (one function per subcommand), ``format`` (pure: answers to lines of text,
tables, colour, times), ``session`` (``exec``'s terminal), ``cli`` (the entry point).

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


def main(argv: list[str] | None = None) -> int:
    """The ``apiclient`` console script (imports the command line only when run)."""
    from reconciler.apiclient.cli import main as run

    return run(argv)
