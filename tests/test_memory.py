"""The idle trim: glibc's malloc_trim is found on this host, and a burst of passes trims once,
after the last, not once per pass (the trim walks the whole heap)."""

from __future__ import annotations

import asyncio

from reconciler.memory import IdleTrim, malloc_trim


def test_glibc_malloc_trim_is_found_and_runs():
    trim = malloc_trim()
    assert trim is not None, "Debian's glibc has malloc_trim"
    assert trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release


def test_a_burst_of_passes_trims_once_after_the_last():
    async def burst() -> list[int]:
        idle = IdleTrim(asyncio.get_running_loop(), delay=0.5)
        real = idle._trim
        assert real is not None
        calls: list[int] = []

        def counted(pad: int) -> int:
            calls.append(pad)
            return real(pad)

        idle._trim = counted
        for _ in range(5):  # five passes in a row: each poke moves the one pending trim
            idle.poke()
            await asyncio.sleep(0)
        for _ in range(200):  # then the daemon is quiet: wait for the trim (10 s at most)
            if calls:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)  # a second trim would have run by now
        idle.poke()
        idle.stop()  # a trim pending at shutdown never runs
        await asyncio.sleep(0.6)
        return calls

    assert asyncio.run(burst()) == [0]
