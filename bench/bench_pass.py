"""A no-change reconcile pass over 1,000 configuration files (target <= 1 s on 2 cores).

Baseline in the same run: reading the same 1,000 files back from disk in Python, the floor of
any pass that checks the disk. Also prints the first (writing) pass.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from reconciler.boot import boot
from reconciler.host import open_host

FILES = 1000
ROUNDS = 15


def make_renderers(directory: Path) -> None:
    (directory / "templates").mkdir(parents=True)
    (directory / "templates/item.j2").write_text(
        "# generated\nmotd = {{ settings.motd | toml_string }}\n"
        "{% for s in settings.ntp['time-servers'] %}server {{ s }} iburst\n{% endfor %}"
    )
    lines = []
    for n in range(FILES):
        lines += [f"[configuration-files.f{n}]", f'path = "/etc/bench/d{n % 20}/f{n}.conf"',
                  'template = "item.j2"', ""]
    lines += ["[services.bench]",
              "configuration-files = [" + ", ".join(f'"f{n}"' for n in range(FILES)) + "]",
              'affected-by = ["settings.motd", "settings.ntp"]', ""]
    (directory / "metadata.toml").write_text("\n".join(lines))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        renderers = Path(tmp) / "renderers"
        make_renderers(renderers)
        with open_host(Path(tmp) / "state", variant="aws-dev", renderers=renderers) as host:
            boot(host.store, host.schema)
            start = time.perf_counter()
            first = host.reconciler.run_pass("bench")
            first_t = time.perf_counter() - start
            assert first["ok"], first
            written = [s for s in first["steps"] if s["result"] == "written"]
            assert len(written) == FILES
            passes, reads = [], []
            paths = sorted((host.root / "etc/bench").rglob("*.conf"))
            for _ in range(ROUNDS):
                start = time.perf_counter()
                receipt = host.reconciler.run_pass("bench")
                passes.append(time.perf_counter() - start)
                assert receipt["unchanged_files"] == FILES, receipt
                start = time.perf_counter()
                for path in paths:
                    path.read_bytes()
                reads.append(time.perf_counter() - start)
    p, r = statistics.median(passes), statistics.median(reads)
    print(f"first pass, {FILES} files written:          {first_t * 1000:8.1f} ms")
    print(f"read {FILES} files back (baseline):          {r * 1000:8.1f} ms median")
    print(f"no-change pass over {FILES} files:  {p * 1000:8.1f} ms median (target <= 1000)")
    print(f"ratio pass / read-back:                      {p / r:8.1f}")


if __name__ == "__main__":
    main()
