"""pnslog: JSON lines, bound ids, stdlib loggers, idempotence."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import structlog

import pnslog


@pytest.fixture
def logsetup() -> Iterator[ModuleType]:
    """The module under test; logging is put back as it was afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield pnslog
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_structlog_events_are_json_lines_with_bound_ids(logsetup: ModuleType) -> None:
    stream = io.StringIO()
    logsetup.configure_logging(stream=stream, json=True)
    structlog.contextvars.bind_contextvars(job_id="j-1", pts="echo")
    structlog.get_logger("pnsd.jobs.model").info("job_finished", status="successful")
    [line] = lines(stream)
    assert line["event"] == "job_finished"
    assert line["status"] == "successful"
    assert line["job_id"] == "j-1"
    assert line["pts"] == "echo"
    assert line["level"] == "info"
    assert line["logger"] == "pnsd.jobs.model"
    assert line["timestamp"].endswith("Z")


def test_stdlib_loggers_are_json_lines_too(logsetup: ModuleType) -> None:
    stream = io.StringIO()
    logsetup.configure_logging(stream=stream, json=True)
    structlog.contextvars.bind_contextvars(request_id="r-9")
    logging.getLogger("aiohttp.access").warning("GET %s 200", "/healthz")
    logging.getLogger("asyncio").error("task exception was never retrieved")
    first, second = lines(stream)
    assert first["event"] == "GET /healthz 200"
    assert first["level"] == "warning"
    assert first["logger"] == "aiohttp.access"
    assert first["request_id"] == "r-9"
    assert second["logger"] == "asyncio"


def test_exceptions_are_rendered_into_the_line(logsetup: ModuleType) -> None:
    stream = io.StringIO()
    logsetup.configure_logging(stream=stream, json=True)
    try:
        raise ValueError("bad input")
    except ValueError:
        structlog.get_logger("pnsd").exception("run_failed")
        logging.getLogger("aiohttp.server").exception("handler_failed")
    ours, theirs = lines(stream)
    assert "ValueError: bad input" in ours["exception"]
    assert "ValueError: bad input" in theirs["exception"]


def test_configuring_twice_does_not_duplicate_lines(logsetup: ModuleType) -> None:
    stream = io.StringIO()
    logsetup.configure_logging(stream=stream, json=True)
    logsetup.configure_logging(stream=stream, json=True)
    structlog.get_logger().info("once")
    logging.getLogger("aiohttp").info("once too")
    assert len(lines(stream)) == 2


def test_level_filters_both_kinds_of_logger(logsetup: ModuleType) -> None:
    stream = io.StringIO()
    logsetup.configure_logging(stream=stream, json=True, level="warning")
    structlog.get_logger().info("dropped")
    logging.getLogger("aiohttp").info("dropped too")
    structlog.get_logger().warning("kept")
    assert [line["event"] for line in lines(stream)] == ["kept"]


def test_json_is_chosen_when_the_stream_is_not_a_terminal(logsetup: ModuleType) -> None:
    stream = io.StringIO()
    logsetup.configure_logging(stream=stream)
    structlog.get_logger().info("piped")
    assert lines(stream)[0]["event"] == "piped"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_readable_lines(logsetup: ModuleType) -> None:
    stream = FakeTerminal()
    logsetup.configure_logging(stream=stream)
    structlog.get_logger().info("on_screen", n=1)
    text = stream.getvalue()
    assert "on_screen" in text
    assert not text.lstrip().startswith("{")


def test_unknown_level_is_refused(logsetup: ModuleType) -> None:
    with pytest.raises(ValueError, match="loud"):
        logsetup.configure_logging(level="loud", stream=io.StringIO())


def test_both_kinds_of_line_share_the_stream_in_order(logsetup: ModuleType) -> None:
    """structlog writes its lines itself, stdlib records go through the root handler: one
    stream, whole lines, in the order they were logged."""
    stream = io.StringIO()
    logsetup.configure_logging(stream=stream, json=True)
    for n in range(3):
        structlog.get_logger("pnsd.server").info("ours", n=n)
        logging.getLogger("aiohttp.server").warning("theirs %d", n)
    assert [(line["logger"], line["event"]) for line in lines(stream)] == [
        (name, event) for n in range(3)
        for name, event in (("pnsd.server", "ours"), ("aiohttp.server", f"theirs {n}"))]
