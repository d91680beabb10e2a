"""The process hosting mode: job dirs, capped capture, whole-group kills, safe file names."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.procs import alive, group_members
from pnsd.errors import BadRequest, Cancelled, InvalidSpec, NotReady, PtsFailed, RunTimeout
from pnsd.hosts.mailbox import read_dir_files
from pnsd.hosts.process import ProcessHost
from pnsd.spec import parse_spec
from protocols.context import RunContext
from tests.waiting import until

DEMO_SCRIPTS = Path(__file__).resolve().parents[2] / "pnsd" / "demo" / "scripts"


def _script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)
    return path


def _host(tmp_path: Path, table: Mapping[str, Any], **kwargs: Any) -> ProcessHost:
    spec = parse_spec("t", {"mode": "process", **table})
    env = {"MARK": str(tmp_path / "mark")}
    (tmp_path / "mark").mkdir(exist_ok=True)
    kwargs.setdefault("env", env)
    return ProcessHost(spec, pts_dir=tmp_path / "pts", work_dir=tmp_path / "work", **kwargs)


async def _started(tmp_path: Path, scripts: Mapping[str, str], table: Mapping[str, Any],
                   **kwargs: Any) -> ProcessHost:
    (tmp_path / "pts").mkdir(exist_ok=True)
    for name, body in scripts.items():
        _script(tmp_path / "pts", name, body)
    host = _host(tmp_path, table, **kwargs)
    await host.start()
    return host


def _marker(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


async def _wait_for_marker(path: Path, deadline: float = 10.0) -> int:
    """The number a script writes into ``path``, once it is there."""
    await until(lambda: bool(_marker(path)), timeout=deadline, every=0.01)
    return int(_marker(path))


async def _wait_group_gone(pgid: int, deadline: float = 5.0) -> list[int]:
    """SIGKILL is delivered asynchronously: the group's members left once it is empty."""
    await until(lambda: not group_members(pgid), timeout=deadline, every=0.01)
    return group_members(pgid)


RUN_ECHO = 'cat input/infile > output/outfile; echo "out $(cat input/infile)"; echo err >&2'


async def test_run_returns_outputs_stdout_and_returncode(tmp_path: Path) -> None:
    host = await _started(tmp_path, {"runPTS": RUN_ECHO},
                          {"run": ["runPTS"], "inputs": ["infile"], "outputs": ["outfile"]})
    result = await host.run({"infile": "stranger"}, timeout=10, ctx=RunContext("job1"))
    assert result == {
        "command": [str(tmp_path / "pts" / "runPTS")], "returncode": 0,
        "stdout": "out stranger\n", "stderr": "err\n",
        "outputs": {"outfile": "stranger"}, "truncated": False,
    }
    assert host.last_run_dir() == tmp_path / "work" / "job1"
    assert host.state().public()["state"] == "ready"


async def test_all_regular_output_files_are_read_when_outputs_is_omitted(tmp_path: Path) -> None:
    body = "printf a > output/a.txt; printf '\\xff\\x00' > output/blob; mkdir output/sub"
    host = await _started(tmp_path, {"runPTS": body}, {"run": ["runPTS"]})
    result = await host.run({}, timeout=10, ctx=RunContext())
    assert result["outputs"] == {"a.txt": "a", "blob": b"\xff\x00"}


async def test_a_declared_output_that_is_missing_is_left_out(tmp_path: Path) -> None:
    host = await _started(tmp_path, {"runPTS": "echo x > output/here"},
                          {"run": ["runPTS"], "outputs": ["here", "missing"]})
    result = await host.run({}, timeout=10, ctx=RunContext())
    assert result["outputs"] == {"here": "x\n"}


async def test_non_zero_exit_raises_pts_failed_with_the_outcome(tmp_path: Path) -> None:
    host = await _started(tmp_path, {"runPTS": "echo partial; echo broken >&2; exit 3"},
                          {"run": ["runPTS"]})
    with pytest.raises(PtsFailed) as caught:
        await host.run({}, timeout=10, ctx=RunContext())
    assert caught.value.message == "run command exited with code 3"
    details = caught.value.details
    assert details["returncode"] == 3
    assert details["stdout"] == "partial\n"
    assert details["stderr"] == "broken\n"
    assert details["command"] == [str(tmp_path / "pts" / "runPTS")]


async def test_missing_command_is_an_invalid_spec_at_start(tmp_path: Path) -> None:
    host = _host(tmp_path, {"run": ["no-such-command-xyz"]})
    with pytest.raises(InvalidSpec, match="run command 'no-such-command-xyz' not found"):
        await host.start()
    assert host.state().state == "unavailable"
    with pytest.raises(NotReady):
        await host.run({}, timeout=1, ctx=RunContext())


async def test_non_executable_command_is_an_invalid_spec_at_start(tmp_path: Path) -> None:
    (tmp_path / "pts").mkdir()
    (tmp_path / "pts" / "cleanPTS").write_text("#!/bin/sh\n")
    host = _host(tmp_path, {"run": ["true"], "clean": ["cleanPTS"]})
    with pytest.raises(InvalidSpec, match=r"clean command 'cleanPTS' .* not an executable"):
        await host.start()


async def test_bare_names_fall_back_to_packaged_scripts_then_path(tmp_path: Path) -> None:
    host = _host(tmp_path, {"run": ["runPTS"], "init": ["true"]},
                 scripts_fallback=DEMO_SCRIPTS)
    await host.start()
    result = await host.hook("init", timeout=10)
    assert result is not None
    assert result["command"][0].endswith("true")
    assert (tmp_path / "pts" / "input").is_dir()
    assert (tmp_path / "pts" / "output").is_dir()
    assert await host.hook("config", timeout=10) is None


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "", ".x", "a\x00b", 3])
async def test_unsafe_input_names_are_refused_and_nothing_is_written(
    tmp_path: Path, name: object,
) -> None:
    host = await _started(tmp_path, {"runPTS": "true"}, {"run": ["runPTS"]})
    with pytest.raises(BadRequest, match="not a plain file name"):
        await host.run({name: "evil"}, timeout=10, ctx=RunContext())
    assert not (tmp_path / "x").exists()
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("data", [["infile"], "infile", {"infile": object()}, {"other": "x"}])
async def test_malformed_or_undeclared_input_is_a_bad_request(tmp_path: Path, data: Any) -> None:
    host = await _started(tmp_path, {"runPTS": "true"}, {"run": ["runPTS"], "inputs": ["infile"]})
    with pytest.raises(BadRequest):
        await host.run(data, timeout=10, ctx=RunContext())


@pytest.mark.timeout(20)
@pytest.mark.parametrize("trap", ["", "trap '' TERM; "], ids=["polite", "ignores-sigterm"])
async def test_timeout_kills_the_whole_group_including_children(
    tmp_path: Path, trap: str,
) -> None:
    body = trap + 'echo $$ > "$MARK/pgid"; sleep 60 & sleep 60; wait'
    host = await _started(tmp_path, {"runPTS": body}, {"run": ["runPTS"]})
    with pytest.raises(RunTimeout) as caught:
        await host.run({}, timeout=1.5, ctx=RunContext())
    assert caught.value.message == "run exceeded 1.5 s"
    assert caught.value.details["returncode"] < 0
    assert caught.value.details["command"] == [str(tmp_path / "pts" / "runPTS")]
    pgid = int((tmp_path / "mark" / "pgid").read_text())
    assert group_members(pgid) == []
    assert host.state().details["running"] == 0


@pytest.mark.timeout(20)
async def test_children_left_behind_after_a_normal_exit_are_killed(tmp_path: Path) -> None:
    body = 'sleep 60 & echo $! > "$MARK/child"; echo done'
    host = await _started(tmp_path, {"runPTS": body}, {"run": ["runPTS"]})
    result = await host.run({}, timeout=10, ctx=RunContext())
    assert result["stdout"] == "done\n"
    assert not alive(int((tmp_path / "mark" / "child").read_text()))


@pytest.mark.timeout(20)
async def test_cancelling_the_caller_kills_the_group(tmp_path: Path) -> None:
    body = 'echo $$ > "$MARK/pgid"; sleep 60 & sleep 60; wait'
    host = await _started(tmp_path, {"runPTS": body}, {"run": ["runPTS"]})
    task = asyncio.create_task(host.run({}, timeout=30, ctx=RunContext()))
    pgid = await _wait_for_marker(tmp_path / "mark" / "pgid")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_group_gone(pgid) == []


@pytest.mark.timeout(20)
async def test_a_cancelled_context_stops_the_run(tmp_path: Path) -> None:
    body = 'echo $$ > "$MARK/pgid"; sleep 60'
    host = await _started(tmp_path, {"runPTS": body}, {"run": ["runPTS"]})
    ctx = RunContext()
    task = asyncio.create_task(host.run({}, timeout=30, ctx=ctx))
    pgid = await _wait_for_marker(tmp_path / "mark" / "pgid")
    ctx.cancel()
    with pytest.raises(Cancelled):
        await task
    assert group_members(pgid) == []


@pytest.mark.timeout(30)
async def test_an_output_flood_is_capped_and_marked_truncated(tmp_path: Path) -> None:
    body = "yes | head -c 50000000; yes e | head -c 3000000 >&2"
    host = await _started(tmp_path, {"runPTS": body}, {"run": ["runPTS"]}, max_output=1000)
    result = await host.run({}, timeout=20, ctx=RunContext())
    assert result["truncated"] is True
    assert result["stdout"] == "y\n" * 500
    assert len(result["stderr"]) == 1000


async def test_an_output_symlink_is_not_followed(tmp_path: Path) -> None:
    body = "ln -s /etc/passwd output/leak; echo ok > output/ok; mkfifo output/fifo"
    host = await _started(tmp_path, {"runPTS": body}, {"run": ["runPTS"]})
    assert (await host.run({}, timeout=10, ctx=RunContext()))["outputs"] == {"ok": "ok\n"}
    declared = await _started(tmp_path, {"runPTS": body},
                              {"run": ["runPTS"], "outputs": ["leak", "fifo", "ok"]})
    assert (await declared.run({}, timeout=10, ctx=RunContext()))["outputs"] == {"ok": "ok\n"}


async def test_an_output_bigger_than_the_cap_fails_the_run(tmp_path: Path) -> None:
    host = await _started(tmp_path, {"runPTS": "head -c 2000 /dev/zero > output/big"},
                          {"run": ["runPTS"]}, max_output=1000)
    with pytest.raises(PtsFailed, match="output 'big' too large"):
        await host.run({}, timeout=10, ctx=RunContext())


@pytest.mark.timeout(20)
async def test_concurrent_runs_get_separate_job_dirs(tmp_path: Path) -> None:
    # each run waits (bounded) until both have started, so the two really overlap
    body = ('who=$(cat input/who); touch "$MARK/$who"\n'
            'for i in $(seq 1000); do [ -e "$MARK/a" ] && [ -e "$MARK/b" ] && break; '
            'sleep 0.01; done\n'
            '[ -e "$MARK/a" ] && [ -e "$MARK/b" ] || exit 9\n'
            'echo "$who" > output/who; pwd')
    host = await _started(tmp_path, {"runPTS": body}, {"run": ["runPTS"]})
    first, second = await asyncio.gather(
        host.run({"who": "a"}, timeout=15, ctx=RunContext("job-a")),
        host.run({"who": "b"}, timeout=15, ctx=RunContext("job-b")),
    )
    assert first["outputs"] == {"who": "a\n"}
    assert second["outputs"] == {"who": "b\n"}
    assert {first["stdout"], second["stdout"]} == {
        f"{tmp_path / 'work' / 'job-a'}\n", f"{tmp_path / 'work' / 'job-b'}\n"}


async def test_only_the_last_run_dir_is_kept(tmp_path: Path) -> None:
    host = await _started(tmp_path, {"runPTS": RUN_ECHO}, {"run": ["runPTS"]})
    await host.run({"infile": "one"}, timeout=10, ctx=RunContext("one"))
    await host.run({"infile": "two"}, timeout=10, ctx=RunContext("two"))
    last = host.last_run_dir()
    assert last == tmp_path / "work" / "two"
    assert list((tmp_path / "work").iterdir()) == [last]
    assert read_dir_files(last / "input", max_bytes=100) == {"infile": "two"}
    assert read_dir_files(last / "output", max_bytes=100) == {"outfile": "two"}


async def test_a_reused_job_id_gets_a_fresh_dir(tmp_path: Path) -> None:
    host = await _started(tmp_path, {"runPTS": "pwd; ls input"}, {"run": ["runPTS"]})
    runs = await asyncio.gather(*(host.run({f"f{i}": "x"}, timeout=10, ctx=RunContext("same"))
                                  for i in range(2)))
    assert runs[0]["stdout"].split()[0] != runs[1]["stdout"].split()[0]
    assert sorted(run["stdout"].split()[1] for run in runs) == ["f0", "f1"]


@pytest.mark.timeout(20)
async def test_stop_kills_running_groups_and_removes_the_work_dir(tmp_path: Path) -> None:
    body = 'echo $$ > "$MARK/pgid"; sleep 60 & sleep 60; wait'
    host = await _started(tmp_path, {"runPTS": body}, {"run": ["runPTS"]})
    task = asyncio.create_task(host.run({}, timeout=30, ctx=RunContext()))
    pgid = await _wait_for_marker(tmp_path / "mark" / "pgid")
    await host.stop(grace=1)
    assert group_members(pgid) == []
    with pytest.raises(PtsFailed):
        await task
    assert host.state().state == "stopped"
    assert not (tmp_path / "work").exists()
    assert host.last_run_dir() is None


async def test_hook_runs_in_the_last_run_dir_and_reports_failure(tmp_path: Path) -> None:
    host = await _started(tmp_path, {"runPTS": "true", "cleanPTS": "pwd; exit 2"},
                          {"run": ["runPTS"], "clean": ["cleanPTS"]})
    await host.run({}, timeout=10, ctx=RunContext("j"))
    with pytest.raises(PtsFailed, match="clean command exited with code 2") as caught:
        await host.hook("clean", timeout=10)
    assert caught.value.details["stdout"] == f"{tmp_path / 'work' / 'j'}\n"
    with pytest.raises(BadRequest):
        await host.hook("bogus", timeout=10)


@pytest.mark.timeout(20)
async def test_hook_timeout_raises_run_timeout(tmp_path: Path) -> None:
    host = await _started(tmp_path, {"runPTS": "true", "configPTS": "sleep 60"},
                          {"run": ["runPTS"], "config": ["configPTS"]})
    with pytest.raises(RunTimeout, match=r"config exceeded 0\.5 s"):
        await host.hook("config", timeout=0.5)


async def test_limits_and_env_reach_the_child(tmp_path: Path) -> None:
    host = await _started(tmp_path, {"runPTS": 'ulimit -n; ulimit -v; echo "$FROM_SPEC"'},
                          {"run": ["runPTS"], "env": {"FROM_SPEC": "yes"},
                           "limits": {"open_files": 64, "memory_mb": 512}})
    result = await host.run({}, timeout=10, ctx=RunContext())
    assert result["stdout"].split() == ["64", str(512 * 1024), "yes"]


def test_read_dir_files_reports_a_missing_dir_and_skips_symlinks(tmp_path: Path) -> None:
    assert read_dir_files(tmp_path / "absent", max_bytes=10) is None
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "text").write_text("hi")
    (tmp_path / "d" / "link").symlink_to("/etc/passwd")
    (tmp_path / "d" / "sub").mkdir()
    assert read_dir_files(tmp_path / "d", max_bytes=10) == {"text": "hi"}
    (tmp_path / "d" / "big").write_bytes(b"x" * 11)
    with pytest.raises(PtsFailed, match="too large"):
        read_dir_files(tmp_path / "d", max_bytes=10)
