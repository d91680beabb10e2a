"""The packaged demo PTS: callables, the hello scripts and the demo spec file."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

import pnsd.demo as demo
from pnsd.spec import Mode, parse_spec
from protocols.context import RunContext

HELLO_RE = re.compile(
    r"^hello (?P<name>.*)! From (?P<user>\S+) "
    r"(?P<date>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4})\n$"
)


def _mask_date(text: str) -> str:
    match = HELLO_RE.match(text)
    assert match is not None, text
    return text.replace(match["date"], "<date>")


def _specs() -> dict[str, Any]:
    return tomllib.loads(demo.demo_specs_path().read_text())["pts"]


# echo, fail, hooks

@pytest.mark.parametrize("value", [None, 1, "x", b"\x00\xff", [1, {"a": 2}], {"k": [1.5]}])
def test_echo_returns_input_unchanged(value: Any) -> None:
    assert demo.echo(value) == value


def test_fail_always_raises() -> None:
    with pytest.raises(RuntimeError, match="demo failure"):
        demo.fail({"anything": 1})


def test_hooks_return_short_text() -> None:
    assert demo.init() == "hello initialised"
    assert demo.clean(None) == "hello cleaned"


# hello

@pytest.mark.parametrize(
    ("data", "name"),
    [("Ann", "Ann"), ({"theName": "Bob"}, "Bob"), ({}, "stranger"), ("", "stranger"),
     ({"theName": ""}, "stranger"), (None, "stranger"), (b"Cy", "Cy"), ("Di\n", "Di")],
)
def test_hello_greets_the_name_or_stranger(data: Any, name: str) -> None:
    match = HELLO_RE.match(demo.hello(data))
    assert match is not None
    assert match["name"] == name


def test_hello_date_format_matches_the_date_command() -> None:
    # 2026-11-05 00:53:20 UTC: a one-digit day, which `date` pads with a space
    stamp = 1793840000
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.run(
        ["date", "-d", f"@{stamp}"], capture_output=True, text=True, timeout=5, check=True,
        env=env,
    )
    assert time.strftime(demo.DATE_FORMAT, time.localtime(stamp)) + "\n" == proc.stdout


@pytest.mark.parametrize("data", [5, ["a"], {"theName": 3}, b"\xff"])
def test_hello_rejects_a_name_that_is_not_text(data: Any) -> None:
    with pytest.raises(ValueError, match="hello"):
        demo.hello(data)


def test_hello_logs_to_the_context() -> None:
    lines: list[str] = []
    demo.hello("Eve", ctx=RunContext(on_log=lines.append))
    assert lines == ["greeting Eve"]


# the scripts

def _run_script(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(demo.SCRIPTS_DIR / name)], cwd=cwd, capture_output=True, text=True, timeout=10,
        check=True,
    )


@pytest.mark.parametrize("name", ["stranger", "Zoë van Dijk", ""])
def test_hello_text_equals_run_script_output(tmp_path: Path, name: str) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    (tmp_path / "input" / "infile").write_text(name)
    proc = _run_script("runPTS", tmp_path)
    outfile = (tmp_path / "output" / "outfile").read_text()
    assert proc.stdout == outfile
    assert _mask_date(outfile) == _mask_date(demo.hello(name))


def test_run_script_without_infile_greets_stranger(tmp_path: Path) -> None:
    proc = _run_script("runPTS", tmp_path)
    assert proc.stdout.startswith("hello stranger! From ")


def test_init_config_clean_scripts_manage_the_exchange_dirs(tmp_path: Path) -> None:
    init = _run_script("initPTS", tmp_path)
    assert init.stdout == f"The initialization script at {tmp_path}\n"
    assert (tmp_path / "input").is_dir() and (tmp_path / "output").is_dir()
    assert _run_script("configPTS", tmp_path).stdout == ""
    _run_script("cleanPTS", tmp_path)
    assert not (tmp_path / "input").exists() and not (tmp_path / "output").exists()


# testcalc

def _calc_input() -> dict[str, Any]:
    param = {"value": "d", "_STID": "StringParameter", "nested": {"x": [1, 2]}}
    return {
        "creator": "me",
        "rootcause": "test",
        "input": {"meta": {"description": param, "other": 1}, "img": {"data": [[1]]}, "b": 2},
    }


def test_testcalc_copies_first_meta_item_and_dataset_and_adds_spectrum() -> None:
    data = _calc_input()
    result = demo.testcalc(data)
    assert result == {
        "creator": "me",
        "rootcause": "test",
        "meta": {"description": data["input"]["meta"]["description"]},
        "datasets": {
            "img": {"data": [[1]]},
            "spectrum": {
                "col1": {"data": [1, 4.4, 5400.0], "unit": "eV"},
                "col2": {"data": [0, 43.2, 2000.0], "unit": "cnt"},
            },
        },
    }
    assert list(result["datasets"]) == ["img", "spectrum"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("creator"), "creator"),
        (lambda d: d.update(rootcause=5), "rootcause"),
        (lambda d: d.pop("input"), "input"),
        (lambda d: d["input"].pop("meta"), "meta"),
        (lambda d: d["input"].update(meta={}), "meta"),
        (lambda d: d.update(input={"meta": {"a": 1}}), "dataset"),
    ],
)
def test_testcalc_rejects_missing_fields(mutate: Any, message: str) -> None:
    data = _calc_input()
    mutate(data)
    with pytest.raises(ValueError, match=message):
        demo.testcalc(data)


def test_testcalc_rejects_a_non_map() -> None:
    with pytest.raises(ValueError, match="testcalc"):
        demo.testcalc(["creator"])


# sleep

@pytest.mark.parametrize("data", [0, 0.05, {"seconds": 0.05}])
def test_sleep_sleeps_and_reports(data: Any) -> None:
    seconds = data["seconds"] if isinstance(data, dict) else data
    progress: list[int] = []
    started = time.monotonic()
    assert demo.sleep(data, ctx=RunContext(on_progress=lambda p, _m: progress.append(p))) == {
        "slept": seconds
    }
    assert time.monotonic() - started >= seconds
    assert progress[-1] == 100
    assert progress == sorted(progress)


def test_sleep_without_context_sleeps() -> None:
    started = time.monotonic()
    assert demo.sleep(0.02) == {"slept": 0.02}
    assert time.monotonic() - started >= 0.02


@pytest.mark.parametrize(
    "data", [-1, 86401, float("nan"), float("inf"), True, "1", None, {"secs": 1}, [1]]
)
def test_sleep_rejects_bad_seconds(data: Any) -> None:
    with pytest.raises(ValueError, match="sleep"):
        demo.sleep(data)


def test_sleep_stops_early_when_cancelled() -> None:
    ctx = RunContext()
    timer = threading.Timer(0.2, ctx.cancel)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="cancelled"):
            demo.sleep(30, ctx=ctx)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5


def test_sleep_already_cancelled_does_not_sleep() -> None:
    ctx = RunContext()
    ctx.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        demo.sleep(0, ctx=ctx)


# the spec file

def test_demo_specs_parse() -> None:
    specs = {name: parse_spec(name, table) for name, table in _specs().items()}
    assert set(specs) == {
        "echo", "testcalc", "sleep", "fail", "hello", "hello-worker", "echo-worker",
        "sleep-process",
    }
    assert all(spec.version == "1" and spec.description for spec in specs.values())
    assert specs["hello"].mode is Mode.PROCESS and specs["hello"].queue == 0
    assert specs["hello-worker"].workers == 2


def test_demo_spec_entries_name_callables_in_this_module() -> None:
    for name, table in _specs().items():
        spec = parse_spec(name, table)
        for entry in (spec.entry, spec.init_entry, spec.config_entry, spec.clean_entry):
            if entry is not None:
                module, func = entry.split(":")
                assert module == "pnsd.demo" and callable(getattr(demo, func))


def test_process_mode_scripts_exist_and_are_executable() -> None:
    for name, table in _specs().items():
        spec = parse_spec(name, table)
        if spec.mode is not Mode.PROCESS:
            continue
        for argv in filter(None, (spec.init, spec.config, spec.run, spec.clean)):
            script = demo.SCRIPTS_DIR / argv[0]
            assert script.is_file() and os.access(script, os.X_OK), script
