"""A value that arrives by callback, handed on at once: :class:`Later`.

An asyncio future wakes whoever waits for it on a later turn of the event loop, and a task
awaiting it costs a task. A run on a worker is answered from the callback that receives the
worker's reply; with a :class:`Later` the reply to the run's caller leaves from that same
callback. It has one consumer, and its callbacks run in the stack of whoever settles it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Later"]

T = TypeVar("T")
U = TypeVar("U")

Callback = Callable[[Any, Exception | None], None]   # (value, None) or (None, error)


class Later(Generic[T]):
    """One value or one error, delivered to one callback as soon as both are there."""

    __slots__ = ("_callback", "_outcome")

    def __init__(self) -> None:
        self._callback: Callback | None = None
        self._outcome: tuple[Any, Exception | None] | None = None

    @property
    def settled(self) -> bool:
        return self._outcome is not None

    def settle(self, value: T | None, error: Exception | None = None) -> None:
        """Deliver ``value`` (or ``error``); a second settle is a bug and raises."""
        if self._outcome is not None:
            raise RuntimeError("a Later is settled once")
        self._outcome = (value, error)
        if self._callback is not None:
            self._callback(value, error)

    def then(self, callback: Callable[[T | None, Exception | None], None]) -> None:
        """Where the outcome goes: called at once if it is there, else when it arrives."""
        if self._callback is not None:
            raise RuntimeError("a Later has one consumer")
        self._callback = callback
        if self._outcome is not None:
            callback(*self._outcome)

    def map(self, fn: Callable[[T], U]) -> Later[U]:
        """A Later of ``fn(value)``; an error (or one ``fn`` raises) passes through."""
        mapped: Later[U] = Later()

        def convert(value: Any, error: Exception | None) -> None:
            if error is not None:
                mapped.settle(None, error)
                return
            try:
                result = fn(value)
            except Exception as exc:  # the consumer's boundary: it gets the error, not us
                mapped.settle(None, exc)
                return
            mapped.settle(result)

        self.then(convert)
        return mapped
