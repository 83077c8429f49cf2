"""The rollout planner and the health-window judge, over plain data (no etcd, no daemon)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.fleet import rollout
from reconciler.fleet.rollout import (
    APPLY,
    FAILED,
    HALTED,
    KEEP,
    PASSED,
    REFUSED,
    WAIT,
    WATCHING,
    Local,
    Observation,
    Policy,
    PolicyError,
    Report,
    Trial,
    judge,
    parse_policy,
    plan,
)
from updates.waves import WaveSpec

NEW, GOOD = "b" * 40, "a" * 40
T0 = 1_800_000_000.0  # the new revision's committer time
TWO_WAVES = Policy(budget=2, window=30, waves=(WaveSpec("0 seconds", 50),
                                                WaveSpec("60 seconds", 100)))
SETTLED = Local(applied=GOOD, last_good=GOOD)


def failures(n: int, revision: str = NEW) -> list[Report]:
    return [Report(f"h{i}", revision, FAILED) for i in range(n)]


def test_a_policy_file_parses_with_waves_in_bottlerockets_format():
    policy = parse_policy(b'failure-budget = 2\nhealth-window = "2 minutes"\n'
                          b'[[waves]]\nstart_after = "0 minutes"\nfleet_percentage = 10\n'
                          b'[[waves]]\nstart_after = "1 hour"\nfleet_percentage = 100\n')
    assert policy == Policy(2, 120.0, (WaveSpec("0 minutes", 10), WaveSpec("1 hour", 100)))
    assert parse_policy("health-window = 45") == Policy(None, 45.0, ())


@pytest.mark.parametrize(("text", "message"), [
    ("failure-budget = -1", "rollout.toml: failure-budget: must be a whole number >= 0"),
    ("failure-budget = true", "rollout.toml: failure-budget: must be a whole number >= 0"),
    ('health-window = "soon"', "rollout.toml: health-window: bad offset 'soon'"),
    ("health-window = -3", "rollout.toml: health-window: must be between 0 and"),
    ("budget = 2", "rollout.toml: budget: unknown key"),
    ("failure-budget = ", "rollout.toml: invalid TOML"),
    ('[[waves]]\nstart_after = "1 hour"\nfleet_percentage = 200',
     "rollout.toml: waves: Invalid fleet percentage 200"),
    ('[[waves]]\nstart_after = "2 hours"\nfleet_percentage = 10\n'
     '[[waves]]\nstart_after = "1 hour"\nfleet_percentage = 100',
     "rollout.toml: waves: Waves are not ordered"),
])
def test_a_bad_policy_is_one_line_naming_the_file_and_key(text, message):
    with pytest.raises(PolicyError) as error:
        parse_policy(text)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_the_first_wave_applies_at_once_the_last_waits_for_its_delay():
    # Bottlerocket's rule: seed s of the first wave waits s * (60 s / 1024); seed 0 not at all
    assert plan(TWO_WAVES, 0, T0, NEW, T0, SETTLED, []).action == APPLY
    early = plan(TWO_WAVES, 3, T0, NEW, T0, SETTLED, [])
    assert early.action == WAIT and early.wake_at == pytest.approx(T0 + 3 * 60 / 1024)
    assert plan(TWO_WAVES, 3, T0 + 1, NEW, T0, SETTLED, []).action == APPLY
    waiting = plan(TWO_WAVES, 1500, T0 + 10, NEW, T0, SETTLED, [])
    assert waiting.action == WAIT and waiting.commit == GOOD
    assert waiting.wake_at == T0 + 60
    assert plan(TWO_WAVES, 1500, T0 + 60, NEW, T0, SETTLED, []).action == APPLY


def test_waves_pace_the_rollout_without_etcd():
    assert plan(TWO_WAVES, 1500, T0 + 1, NEW, T0, SETTLED, None).action == WAIT
    assert plan(TWO_WAVES, 1500, T0 + 61, NEW, T0, SETTLED, None).action == APPLY


def test_failures_beyond_the_budget_halt_every_host_that_has_not_applied_it():
    within = plan(TWO_WAVES, 1500, T0 + 61, NEW, T0, SETTLED, failures(2))
    assert within.action == APPLY and not within.halted
    halted = plan(TWO_WAVES, 1500, T0 + 61, NEW, T0, SETTLED,
                  failures(3) + [Report("ok", NEW, rollout.SUCCEEDED)])
    assert (halted.action, halted.commit, halted.halted) == (HALTED, GOOD, True)
    assert halted.counts == rollout.Counts(applying=0, succeeded=1, failed=3)
    assert "3 hosts failed it (budget 2), 1 succeeded" in halted.reason


def test_a_host_that_applied_it_keeps_it_and_still_says_halted():
    mine = Local(applied=NEW, last_good=NEW)
    decision = plan(TWO_WAVES, 3, T0, NEW, T0, mine, failures(3))
    assert (decision.action, decision.commit, decision.halted) == (KEEP, NEW, True)


def test_a_revision_that_failed_here_is_never_applied_again():
    reverted = Local(applied=GOOD, last_good=GOOD, failed={NEW: "health check(s) failed"})
    decision = plan(TWO_WAVES, 3, T0 + 999, NEW, T0, reverted, [])
    assert (decision.action, decision.commit) == (REFUSED, GOOD)
    assert plan(TWO_WAVES, 3, T0, NEW, T0, reverted, failures(3)).halted


def test_a_trial_finishes_before_a_newer_revision_applies():
    trial = Trial(NEW, GOOD, T0, 30)
    in_trial = Local(applied=NEW, last_good=GOOD, trial=trial)
    assert plan(TWO_WAVES, 3, T0 + 5, NEW, T0, in_trial, []).action == KEEP
    newer = plan(TWO_WAVES, 3, T0 + 5, "c" * 40, T0 + 4, in_trial, [])
    assert (newer.action, newer.commit, newer.wake_at) == (WAIT, NEW, T0 + 30)


def test_a_new_host_takes_the_fleets_revision_at_once_unless_it_is_halted():
    assert plan(TWO_WAVES, 1500, T0, NEW, T0, Local(), []).action == APPLY
    halted = plan(TWO_WAVES, 1500, T0, NEW, T0, Local(), failures(3))
    assert (halted.action, halted.commit) == (HALTED, None)


def test_no_budget_never_halts():
    assert plan(Policy(None), 7, T0, NEW, T0, SETTLED, failures(100)).action == APPLY


def test_the_health_window_judge():
    trial = Trial(NEW, GOOD, T0, 30, generation=5)
    assert judge(trial, T0 + 1, []) == (WATCHING, "within its health window")
    stale = [Observation(4, False, "a pass of the old generation")]
    assert judge(trial, T0 + 1, stale)[0] == WATCHING  # passes before the trial do not count
    assert judge(trial, T0 + 1, [Observation(5, False, "health check(s) failed: x")]) == (
        FAILED, "health check(s) failed: x")
    assert judge(trial, T0 + 31, [])[0] == WATCHING  # no look yet after the apply
    assert judge(trial, T0 + 31, [Observation(6, True)])[0] == PASSED


reports = st.lists(st.builds(Report, st.sampled_from([f"h{i}" for i in range(8)]),
                             st.sampled_from([NEW, GOOD]), st.sampled_from(rollout.RESULTS)))


@given(budget=st.integers(0, 5), seed=st.integers(0, 2047), now=st.floats(T0 - 100, T0 + 200),
       fleet=reports, failed_here=st.booleans())
def test_never_applies_a_revision_whose_failures_exceed_the_budget(budget, seed, now, fleet,
                                                                   failed_here):
    local = Local(applied=GOOD, last_good=GOOD, failed={NEW: "x"} if failed_here else {})
    decision = plan(Policy(budget, 30, TWO_WAVES.waves), seed, now, NEW, T0, local, fleet)
    latest = {r.host: r.result for r in fleet if r.revision == NEW}
    over = list(latest.values()).count(FAILED) > budget
    assert decision.halted == over
    if over or failed_here:
        assert decision.action != APPLY and decision.commit == GOOD
    if decision.action == APPLY:
        opens = rollout.wave_opens(Policy(budget, 30, TWO_WAVES.waves), seed, T0)
        assert opens is None or now >= opens


def test_the_documented_policy_parses():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "examples/fleet-repo/README.md").read_text()
    block = readme.split("```toml\n# clusters/prod/rollout.toml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(block)
    assert policy.budget == 2 and policy.window == 600 and len(policy.waves) == 3
    assert rollout.wave_opens(policy, 2047, T0) == T0 + 24 * 3600


def test_the_fleet_table_shortens_revisions_and_says_where_a_rollout_stands():
    from reconciler.fleet.view import format_table

    table = format_table([
        {"id": "h1", "revision": GOOD, "os_version": "1.4.0", "result": "failed",
         "state": "refused", "reboot_slot": None},
        {"id": "h22", "revision": GOOD, "os_version": "1.4.0", "result": "succeeded",
         "state": "halted", "halted": True, "target": NEW, "reboot_slot": "workers"},
        {"id": "h3", "revision": None, "state": "wait", "target": NEW},
    ]).splitlines()
    assert table == [
        "HOST  REVISION      OS     RESULT     SLOT     ROLLOUT",
        f"h1    {GOOD[:12]}  1.4.0  failed     -        refused",
        f"h22   {GOOD[:12]}  1.4.0  succeeded  workers  halted ({NEW[:12]})",
        f"h3    -             -      -          -        waiting ({NEW[:12]})",
    ]
