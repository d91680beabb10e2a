"""Waiting in tests for a state the code under test reaches by itself, with a deadline.

For states with no event to await (a task that reached a slot, a swap under way): the check is
re-evaluated after every turn of the event loop, never after a guessed delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(check: Callable[[], bool], *, timeout: float = 20.0) -> None:
    """Return once ``check()`` is true; fail the test if it is not within ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {check.__doc__ or check}")
        await asyncio.sleep(0)    # one turn of the loop, so the tasks under test can move
