"""Waiting in tests for a state the code under test reaches by itself, with a deadline.

For states with no event to await (a task that reached a slot, a swap under way): the check is
re-evaluated after every turn of the event loop, never after a guessed delay. A state outside
this process (another process, a file, the daemon's status) is polled every ``every`` seconds
instead, still with a deadline.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], bool | Awaitable[bool]], *, timeout: float = 20.0,
                every: float = 0.0) -> None:
    """Return once ``check()`` (or what it awaits to) is true; fail the test if it is not
    within ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        reached = check()
        if inspect.isawaitable(reached):
            reached = await reached
        if reached:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {check.__doc__ or check}")
        await asyncio.sleep(every)    # a turn of the loop, so the tasks under test can move
