"""Commit cost follows the change, not the store.

Commits one key (``settings.motd``) into a store holding 100 live keys (the baseline) and one
holding 100,000 live keys, in the same run; prints the medians and their ratio (target <= 1.5).
Also a one-key commit *inside* the 100,000-key map: a commit reads and validates only the keys
it touches (and the small table around them), so that too follows the change.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from reconciler.schema import Schema
from reconciler.store import Store

ROUNDS = 100


def filled_store(path: Path, schema: Schema, keys: int) -> Store:
    store = Store(path)
    labels = {f"bench-{n}": "v" for n in range(keys - 1)}
    store.add_patch("fill", {"motd": "start", "kubernetes": {"node-labels": labels}}, "bench")
    store.commit("fill", schema)
    assert len(store.live()) >= keys  # plus the section's defaults
    return store


def commit_times(store: Store, schema: Schema, patch_for) -> list[float]:
    times = []
    for i in range(ROUNDS):
        start = time.perf_counter()
        store.add_patch("t", patch_for(i), "api:t", schema)
        store.commit("t", schema)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    schema = Schema.load("aws-k8s")
    with tempfile.TemporaryDirectory() as tmp:
        small = filled_store(Path(tmp) / "small.db", schema, 100)
        large = filled_store(Path(tmp) / "large.db", schema, 100_000)
        motd = lambda i: {"motd": f"message {i}"}  # noqa: E731
        small_times: list[float] = []
        large_times: list[float] = []
        for _ in range(5):  # interleaved, so warm-up and machine noise hit both alike
            small_times += commit_times(small, schema, motd)
            large_times += commit_times(large, schema, motd)
        small_t = statistics.median(small_times)
        large_t = statistics.median(large_times)
        label = lambda i: {"kubernetes": {"node-labels": {"bench-0": f"v{i}"}}}  # noqa: E731
        section_t = statistics.median(commit_times(large, schema, label))
    print(f"commit one key, 100 live keys (baseline):   {small_t * 1000:8.3f} ms median")
    print(f"commit one key, 100,000 live keys:           {large_t * 1000:8.3f} ms median")
    print(f"ratio 100,000 / 100:                         {large_t / small_t:8.2f} (target <= 1.5)")
    print(f"commit one key inside the 100,000-key map:   {section_t * 1000:8.3f} ms median")


if __name__ == "__main__":
    main()
