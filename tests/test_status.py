"""The status rules (``reconciler.status``) over plain data: every part turns the headline away
from Ready while it fails, the headline names the first failing reason, and the conditions
carry kstatus' shape (type, status, reason, message, observedGeneration)."""

from __future__ import annotations

import pytest

from reconciler import status
from reconciler.status import PassFacts, summarize

OK_RECEIPT = {"generation": 4, "ok": True, "steps": []}
SETTLED = PassFacts(live_generation=4, applied_generation=4, receipt=OK_RECEIPT)


def conditions(summary: dict) -> dict[str, dict]:
    return {c["type"]: c for c in summary["conditions"]}


def test_ready_only_when_converged_and_every_part_is_healthy():
    parts = [
        status.git_part({"condition": "Synced", "reason": "applied 0123456789ab"}),
        status.desired_files_part({"condition": "Applied", "reason": "1 key(s) changed"}),
        status.user_data_part([]),
        status.boot_health_part({"marked_successful": True, "set": "A"}, gated=True),
        status.containers_part({"host-containers": {"a": {"state": "running"}}}),
        status.updates_part({"busy": False, "update_state": "Idle"}),
        status.coordination_part({"state": "idle", "reason": "released the reboot slot in a"}),
        status.loops_part({"git": {"state": "running"}, "worker": {"state": "running"}}),
    ]
    summary = summarize(SETTLED, parts)
    assert (summary["state"], summary["reason"]) == ("Ready", "Converged")
    found = conditions(summary)
    assert [c["type"] for c in summary["conditions"][:4]] == [
        "Ready", "Reconciling", "Degraded", "Stalled"]
    assert found["Ready"]["status"] is True and found["Degraded"]["status"] is False
    for part in ("GitSource", "DesiredFiles", "UserData", "BootHealth", "HostContainers",
                 "Updates", "Coordination", "BackgroundLoops"):
        assert found[part]["status"] is True, found[part]
    assert {c["observedGeneration"] for c in summary["conditions"]} == {4}
    assert all({"type", "status", "reason", "message"} <= set(c) for c in summary["conditions"])


FAILING = [
    (status.git_part({"condition": "Invalid", "reason": "commit abc: hosts/web-1.toml: bad"}),
     "RevisionInvalid", True),
    (status.git_part({"condition": "Failed", "reason": "fatal: couldn't find remote ref nope"}),
     "FetchFailed", False),
    (status.git_part({"condition": "Stale", "reason": "older than max-age"}), "RemoteStale", False),
    (status.desired_files_part({"condition": "Invalid", "reason": "a.toml: settings.motd: must "
                                "be text"}), "FilesInvalid", True),
    (status.user_data_part(["40-ec2-imds (http://x): did not answer within 1 s"]),
     "SourceUnavailable", False),
    (status.boot_health_part({"marked_successful": False, "reason": "health check(s) failed: "
                              "always-fails: exited 1"}, gated=True),
     "BootNotMarkedSuccessful", True),
    (status.containers_part({"host-containers": {"tiny": {
        "state": "failed", "crash_looping": True, "last_error": "exited (code 3)"}}}),
     "CrashLooping", True),
    (status.containers_part({"host-containers": {"tiny": {"state": "restarting",
                                                          "last_error": "exited (code 3)"}}}),
     "ContainerRestarting", False),
    (status.containers_part({"engine_error": "podman: not found",
                             "host-containers": {"a": {"state": "failed"}}}),
     "EngineUnavailable", False),
    (status.updates_part({"busy": False, "most_recent_command": {
        "cmd_type": "prepare", "cmd_status": "Failed", "exit_status": 1,
        "stderr": "downloading\nupdog: tampered target"}}), "UpdateCommandFailed", False),
    (status.coordination_part({"state": "holding", "reason": "cannot release the reboot slot: "
                               "ConnectionRefusedError"}), "ReleaseFailed", False),
    (status.loops_part({"git": {"state": "retrying", "last_error": "OSError: disk full"}}),
     "LoopFailing", False),
    (status.rollout_part({"decision": None, "error": "cannot publish to etcd "
                          "http://127.0.0.1:1: ConnectionRefusedError"}),
     "RolloutReportsUnreachable", False),
    (status.rollout_part({"decision": {"action": "apply", "reason": "wave open"},
                          "error": "cannot read the rollout reports from etcd "
                          "http://127.0.0.1:1: timed out"}),
     "RolloutReportsUnreachable", False),
]


@pytest.mark.parametrize(("part", "reason", "stalled"), FAILING,
                         ids=[f[1] for f in FAILING])
def test_a_failing_part_makes_the_headline_degraded_with_its_reason(part, reason, stalled):
    healthy = status.git_part({"condition": "Synced", "reason": "applied x"})
    summary = summarize(SETTLED, [healthy, part])
    assert summary["state"] == "Degraded"
    assert summary["reason"] == reason
    assert summary["message"] == part.message and part.message
    found = conditions(summary)
    assert found["Ready"]["status"] is False and found["Ready"]["reason"] == reason
    assert found["Degraded"]["status"] is True and part.message in found["Degraded"]["reasons"]
    assert "updog: tampered target" in part.message or reason != "UpdateCommandFailed"
    assert found["Stalled"]["status"] is stalled
    assert found[part.type]["status"] is False


def test_the_last_pass_and_executor_reasons_degrade_and_parts_come_first_in_the_headline():
    receipt = {"generation": 5, "ok": False, "error": None, "steps": [
        {"kind": "service", "name": "chronyd", "result": "failed", "detail": "exited 1"}]}
    summary = summarize(PassFacts(5, 4, receipt=receipt, extra_reasons=("bootstrap x: failed",)),
                        [status.git_part({"condition": "Invalid", "reason": "bad"})])
    assert (summary["state"], summary["reason"]) == ("Degraded", "RevisionInvalid")  # specific
    assert summarize(PassFacts(5, 4, receipt=receipt), [])["reason"] == "PassFailed"
    assert conditions(summary)["Degraded"]["reasons"] == [
        "service chronyd: exited 1", "bootstrap x: failed", "git source: bad"]
    assert conditions(summary)["Ready"]["observedGeneration"] == 5


@pytest.mark.parametrize(("facts", "parts", "reason"), [
    (PassFacts(5, 4, receipt=OK_RECEIPT), [], "ApplyingGeneration"),
    (PassFacts(4, 4, busy=True, receipt=OK_RECEIPT), [], "PassRunning"),
    (PassFacts(0, 0), [], "PassRunning"),  # no pass yet
    (SETTLED, [status.git_part({"condition": "Fetching", "reason": "since 12:00"})], "Fetching"),
    (SETTLED, [status.boot_health_part(None, gated=True)], "Checking"),
    (SETTLED, [status.containers_part({"host-containers": {"a": {"state": "pulling"}}})],
     "Starting"),
    (SETTLED, [status.coordination_part({"state": "waiting", "reason": "all slots held"})],
     "WaitingForSlot"),
])
def test_work_in_progress_is_reconciling_not_ready(facts, parts, reason):
    summary = summarize(facts, parts)
    assert (summary["state"], summary["reason"]) == ("Reconciling", reason)
    assert conditions(summary)["Reconciling"]["status"] is True
    assert conditions(summary)["Ready"]["status"] is False


def test_parts_not_in_use_are_not_conditions():
    assert status.git_part({"condition": "Disabled", "reason": ""}) is None
    assert status.git_part(None) is None
    assert status.desired_files_part(None) is None
    assert status.user_data_part(None) is None
    assert status.boot_health_part(None, gated=False) is None
    assert status.containers_part({"host-containers": {}}) is None
    assert status.coordination_part({"state": "idle", "reason": "", "held": None}) is None
    summary = summarize(SETTLED, [None, None])
    assert [c["type"] for c in summary["conditions"]] == [
        "Ready", "Reconciling", "Degraded", "Stalled"]
