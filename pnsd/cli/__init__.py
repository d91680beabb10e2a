"""The ``pnsd`` command: start and stop the daemon, and talk to it from a shell.

Owns argument parsing and turning replies into stdout (JSON; tables and live progress at a
terminal, drawn by :mod:`pnsd.terminal`) and errors into one stderr line,
``pnsd: <code>: <message>`` (a protocol error code), and a non-zero exit: 3 when the daemon is
not there or went away, 2 for bad usage, 1 otherwise. Every subcommand but ``start`` is a
client of the running daemon; a run waits at most for its timeout plus a margin. The
subcommands live by concern: :mod:`pnsd.cli.service` (the daemon's lifecycle) and
:mod:`pnsd.cli.commands` (PTS, runs and jobs); :mod:`pnsd.cli.common` holds what they share.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pnsd.cli.commands import (
    cmd_jobs_cancel,
    cmd_jobs_cleanup,
    cmd_jobs_delete,
    cmd_jobs_list,
    cmd_jobs_result,
    cmd_jobs_show,
    cmd_jobs_watch,
    cmd_pts_deploy,
    cmd_pts_history,
    cmd_pts_list,
    cmd_pts_replace,
    cmd_pts_show,
    cmd_pts_undeploy,
    cmd_run,
    cmd_submit,
)
from pnsd.cli.common import (
    EXIT_FAILURE,
    EXIT_OF,
    PROGRESS_OFF,
    TABLE_OFF,
    CliError,
    described,
)
from pnsd.cli.keys import add_keys_commands
from pnsd.cli.service import cmd_reload, cmd_start, cmd_status, cmd_stop
from protocols.errors import PnsError
from protocols.version import __version__

__all__ = ["CliError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except PnsError as exc:
        code, message = described(exc)
        print(f"pnsd: {code}: {message}", file=sys.stderr)
        return exc.status if isinstance(exc, CliError) else EXIT_OF.get(code, EXIT_FAILURE)
    return result


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $PNS_CONFIG, then the usual)")
    common.add_argument("--home", help="PNS home (default: $PNS_HOME or ~/pns)")
    common.add_argument("--timeout", type=float,
                        help="seconds: for run and submit the run's timeout, else the wait")
    parser = argparse.ArgumentParser(prog="pnsd", description="PNS processing node daemon")
    parser.add_argument("--version", action="version", version=f"pnsd {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
            parent: Any = sub, *, json_flag: str = "") -> argparse.ArgumentParser:
        command: argparse.ArgumentParser = parent.add_parser(name, parents=[common],
                                                             help=help_text)
        command.set_defaults(handler=handler, json=False)
        if json_flag:       # output for scripts, even at a terminal
            command.add_argument("--json", action="store_true", help=json_flag)
        return command

    start = add("start", cmd_start, "run the daemon (foreground unless --detach)")
    start.add_argument("--detach", action="store_true", help="run in the background")
    start.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    start.add_argument("--watch", action="store_true",
                       help="development: reload when the config or pts.d changes")
    add("stop", cmd_stop, "stop the running daemon (SIGTERM, then wait)")
    add("reload", cmd_reload, "re-read config and pts.d, apply the differences")
    add("status", cmd_status, "daemon and PTS state", json_flag=TABLE_OFF)

    pts = sub.add_parser("pts", help="list, inspect and deploy PTS").add_subparsers(
        required=True)
    add("list", cmd_pts_list, "every PTS", pts, json_flag=TABLE_OFF)
    add("show", cmd_pts_show, "one PTS's spec and state", pts).add_argument("name")
    add("deploy", cmd_pts_deploy, "deploy the [pts.NAME] of a TOML file", pts).add_argument(
        "file")
    replace = add("replace", cmd_pts_replace, "swap in a new version of a PTS", pts)
    replace.add_argument("name")
    replace.add_argument("file")
    add("undeploy", cmd_pts_undeploy, "drain and remove a PTS", pts).add_argument("name")
    history = add("history", cmd_pts_history, "a PTS's deploy audit, newest first", pts)
    history.add_argument("name")
    history.add_argument("--limit", type=int, default=100)

    for name, handler, text in (("run", cmd_run, "run a PTS and print its result"),
                                ("submit", cmd_submit, "submit a job and print its id")):
        command = add(name, handler, text, json_flag=PROGRESS_OFF if name == "run" else "")
        command.add_argument("name")
        command.add_argument("--input", help="the input as JSON")
        command.add_argument("--input-file", help="a file holding the input JSON ('-': stdin)")
        if name == "submit":
            command.add_argument("--key", help="idempotency key: a repeat returns the first job")

    jobs = sub.add_parser("jobs", help="list, inspect and manage jobs").add_subparsers(
        required=True)
    listing = add("list", cmd_jobs_list, "recent jobs, newest first", jobs, json_flag=TABLE_OFF)
    for flag, kind in (("--pts", str), ("--status", str), ("--limit", int), ("--offset", int)):
        listing.add_argument(flag, type=kind)
    for name, handler, text in (("show", cmd_jobs_show, "a job's status record"),
                                ("result", cmd_jobs_result, "a finished job's result"),
                                ("cancel", cmd_jobs_cancel, "dismiss a job"),
                                ("delete", cmd_jobs_delete,
                                 "delete a job (cancelled first if unfinished)")):
        add(name, handler, text, jobs).add_argument("id")
    watch = add("watch", cmd_jobs_watch, "follow a job's events", jobs,
                json_flag="JSON lines, even at a terminal")
    watch.add_argument("id")
    watch.add_argument("--after", type=int, default=0, help="last event number already seen")
    cleanup = add("cleanup", cmd_jobs_cleanup, "delete old finished jobs", jobs)
    cleanup.add_argument("--max-age", type=float)
    cleanup.add_argument("--max-bytes", type=int)
    add_keys_commands(sub, common)
    return parser
