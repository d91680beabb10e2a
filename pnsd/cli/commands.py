"""The PTS, run and job subcommands: each one protocol call, its reply printed as JSON.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from pnsd import terminal
from pnsd.cli.common import EXIT_USAGE, RUN_MARGIN, SWAP_WAIT, CliError, call, client_of, emit
from protocols.client import Client

# -- PTS and runs -------------------------------------------------------------------------------


def cmd_pts_list(args: argparse.Namespace) -> int:
    pts = call(args, "pts.list", {})["pts"]
    if terminal.interactive(sys.stdout, json_wanted=args.json):
        terminal.pts_table(pts)
    else:
        emit(pts)
    return 0


def cmd_pts_show(args: argparse.Namespace) -> int:
    emit(call(args, "pts.describe", {"name": args.name}))
    return 0


def who() -> str:
    """The OS user, for the audit trail."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):    # no name for this uid (a container, say)
        return f"uid {os.getuid()}"


def read_spec(path: str, name: str | None = None) -> tuple[str, dict[str, Any]]:
    """The one ``[pts.NAME]`` table of a TOML file, as (name, table)."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read the spec {path}: {exc}", EXIT_USAGE) from None
    tables = document.get("pts")
    if set(document) != {"pts"} or not isinstance(tables, dict) or len(tables) != 1:
        raise CliError(f"{path} must hold exactly one [pts.NAME] table", EXIT_USAGE)
    found, table = next(iter(tables.items()))
    if name is not None and found != name:
        raise CliError(f"{path} defines PTS {found!r}, not {name!r}", EXIT_USAGE)
    return found, _anchored(table, Path(path).resolve().parent)


def _anchored(table: Any, base: Path) -> Any:
    """The table with relative ``pythonpath`` entries and ``dir`` made absolute against
    ``base`` (the spec file's directory): the daemon, elsewhere, would read them against its
    home instead."""
    if not isinstance(table, dict):
        return table
    out = dict(table)
    paths = out.get("pythonpath")
    if isinstance(paths, list):
        out["pythonpath"] = [str(base / item) if isinstance(item, str) and item else item
                             for item in paths]
    if isinstance(out.get("dir"), str) and out["dir"]:
        out["dir"] = str(base / out["dir"])
    return out


def cmd_pts_deploy(args: argparse.Namespace) -> int:
    name, table = read_spec(args.file)
    emit(call(args, "pts.deploy", {"name": name, "spec": table, "who": who()}, wait=SWAP_WAIT))
    return 0


def cmd_pts_replace(args: argparse.Namespace) -> int:
    name, table = read_spec(args.file, args.name)
    emit(call(args, "pts.replace", {"name": name, "spec": table, "who": who()}, wait=SWAP_WAIT))
    return 0


def cmd_pts_undeploy(args: argparse.Namespace) -> int:
    emit(call(args, "pts.undeploy", {"name": args.name, "who": who()}))
    return 0


def cmd_pts_history(args: argparse.Namespace) -> int:
    emit(call(args, "pts.history", {"name": args.name, "limit": args.limit})["events"])
    return 0


def read_input(args: argparse.Namespace) -> Any:
    if args.input is not None and args.input_file is not None:
        raise CliError("give --input or --input-file, not both", EXIT_USAGE)
    text = args.input
    if args.input_file == "-":
        text = sys.stdin.read()
    elif args.input_file is not None:
        try:
            text = Path(args.input_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CliError(f"cannot read the input file {args.input_file}: {why}",
                           EXIT_USAGE) from None
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"input is not JSON: {exc}", EXIT_USAGE) from None


def run_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"pts": args.name, "input": read_input(args)}
    if args.timeout is not None:
        body["timeout"] = args.timeout
    return body


def cmd_run(args: argparse.Namespace) -> int:
    body = run_body(args)
    with client_of(args) as client:
        wait = run_wait(client, args)
        if not at_terminal(args):
            emit(client.call("run", body, timeout=wait)["result"])
            return 0
    # at a terminal the run is a submitted job, followed live: Ctrl-C can then leave it running
    return terminal.run_followed(lambda: client_of(args), body, show=emit, wait=wait)


def at_terminal(args: argparse.Namespace) -> bool:
    """A person is there: stdin, stdout and stderr are a terminal and --json was not given."""
    return (terminal.interactive(sys.stdout, json_wanted=args.json)
            and sys.stderr.isatty() and sys.stdin.isatty())


def run_wait(client: Client, args: argparse.Namespace) -> float:
    """How long a run's reply may take: its timeout (``--timeout``, else the PTS's) twice, as
    a run may wait in line that long before it starts, plus a margin for the trip."""
    timeout = args.timeout
    if timeout is None:
        spec = client.call("pts.describe", {"name": args.name}, timeout=60.0)["spec"]
        timeout = float(spec.get("timeout") or 0) or None
    if timeout is None:
        raise CliError(f"PTS {args.name} has no timeout: give --timeout", EXIT_USAGE)
    return 2 * float(timeout) + RUN_MARGIN


def cmd_submit(args: argparse.Namespace) -> int:
    body = run_body(args)
    if args.key is not None:
        body["idempotency_key"] = args.key
    print(call(args, "submit", body)["job"]["id"])
    return 0


# -- jobs ---------------------------------------------------------------------------------------


def cmd_jobs_list(args: argparse.Namespace) -> int:
    body = {"pts": args.pts, "status": args.status, "limit": args.limit, "offset": args.offset}
    reply = call(args, "job.list", {k: v for k, v in body.items() if v is not None})
    if terminal.interactive(sys.stdout, json_wanted=args.json):
        terminal.jobs_table(reply)
    else:
        emit(reply)
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    emit(call(args, "job.status", {"job": args.id})["job"])
    return 0


def cmd_jobs_result(args: argparse.Namespace) -> int:
    """The result, read in chunks when it is larger than one message may be."""
    with client_of(args) as client:
        emit(client.result(args.id, timeout=args.timeout)["result"])
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    emit(call(args, "job.cancel", {"job": args.id})["job"])
    return 0


def cmd_jobs_delete(args: argparse.Namespace) -> int:
    emit(call(args, "job.delete", {"job": args.id})["job"])
    return 0


def cmd_jobs_cleanup(args: argparse.Namespace) -> int:
    emit(call(args, "jobs.cleanup", {"max_age": args.max_age, "max_bytes": args.max_bytes}))
    return 0


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        if terminal.interactive(sys.stdout, json_wanted=args.json):
            return terminal.watch_followed(client, args.id, args.after)
        for event in client.stream("job.watch", {"job": args.id, "after": args.after},
                                   timeout=args.timeout or 60.0):
            print(json.dumps(event, ensure_ascii=False), flush=True)
    return 0
