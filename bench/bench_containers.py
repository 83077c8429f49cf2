"""Host containers on real podman: how fast a committed container runs, and an idle pass.

1. Time from committing ``enabled = true`` (``POST /tx/commit_and_apply?wait=true`` on a real
   daemon) until the container runs, against ``podman run -d`` of the same image (same archive
   source, same engine configuration, its own storage) in the same run; prints the medians and
   their ratio (target <= 1.5).
2. A no-change pass with 20 managed containers running: the whole reconcile pass and the
   containers executor alone (one ``podman ps`` and a pure plan).

Needs podman, runc and busybox-static (``make system-deps``); engine options come from
``CONTAINERS_CONF`` (examples/containers.conf by default). Run: ``.venv/bin/python
bench/bench_containers.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reconciler.host import open_host  # noqa: E402
from tests.daemon import Daemon  # noqa: E402
from tests.images import build_image, podman, require_podman, reset_storage  # noqa: E402

ROUNDS = 7
IDLE_CONTAINERS = 20
IDLE_PASSES = 20


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def main() -> int:
    require_podman()  # also selects examples/containers.conf unless CONTAINERS_CONF is set
    with tempfile.TemporaryDirectory(prefix="bench-hc-") as tmp:
        work = Path(tmp)
        source = build_image(work / "images", "busybox", "v1")
        reset_storage(work / "images" / "builder")
        state = work / "state"
        baseline = work / "baseline"
        daemon = Daemon(state, ["--variant", "aws-dev"])
        try:
            ours, theirs = [], []
            for i in range(ROUNDS):
                # Interleaved, so both see the same machine load.
                start = time.perf_counter()
                podman(baseline, "run", "-d", "--name", f"b{i}", source)
                theirs.append(time.perf_counter() - start)

                daemon.ok("PATCH", "/settings", {
                    "host-containers": {f"c{i}": {"source": source, "enabled": True}}})
                start = time.perf_counter()
                answer = daemon.ok("POST", "/tx/commit_and_apply?wait=true")
                ours.append(time.perf_counter() - start)
                assert answer["receipt"]["ok"], answer["receipt"]
            assert podman(state / "containers", "ps", "-q").split().__len__() == ROUNDS
            ratio = median_ms(ours) / median_ms(theirs)
            print(f"enable -> running (median of {ROUNDS}, first included):")
            print(f"  reconciler commit_and_apply: {median_ms(ours):8.1f} ms"
                  f"  (min {min(ours) * 1000:.1f}, max {max(ours) * 1000:.1f})")
            print(f"  podman run -d (baseline):    {median_ms(theirs):8.1f} ms"
                  f"  (min {min(theirs) * 1000:.1f}, max {max(theirs) * 1000:.1f})")
            print(f"  ratio: {ratio:.2f} (target <= 1.5)")

            more = {f"c{i}": {"source": source, "enabled": True}
                    for i in range(ROUNDS, IDLE_CONTAINERS)}
            daemon.ok("PATCH", "/settings", {"host-containers": more})
            assert daemon.ok("POST", "/tx/commit_and_apply?wait=true")["receipt"]["ok"]
        finally:
            daemon.stop()
            reset_storage(baseline)

        try:
            # The daemon is gone, its containers keep running: time passes in-process.
            with open_host(state) as host:
                executor = host.containers
                assert executor is not None
                settings = host.store.live_document()
                generation = host.store.generation()
                running = len(podman(state / "containers", "ps", "-q").split())
                host.reconciler.run_pass("warm-up")
                passes, executor_times = [], []
                for _ in range(IDLE_PASSES):
                    start = time.perf_counter()
                    receipt = host.reconciler.run_pass("bench")
                    passes.append(time.perf_counter() - start)
                    assert receipt["ok"] and not [
                        s for s in receipt["steps"] if s["kind"] == "container"], receipt
                    start = time.perf_counter()
                    assert executor.reconcile(settings, generation, set()) == []
                    executor_times.append(time.perf_counter() - start)
            print(f"no-change pass, {running} managed containers running "
                  f"(median of {IDLE_PASSES}):")
            print(f"  whole pass:              {median_ms(passes):8.1f} ms")
            print(f"  containers executor:     {median_ms(executor_times):8.1f} ms")
        finally:
            reset_storage(state / "containers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
