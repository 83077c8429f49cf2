"""Fault injection for crash tests: die by SIGKILL at a named step boundary.

``point(name)`` is called at every step boundary whose crash behaviour matters (see the list
below). When ``$RECONCILER_CRASH_AT`` is set in the process's environment at import time and
``name`` matches it, the process kills itself with SIGKILL there and then: no ``finally``, no
atexit, no flush, exactly like a crash. Unset (production), ``point`` is one global lookup and
one comparison.

``RECONCILER_CRASH_AT`` is a name or an ``fnmatch`` glob (``after-file:*``), optionally followed
by ``#N`` to crash at the Nth matching point only (``after-gpt-backup#2``); without ``#N`` the
first match crashes.

Points (where they sit):

* ``before-commit`` / ``after-commit``: ``Store.commit``, inside the SQLite transaction just
  before COMMIT / right after it returned;
* ``after-owe``: a pass recorded the restarts it will owe, before writing any file;
* ``before-file:<path>`` / ``after-file:<path>``: around ``write_atomic`` of each planned file;
* ``before-rename:<path>``: inside ``write_atomic``, the temp file is written and fsynced, not
  yet renamed;
* ``before-restart:<service>`` / ``after-restart:<service>``: around the service's commands;
* ``before-settle:<service>`` / ``after-settle:<service>``: around clearing its owed restart;
* ``before-receipt``: every step done, the pass's receipt not yet saved;
* ``image-write:<kind>``: an update image streamed into its partition, not yet fsynced nor
  verified;
* ``after-gpt-backup`` / ``after-gpt-primary``: ``gpt.write_table`` fsynced the backup copy /
  the primary copy;
* ``container-removed:<name>`` / ``container-created:<name>``: a host container being recreated
  was removed, the new one not yet created / was created (and started), not yet recorded.
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "RECONCILER_CRASH_AT"


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    pattern, _, count = spec.partition("#")
    return pattern, int(count) if count else 1


_RAW = os.environ.get(ENV)
_SPEC = _parse(_RAW)
_seen = 0


def point(name: str) -> None:
    """SIGKILL this process if ``name`` is the crash point asked for (see the module doc)."""
    if _SPEC is None:
        return
    _hit(name)


def _hit(name: str) -> None:
    global _seen
    pattern, count = _SPEC  # type: ignore[misc]
    if name != pattern and not fnmatch.fnmatchcase(name, pattern):
        return
    _seen += 1
    if _seen == count:
        os.write(2, f"hostcore.faults: crashing at {name} ({ENV}={_RAW})\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
