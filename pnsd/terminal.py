"""What ``pnsd`` shows a person at a terminal: tables, live progress, the Ctrl-C question.

Owns the terminal forms of the CLI's output, drawn with rich: ``status``, ``pts list`` and
``jobs list`` as tables on stdout; a job followed live (``run`` and ``jobs watch``) as a
progress bar with the PTS's progress message, its log lines printed above the bar, all on
stderr; and, on Ctrl-C during ``run``, the question whether to cancel the job or leave it
running (with the commands to watch it again and read its result). The CLI uses these only
when the output is a terminal and ``--json`` is not given; piped, it prints JSON exactly as
before. It must not parse arguments or decide exit codes: :mod:`pnsd.cli` does.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.prompt import Prompt
from rich.table import Table
from rich.text import Text

from protocols.client import Client
from protocols.errors import ClientTimeout, ErrorCode, RemoteError

FINAL = frozenset({"successful", "failed", "dismissed"})
WATCH_WAIT = 60.0      # the daemon ends a watch idle for 30 s; a watch is then made again
STATE_STYLE = {"ready": "green", "successful": "green", "running": "yellow",
               "accepted": "yellow", "degraded": "yellow", "failed": "red",
               "unavailable": "red", "stopped": "red", "dismissed": "dim"}


def interactive(stream: TextIO, *, json_wanted: bool = False) -> bool:
    """Whether to draw for a person: ``stream`` is a terminal and JSON was not asked for."""
    return not json_wanted and stream.isatty()


def _styled(value: str) -> Text:
    return Text(value, style=STATE_STYLE.get(value, ""))


def _when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


# -- tables -----------------------------------------------------------------------------------


def status_table(status: Mapping[str, Any], out: Console | None = None) -> None:
    """The daemon's ``status``: a heading line, then one row per PTS."""
    out = out or Console()
    out.print(f"pnsd {status['version']} (protocol {status['protocol']}), "
              f"up {status['uptime']:.0f} s", highlight=False)
    table = Table("PTS", "mode", "version", "state", "running", "queued", "workers")
    for name, info in sorted(status["pts"].items()):
        state = _styled(str(info.get("state", "-")))
        if info.get("reason"):
            state.append(f" ({info['reason']})", style="dim")
        table.add_row(name, str(info.get("mode", "-")), str(info.get("version") or "-"), state,
                      str(info.get("running", 0)), str(info.get("queued", 0)),
                      _workers_cell(info))
    out.print(table)


def _workers_cell(info: Mapping[str, Any]) -> str:
    """``alive/all alive, n busy``, then where the remote workers run (their hosts)."""
    if "workers" not in info:
        return ""
    cell = f"{info.get('alive', 0)}/{info['workers']} alive, {info.get('busy', 0)} busy"
    remote = [str(w.get("where")) for w in info.get("each") or []
              if w.get("where") not in (None, "local")]
    if remote:
        cell += f"; remote on {', '.join(remote)}"
    return cell


def pts_table(entries: Iterable[Mapping[str, Any]], out: Console | None = None) -> None:
    table = Table("name", "mode", "version", "state", "description")
    for entry in entries:
        table.add_row(str(entry["name"]), str(entry.get("mode", "-")),
                      str(entry.get("version") or "-"), _styled(str(entry.get("state", "-"))),
                      str(entry.get("description") or ""))
    (out or Console()).print(table)


def jobs_table(reply: Mapping[str, Any], out: Console | None = None) -> None:
    jobs = reply.get("jobs") or []
    table = Table("job", "PTS", "status", "progress", "owner", "created", "finished",
                  caption=f"{len(jobs)} of {reply.get('total', len(jobs))} jobs, newest first")
    for job in jobs:
        table.add_row(str(job["id"]), str(job["pts"]), _styled(str(job["status"])),
                      f"{job.get('progress', 0)} %", str(job.get("owner") or "(operator)"),
                      _when(job.get("created")), _when(job.get("finished")))
    (out or Console()).print(table)


# -- following a job --------------------------------------------------------------------------


def follow(client: Client, job: Mapping[str, Any], *, after: int = 0,
           err: Console | None = None) -> dict[str, Any]:
    """Show the job's progress and log lines live until it ends; its last status event."""
    err = err or Console(stderr=True)
    columns = (TextColumn("[bold]{task.fields[pts]}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[message]}"))
    last: dict[str, Any] = {"status": job.get("status"), "progress": job.get("progress", 0)}
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("job", total=100, completed=job.get("progress", 0),
                                 pts=job.get("pts", ""), message=job.get("message") or "")
        for event in events(client, str(job["id"]), after):
            if event.get("kind") == "log":
                progress.console.print(Text(str(event.get("line", "")), style="dim"))
                continue
            last.update(event)
            progress.update(task, completed=event.get("progress") or 0,
                            message=str(event.get("message") or ""))
            if event.get("status") in FINAL:
                break
    return last


def events(client: Client, job_id: str, after: int) -> Iterable[dict[str, Any]]:
    """The job's events from the daemon, watching again when an idle watch ends."""
    while True:
        try:
            for event in client.stream("job.watch", {"job": job_id, "after": after},
                                       timeout=WATCH_WAIT):
                after = max(after, int(event.get("seq", after)))
                yield event
            return
        except RemoteError as exc:
            if exc.code != ErrorCode.TIMEOUT:
                raise
        except ClientTimeout:
            continue


def run_followed(connect: Callable[[], Client], body: Mapping[str, Any], *,
                 show: Callable[[Any], None], wait: float,
                 err: Console | None = None, ask: Callable[[str], str] | None = None) -> int:
    """``pnsd run`` at a terminal: submit, follow, then show the result; on Ctrl-C, ask.

    Returns the exit status: 0 when the result was shown, 130 after Ctrl-C.
    """
    err = err or Console(stderr=True)
    with connect() as client:
        job = client.call("submit", dict(body), timeout=wait)["job"]
        try:
            last = follow(client, job, err=err)
        except KeyboardInterrupt:
            return interrupted(connect, str(job["id"]), err=err, ask=ask)
        if last.get("status") != "successful":
            err.print(f"job {job['id']} {last.get('status')}", style="red", highlight=False)
        show(client.result(str(job["id"]), timeout=wait)["result"])
    return 0


def interrupted(connect: Callable[[], Client], job_id: str, *, err: Console,
                ask: Callable[[str], str] | None = None) -> int:
    """Ask whether to cancel the job or leave it running, and do it."""
    question = ask or (lambda text: Prompt.ask(escape(text), choices=["c", "l"], default="l",
                                               console=err))
    try:
        answer = question(f"\nJob {job_id} is still running: [c]ancel it or [l]eave it running?")
    except (KeyboardInterrupt, EOFError):
        answer = "l"
    if answer == "c":
        with connect() as client:
            client.call("job.cancel", {"job": job_id}, timeout=WATCH_WAIT)
            final = next((event for event in events(client, job_id, 0)
                          if event.get("status") in FINAL), {})    # the run has stopped
        err.print(f"Job {job_id} cancelled ({final.get('status', 'requested')}).",
                  highlight=False)
    else:
        err.print(f"Job {job_id} left running. Watch it: pnsd jobs watch {job_id}\n"
                  f"Its result, once done: pnsd jobs result {job_id}", highlight=False)
    return 130


def watch_followed(client: Client, job_id: str, after: int,
                   err: Console | None = None) -> int:
    """``pnsd jobs watch`` at a terminal: the progress bar until the job ends."""
    err = err or Console(stderr=True)
    job = client.call("job.status", {"job": job_id}, timeout=WATCH_WAIT)["job"]
    last = follow(client, job, after=after, err=err)
    err.print(Text.assemble(f"job {job_id} ", _styled(str(last.get("status")))))
    return 0


__all__ = ["interactive", "jobs_table", "pts_table", "run_followed", "status_table",
           "watch_followed"]
