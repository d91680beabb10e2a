"""A run's input is held to the declared inputs before anything runs, for every client."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pnsd import validation
from pnsd.errors import BadRequest
from pnsd.hosts.inproc import InprocHost
from pnsd.jobs.scheduler import Scheduler
from pnsd.jobs.store import JobStore
from pnsd.registry import Registry
from pnsd.spec import parse_spec
from pnsd.validation import InputCheck, check_outputs

ITEM = {"type": "object", "properties": {"a/b": {"type": "integer"}}}
SPEC = parse_spec("p", {"mode": "worker", "entry": "m:f", "inputs": {
    "pair": {"schema": ITEM, "maxOccurs": 2},
    "note": {"schema": {"type": "string"}, "minOccurs": 0},
    "png": {"schema": {"contentMediaType": "image/png"}, "minOccurs": 0}}})
CHECK = InputCheck("p", SPEC.interface.inputs)


def errors(data: Any) -> list[dict[str, str]]:
    with pytest.raises(BadRequest) as caught:
        CHECK.check(data)
    listed: list[dict[str, str]] = caught.value.details["errors"]
    assert caught.value.message.startswith("PTS p: input")
    return listed


def test_each_occurrence_is_checked_with_its_index_in_the_pointer() -> None:
    assert errors({"pair": [{"a/b": 1}, {"a/b": "two"}]}) == [
        {"input": "pair", "pointer": "/pair/1/a~1b", "rule": "type",
         "message": "'two' is not of type 'integer'"}]


@pytest.mark.parametrize(("data", "found"), [
    ({"pair": [{}, {}, {}]}, [("/pair", "maxOccurs")]),
    ({"note": "n"}, [("/pair", "minOccurs")]),
    ({"pair": {}, "colour": 1}, [("/colour", "declared")]),
    ({"pair": {}, "png": "not bytes"}, [("/png", "contentMediaType")]),
    (["pair"], [("", "type")]),
    (None, [("", "type")]),
])
def test_each_broken_rule_is_named(data: Any, found: list[tuple[str, str]]) -> None:
    assert [(e["pointer"], e["rule"]) for e in errors(data)] == found


def test_every_failure_is_listed_and_a_long_value_is_not_quoted_whole() -> None:
    listed = errors({"pair": {"a/b": "y" * 10_000}, "note": 3})
    assert [e["pointer"] for e in listed] == ["/pair/a~1b", "/note"]
    assert all(len(e["message"]) <= 200 for e in listed)


def test_valid_inputs_pass_and_optional_ones_may_be_left_out() -> None:
    CHECK.check({"pair": [{"a/b": 1}, {"a/b": 2}]})
    CHECK.check({"pair": {"a/b": 1}, "note": "n", "png": b"\x89PNG"})


def test_a_pts_declaring_no_inputs_takes_anything() -> None:
    anything = InputCheck("e", None)
    for value in (None, 1, "x", [1], {"any": "name"}):
        assert anything.quick(value)


def test_a_large_input_is_left_for_a_thread() -> None:
    assert CHECK.quick({"pair": {"a/b": 1}})
    assert not CHECK.quick({"pair": {"a/b": 1}, "note": "x", "big": list(range(5000))})
    with pytest.raises(BadRequest):    # and checked there, in full
        CHECK.check({"pair": {"a/b": 1}, "big": list(range(5000))})


def test_outputs_are_held_to_their_schemas() -> None:
    png = {"contentMediaType": "image/png"}
    spec = parse_spec("o", {"mode": "inproc", "entry": "m:f", "outputs": {
        "n": {"schema": {"type": "integer"}}, "png": {"schema": png}}})
    assert spec.interface.outputs is not None
    check_outputs("o", {"n": 1, "png": b"x"}, spec.interface.outputs)
    with pytest.raises(BadRequest) as caught:
        check_outputs("o", {"n": "one", "png": "text"}, spec.interface.outputs)
    assert [e["rule"] for e in caught.value.details["errors"]] == ["type", "contentMediaType"]


async def test_the_scheduler_refuses_a_bad_input_before_recording_and_compiles_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    real = Draft202012Validator.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(args[0] if args else None)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Draft202012Validator, "__init__", counting)
    store = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "files", inline_limit=1024)
    await store.open()
    executor = ThreadPoolExecutor(2)
    registry = Registry(lambda spec: InprocHost(spec, executor=executor))
    sleep = parse_spec("sleep", {"mode": "inproc", "entry": "pnsd.demo:sleep", "inputs": {
        "seconds": {"schema": {"type": "number", "minimum": 0}}}})
    assert await registry.add_all([sleep]) == {}
    scheduler = Scheduler(registry, store)
    compiled = len(built)
    try:
        for bad in ({"seconds": "x"}, {"seconds": -1}, 0.1, {"minutes": 1}):
            with pytest.raises(BadRequest):
                await scheduler.submit("sleep", bad)
            with pytest.raises(BadRequest):
                await scheduler.run("sleep", bad)
        big = {"seconds": 0, "padding": list(range(5000))}     # checked in a thread
        with pytest.raises(BadRequest):
            await scheduler.run("sleep", big)
        assert await store.count(pts="sleep") == 0        # nothing recorded
        _job, result = await scheduler.run("sleep", {"seconds": 0})
        assert result == {"slept": 0}
        assert len(built) == compiled                     # no validator built per request
    finally:
        await scheduler.shutdown(grace=1)
        await registry.stop_all(grace=1)
        await store.close()
        executor.shutdown()
    assert validation.HEAVY < 5000
