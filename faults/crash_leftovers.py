"""Fault: SIGKILL of pnsd while process-mode runs and workers are busy, then a restart.

Process-mode runs (each a script with a child of its own) and worker-mode runs (each worker
with a child of its own) are busy when pnsd alone is SIGKILLed. Workers must die with it (a
parent-death signal). The restarted daemon must end every process of its previous life (the
process groups it had recorded), remove that life's worker sockets and process-mode job dirs,
fail the interrupted jobs with ``daemon restarted``, and serve both PTS again.
"""

from __future__ import annotations

import time
from pathlib import Path

from faults.procs import Node
from faults.report import Row
from faults.runner import Context
from harness.procs import alive, wait_until
from protocols.errors import PnsError

RESTART_REASON = "daemon restarted"
SCRIPT = """#!/bin/bash
who=$(cat input/who)
[ "$who" = quick ] && {{ echo done > output/out; exit 0; }}
sleep 300 &
echo "$$ $!" > "{marks}/p-$who.tmp" && mv "{marks}/p-$who.tmp" "{marks}/p-$who"
wait
"""
WORKER = """
import os, subprocess, time

def run(data):
    if data == "quick":
        return "done"
    child = subprocess.Popen(["sleep", "300"])
    path = os.path.join({marks!r}, "w-" + str(data))
    with open(path + ".tmp", "w") as fh:
        fh.write(f"{{os.getpid()}} {{child.pid}}")
    os.replace(path + ".tmp", path)
    time.sleep(300)
"""
PTS = """
[pts.busy-p]
mode = "process"
run = [{script!r}]
inputs = ["who"]
timeout = 600
concurrency = 3

[pts.busy-w]
mode = "worker"
entry = "crashw:run"
pythonpath = [{code!r}]
workers = 2
timeout = 600
"""


def crash_leftovers(ctx: Context) -> Row:
    tries = ctx.pick(2, 1)
    row = Row("crash-leftovers", tries=tries)
    code = ctx.dir / "code"
    code.mkdir()
    script = code / "busy"
    (code / "crashw.py").write_text(WORKER.format(marks=str(code / "marks")))
    script.write_text(SCRIPT.format(marks=code / "marks"))
    script.chmod(0o755)
    node = Node(ctx.dir, "home", pts=PTS.format(script=str(script), code=str(code)))
    try:
        node.start_daemon()
        for attempt in range(tries):
            _try(node, code / "marks", row, attempt)
    finally:
        node.stop()
    return row


def _try(node: Node, marks: Path, row: Row, attempt: int) -> None:
    marks.mkdir(exist_ok=True)
    for old in marks.iterdir():
        old.unlink()
    jobs = _busy(node, row, attempt)
    wait_until(lambda: len([m for m in marks.iterdir() if not m.name.endswith(".tmp")]) == 5,
               timeout=30, what="the busy runs")
    pids = [int(pid) for mark in marks.iterdir() for pid in mark.read_text().split()]
    stale = [*(node.home / "run").glob("w-*"), *(node.home / "work").glob("*/gen-*")]
    assert node.daemon is not None
    node.daemon.kill_hard()
    node.start_daemon()
    row.sent += len(jobs)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(alive, pids)):
        time.sleep(0.05)    # a SIGKILLed group is reaped by its new parent: poll for it
    for pid in pids:
        if alive(pid):
            row.fail(f"process {pid} of the killed daemon's life survived its restart")
    for path in stale:
        if path.exists():
            row.fail(f"{path.name} of the killed daemon's life is still there")
    _check_jobs(node, jobs, row)
    _serves(node, row)


def _busy(node: Node, row: Row, attempt: int) -> list[str]:
    jobs = []
    with node.client() as client:
        for index in range(3):
            request = {"pts": "busy-p", "input": {"who": f"{attempt}-{index}"}}
            jobs.append(client.call("submit", request)["job"]["id"])
        for index in range(2):
            request = {"pts": "busy-w", "input": f"{attempt}-{index}"}
            jobs.append(client.call("submit", request)["job"]["id"])
    row.sent += len(jobs)
    return jobs


def _check_jobs(node: Node, jobs: list[str], row: Row) -> None:
    with node.client() as client:
        for job in jobs:
            record = client.call("job.status", {"job": job})["job"]
            if record["status"] == "failed" and record["reason"] == RESTART_REASON:
                row.expected += 1
            else:
                row.lose(f"job {job} is {record['status']} ({record['reason']}) after the "
                         "restart, not failed: daemon restarted")


def _serves(node: Node, row: Row) -> None:
    with node.client() as client:
        for pts, data, want in (("busy-p", {"who": "quick"}, {"out": "done\n"}),
                                ("busy-w", "quick", "done")):
            row.sent += 1
            try:
                result = client.call("run", {"pts": pts, "input": data})["result"]
            except PnsError as exc:
                row.fail(f"{pts} after the restart: {exc}")
                continue
            got = result["outputs"] if pts == "busy-p" else result
            if got != want:
                row.fail(f"{pts} after the restart returned {got!r}")
