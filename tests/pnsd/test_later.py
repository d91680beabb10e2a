"""Later: one value or error, handed to one callback at once, in the settler's stack."""

from __future__ import annotations

from typing import Any

import pytest

from pnsd.later import Later


def collect() -> tuple[list[tuple[Any, Exception | None]], Any]:
    seen: list[tuple[Any, Exception | None]] = []
    return seen, lambda value, error: seen.append((value, error))


def test_a_callback_registered_first_gets_the_value_when_it_is_settled() -> None:
    later: Later[int] = Later()
    seen, callback = collect()
    later.then(callback)
    assert seen == [] and not later.settled
    later.settle(3)
    assert seen == [(3, None)] and later.settled


def test_a_callback_registered_after_the_settle_gets_it_at_once() -> None:
    later: Later[int] = Later()
    error = ValueError("no")
    later.settle(None, error)
    seen, callback = collect()
    later.then(callback)
    assert seen == [(None, error)]


def test_map_converts_values_and_passes_errors_and_its_own_failures_on() -> None:
    doubled: list[tuple[Any, Exception | None]] = []
    later: Later[int] = Later()
    later.map(lambda n: n * 2).then(lambda v, e: doubled.append((v, e)))
    later.settle(21)
    assert doubled == [(42, None)]

    failing: Later[int] = Later()
    seen, callback = collect()
    failing.map(lambda n: 1 // n).then(callback)
    failing.settle(0)
    assert seen[0][0] is None and isinstance(seen[0][1], ZeroDivisionError)

    refused: Later[int] = Later()
    error = KeyError("k")
    seen, callback = collect()
    refused.map(lambda n: n).then(callback)
    refused.settle(None, error)
    assert seen == [(None, error)]


def test_a_second_settle_or_consumer_is_refused() -> None:
    later: Later[int] = Later()
    later.then(lambda v, e: None)
    later.settle(1)
    with pytest.raises(RuntimeError, match="settled once"):
        later.settle(2)
    with pytest.raises(RuntimeError, match="one consumer"):
        later.then(lambda v, e: None)
