"""protocols.memory: when the trimmer trims, and the glibc calls themselves."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from protocols import memory
from tests.waiting import until

MB = 2**20
ROOT = Path(__file__).resolve().parents[2]


class FakeProcess:
    """Resident memory a test sets; a trim gives back what is free."""

    def __init__(self, resident: int) -> None:
        self.resident = resident
        self.free = 0
        self.trims = 0

    def measure(self) -> int:
        return self.resident

    def release(self) -> bool:
        self.trims += 1
        self.resident -= self.free
        self.free = 0
        return True


def trimmer(process: FakeProcess) -> memory.Trimmer:
    return memory.Trimmer(growth=32 * MB, longest=8, measure=process.measure,
                          release=process.release)


def test_no_trim_until_memory_grew_by_the_threshold() -> None:
    process = FakeProcess(40 * MB)
    watch = trimmer(process)
    process.resident += 31 * MB
    assert watch.check() is None and process.trims == 0
    process.resident += 1 * MB
    process.free = 30 * MB
    assert watch.check() == (72 * MB, 42 * MB)
    assert process.trims == 1
    assert watch.check() is None     # back near the floor: quiet again
    assert process.trims == 1


def test_memory_in_use_is_trimmed_less_and_less_often() -> None:
    process = FakeProcess(40 * MB)
    watch = trimmer(process)
    process.resident = 200 * MB      # all of it in use: a trim gives nothing back
    trimmed_at = [n for n in range(40) if watch.check() is not None]
    assert trimmed_at == [0, 2, 6, 14, 22, 30, 38]   # every 2, 4, 8 checks, then every 8


def test_a_trim_that_gives_back_much_resets_the_pace() -> None:
    process = FakeProcess(40 * MB)
    watch = trimmer(process)
    process.resident = 200 * MB
    for _ in range(7):               # trims at checks 0, 2 and 6: now every 8
        watch.check()
    assert watch.wait == 8
    process.free = 150 * MB          # the large run ended
    checks = 0
    while watch.check() is None:
        checks += 1
    assert checks < 8 and process.resident == 50 * MB
    assert watch.wait == 1


def test_the_floor_follows_memory_down() -> None:
    process = FakeProcess(100 * MB)
    watch = trimmer(process)
    process.resident = 40 * MB
    assert watch.check() is None
    process.resident = 80 * MB       # 40 above the new floor
    assert watch.check() is not None


def test_the_glibc_calls_work_here() -> None:
    assert memory.resident() > MB
    if platform.libc_ver()[0] != "glibc":
        assert not memory.trim()
        return
    blocks = [bytes(4096) + bytes([n % 256]) for n in range(20_000)]   # about 80 MB
    kept = blocks[::50]              # the rest is freed between these: the heap keeps it
    del blocks
    before = memory.resident()
    assert memory.trim()
    assert memory.resident() < before - 40 * MB
    assert len(kept) == 400


async def test_keep_trimmed_logs_each_trim_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = iter([None, (100 * MB, 40 * MB)])

    class OneTrim:
        def __init__(self, **_options: Any) -> None:
            pass

        def check(self) -> tuple[int, int] | None:
            return next(checks, None)

    monkeypatch.setattr(memory, "Trimmer", OneTrim)
    lines: list[tuple[str, dict[str, float]]] = []
    task = asyncio.create_task(memory.keep_trimmed(lambda event, **kw: lines.append((event, kw)),
                                                   every=0.0))
    try:
        await until(lambda: bool(lines))
    finally:
        task.cancel()
    assert lines == [("memory_trimmed", {"before_mb": 100.0, "after_mb": 40.0})]


async def test_with_large_blocks_mapped_the_arenas_are_trimmed_sooner(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    asked: list[bool] = []

    class Made:
        def __init__(self, *, growth: int) -> None:
            made.append(growth)

        def check(self) -> None:
            return None

    monkeypatch.setattr(memory, "Trimmer", Made)
    monkeypatch.setattr(memory, "map_large_blocks", lambda: asked.append(True) or True)
    for count, large_blocks in enumerate((False, True), 1):
        task = asyncio.create_task(memory.keep_trimmed(print, every=0.0,
                                                       large_blocks=large_blocks))
        try:
            await until(lambda: len(made) == count)    # noqa: B023 - awaited in this turn
        finally:
            task.cancel()
    if platform.libc_ver()[0] == "glibc":
        assert made == [memory.TRIM_GROWTH, memory.SMALL_GROWTH] and asked == [True]


GIVEN_BACK = """
import sys
from protocols import memory
if sys.argv[1] == "map":
    assert memory.map_large_blocks()
for _ in range(3):          # glibc raises its threshold on the first free: look at the later ones
    block = bytearray(16 << 20)
    block[::4096] = b"x" * len(block[::4096])      # touch every page
    del block
print(memory.resident())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_large_block_is_given_back_when_freed_once_mapped_on_its_own() -> None:
    """In a process of its own (the setting is the process's): with large blocks mapped, a
    freed 16 MiB block leaves nothing resident; by default glibc keeps the last one."""
    resident = {}
    for how in ("default", "map"):
        done = subprocess.run([sys.executable, "-c", GIVEN_BACK, how], capture_output=True,
                              text=True, timeout=60, check=True, cwd=ROOT)
        resident[how] = int(done.stdout)
    assert resident["map"] < resident["default"] - 12 * MB, resident
