"""The automatic-update policy's two additions for fleets (pure, ``decide_update``): a refresh
that found nothing waits out the retry delay (no refresh loop), and ``automatic-reboot``
reboots into an activated update once per daemon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.update_policy import REBOOT, UpdateObservation, decide_update
from updates import status as sm

NOW = datetime(2024, 1, 1, 3, 0, tzinfo=UTC)
AUTO = {"updates": {"automatic": True, "automatic-reboot": True}}


def seen(state: str, **fields) -> UpdateObservation:
    base = {"now": NOW, "monotonic": 1000.0, "busy": False, "state": state, "last_failed": None,
            "last_auto": None, "confirmed": True, "failure_seen": None,
            "retry_at": float("-inf")}
    return UpdateObservation(**{**base, **fields})


def test_a_refresh_that_found_nothing_is_not_started_again_at_once() -> None:
    assert decide_update(AUTO, seen(sm.IDLE)).command == "refresh"  # first look
    found_nothing = seen(sm.IDLE, last_auto="refresh", last_refresh=NOW)
    waiting = decide_update(AUTO, found_nothing)
    assert waiting.command is None  # the finished refresh woke this pass: no loop
    assert waiting.retry_at == 1000.0 + timedelta(hours=1).total_seconds()
    later = seen(sm.IDLE, monotonic=waiting.retry_at + 1, last_auto="refresh",
                 last_refresh=NOW, failure_seen=waiting.failure_seen,
                 retry_at=waiting.retry_at)
    assert decide_update(AUTO, later).command == "refresh"
    # a refresh that found an update goes straight on
    assert decide_update(AUTO, seen(sm.AVAILABLE, last_auto="refresh",
                                    last_refresh=NOW)).command == "prepare"
    # an operator's refresh (not the policy's) does not start the clock
    assert decide_update(AUTO, seen(sm.IDLE, last_refresh=NOW)).command == "refresh"


def test_automatic_reboot_into_an_activated_update_once() -> None:
    assert decide_update(AUTO, seen(sm.READY)).command == REBOOT
    assert decide_update(AUTO, seen(sm.READY, reboot_requested=True)).command is None
    manual = {"updates": {"automatic": True}}  # Bottlerocket's way: never reboots by itself
    assert decide_update(manual, seen(sm.READY)).command is None
    off = {"updates": {"automatic-reboot": True}}  # only together with automatic
    assert decide_update(off, seen(sm.READY)).command is None
    closed = {"updates": {**AUTO["updates"],
                          "maintenance-window": {"start": "05:00", "end": "06:00"}}}
    assert decide_update(closed, seen(sm.READY)).command is None
    assert decide_update(AUTO, seen(sm.READY, busy=True)).command is None
    # before activation the usual steps come first
    assert decide_update(AUTO, seen(sm.STAGED)).command == "activate"
