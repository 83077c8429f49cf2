"""Crash safety: SIGKILL a process mid-commit and mid-write at many random points.

After every kill the store holds exactly one whole generation (never a mix) and every rendered
file is one complete version.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from reconciler.schema import Schema
from reconciler.store import Store

KEYS = 40
COMMITTER = """
import sys
from reconciler.schema import Schema
from reconciler.store import Store
schema = Schema.load("aws-k8s")
store = Store(sys.argv[1])
i = store.generation()
print("ready", flush=True)
while True:
    i += 1
    labels = {f"k{n}": f"g{i}" for n in range(KEYS)}
    store.add_patch("t", {"kubernetes": {"node-labels": labels}, "motd": f"g{i}"}, "api:t", schema)
    store.commit("t", schema)
""".replace("KEYS", str(KEYS))

WRITER = """
import sys
from pathlib import Path
from reconciler.effects import write_atomic
versions = [b"a" * 2_000_000, b"b" * 3_000_000]
print("ready", flush=True)
i = 0
while True:
    write_atomic(Path(sys.argv[1]), "/etc/big.conf", versions[i % 2], 0o644)
    i += 1
"""


def _run_and_kill(script: str, arg: Path, rng: random.Random) -> None:
    child = subprocess.Popen([sys.executable, "-c", script, str(arg)], stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"ready"
    time.sleep(rng.uniform(0.0, 0.25))
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_store_holds_old_or_new_generation_never_a_mix(tmp_path):
    rng = random.Random(7)
    schema = Schema.load("aws-k8s")
    db = tmp_path / "store.db"
    for _ in range(25):
        _run_and_kill(COMMITTER, db, rng)
        with Store(db) as store:
            # what the committer writes (defaults it brings along are not its generations)
            live = {k: v for k, v in store.live().items() if store.sources(k)[k] != "default"}
            generation = store.generation()
            values = set(live.values())
            assert len(values) <= 1, f"mixed generations in live: {values}"
            if generation:
                assert values == {f"g{generation}"}
                assert len(live) == KEYS + 1
                assert {k: v for k, v in store.values_at(generation).items() if k in live} == live
            assert store.transactions() in ([], ["t"])
            store.discard_all()
            # the store stays writable after the crash
            store.add_patch("t", {"motd": f"g{generation + 1}"}, "api:t", schema)
    with Store(db) as store:
        assert store.generation() > 5, "the committer never got far enough to test anything"


def test_rendered_file_is_always_complete(tmp_path):
    rng = random.Random(11)
    target = tmp_path / "etc" / "big.conf"
    for _ in range(25):
        _run_and_kill(WRITER, tmp_path, rng)
        if target.exists():
            data = target.read_bytes()
            assert data in (b"a" * 2_000_000, b"b" * 3_000_000), f"torn file: {len(data)} bytes"
    assert target.exists()
