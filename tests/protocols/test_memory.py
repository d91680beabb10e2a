"""protocols.memory: when the trimmer trims, and the glibc calls themselves."""

from __future__ import annotations

import asyncio
import platform

import pytest

from protocols import memory
from tests.waiting import until

MB = 2**20


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
