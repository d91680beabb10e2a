"""The ``pnsd`` command: start and stop the daemon, and talk to it from a shell.

Owns argument parsing and turning replies into stdout (JSON) and errors into one stderr line,
``pnsd: <code>: <message>`` (a protocol error code), and a non-zero exit: 3 when the daemon is
not there or went away, 2 for bad usage, 1 otherwise. Every subcommand but ``start`` is a
client of the running daemon; a run waits at most for its timeout plus a margin.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pnsd.config import Settings, load_settings
from pnsd.keyfile import load_or_create_key
from pnsd.pidfile import process_alive, read_pid
from pnslog import configure_logging
from protocols.client import Client
from protocols.errors import ClientClosed, ClientTimeout, CodedError, ErrorCode, PnsError
from protocols.version import __version__

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
RUN_MARGIN = 10.0        # seconds a run's reply may take beyond the run's own timeout
SWAP_WAIT = 300.0        # a deploy or replace waits for start, init and self-test
EXIT_OF = {ErrorCode.UNAVAILABLE: EXIT_UNAVAILABLE}


class CliError(CodedError):
    """An error found here: shown with a protocol error code, it ends the command with
    ``status`` (2 for bad usage, 3 for a daemon that is not there, 1 otherwise)."""

    def __init__(self, message: str, status: int = EXIT_FAILURE, *, kind: str = "") -> None:
        super().__init__(message, code=kind or {
            EXIT_USAGE: ErrorCode.BAD_REQUEST, EXIT_UNAVAILABLE: ErrorCode.UNAVAILABLE,
        }.get(status, "failed"))
        self.status = status


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


def described(exc: Exception) -> tuple[str, str]:
    """The protocol error code and the message an error is shown with."""
    if isinstance(exc, CodedError):   # ours, the daemon's answer, or refused before sending
        return exc.code, exc.message
    if isinstance(exc, ClientTimeout):
        return ErrorCode.TIMEOUT, str(exc) or "no reply within the timeout"
    if isinstance(exc, ClientClosed):
        return ErrorCode.UNAVAILABLE, str(exc)
    return ErrorCode.INTERNAL, str(exc)


def settings_of(args: argparse.Namespace) -> Settings:
    home = Path(args.home).expanduser().resolve() if args.home else None
    config = Path(args.config).expanduser() if args.config else None
    return load_settings(config=config, home=home)


def client_of(args: argparse.Namespace) -> Client:
    settings = settings_of(args)
    if not settings.key_file.exists():
        raise CliError(f"no key file at {settings.key_file}: has pnsd been started?",
                       EXIT_UNAVAILABLE)
    key = load_or_create_key(settings.key_file, create=False)
    return Client(settings.endpoint, key=key, timeout=args.timeout or 60.0,
                  max_bytes=settings.max_message_bytes)


def emit(value: Any) -> None:
    print(json.dumps(value, indent=None if isinstance(value, str | int | float) else 2,
                     ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": __import__("base64").b64encode(value).decode()}
    raise TypeError(f"cannot show {type(value).__name__}")


def call(args: argparse.Namespace, op: str, body: Any = None, *, wait: float | None = None) -> Any:
    with client_of(args) as client:
        return client.call(op, body, timeout=args.timeout or wait)


# -- daemon lifecycle ---------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.detach:
        return detach(args, settings)
    if args.watch:
        settings = dataclasses.replace(settings, watch=True)
    configure_logging(level=args.log_level or settings.log_level)
    from pnsd.daemon import Daemon  # noqa: PLC0415 - only the daemon needs its parts

    daemon = Daemon(settings, reload_settings=lambda: settings_of(args))
    asyncio.run(daemon.run())
    return 0


def detach(args: argparse.Namespace, settings: Settings) -> int:
    """Start the daemon in the background and return once it answers a ping."""
    if (pid := read_pid(settings.pidfile)) is not None:
        raise CliError(f"pnsd is already running with pid {pid}", kind=ErrorCode.CONFLICT)
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pnsd", "start", "--home", str(settings.home)]
    if args.config:
        argv += ["--config", args.config]
    log_fd = os.open(settings.home / "pnsd.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(log_fd, "ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
    deadline = time.monotonic() + (args.timeout or 30.0)
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise CliError(f"pnsd exited with {child.returncode}; see {settings.home}/pnsd.log")
        try:
            call(args, "ping", {})
        except PnsError:  # not listening yet, or no key file yet
            time.sleep(0.1)  # polling a process that is starting: nothing to wait on
            continue
        print(child.pid)
        return 0
    raise CliError("pnsd did not answer within the timeout", EXIT_UNAVAILABLE)


def cmd_stop(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    pid = read_pid(settings.pidfile)
    if pid is None:
        raise CliError("pnsd is not running", EXIT_UNAVAILABLE)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + (args.timeout or 30.0)
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return 0
        time.sleep(0.05)  # waiting for another process to exit: no event to wait on
    raise CliError(f"pnsd (pid {pid}) did not stop within the timeout", kind=ErrorCode.TIMEOUT)


def cmd_reload(args: argparse.Namespace) -> int:
    emit(call(args, "reload", {}, wait=SWAP_WAIT)["outcome"])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = call(args, "status", {})
    if args.json:
        emit(status)
        return 0
    print(f"pnsd {status['version']} (protocol {status['protocol']}), "
          f"up {status['uptime']:.0f} s")
    for name, info in sorted(status["pts"].items()):
        reason = f" ({info['reason']})" if info.get("reason") else ""
        print(f"  {name:<16} {info.get('mode', '-'):<8} {info['state']}{reason}")
    return 0


# -- PTS and runs -------------------------------------------------------------------------------


def cmd_pts_list(args: argparse.Namespace) -> int:
    emit(call(args, "pts.list", {})["pts"])
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
    return found, table


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
        emit(client.call("run", body, timeout=run_wait(client, args))["result"])
    return 0


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
    emit(call(args, "job.list", {k: v for k, v in body.items() if v is not None}))
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
        for event in client.stream("job.watch", {"job": args.id, "after": args.after},
                                   timeout=args.timeout or 60.0):
            print(json.dumps(event, ensure_ascii=False), flush=True)
    return 0


# -- the parser ---------------------------------------------------------------------------------


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
            parent: Any = sub) -> argparse.ArgumentParser:
        command: argparse.ArgumentParser = parent.add_parser(name, parents=[common],
                                                             help=help_text)
        command.set_defaults(handler=handler)
        return command

    start = add("start", cmd_start, "run the daemon (foreground unless --detach)")
    start.add_argument("--detach", action="store_true", help="run in the background")
    start.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    start.add_argument("--watch", action="store_true",
                       help="development: reload when the config or pts.d changes")
    add("stop", cmd_stop, "stop the running daemon (SIGTERM, then wait)")
    add("reload", cmd_reload, "re-read config and pts.d, apply the differences")
    add("status", cmd_status, "daemon and PTS state").add_argument("--json", action="store_true")

    pts = sub.add_parser("pts", help="list, inspect and deploy PTS").add_subparsers(
        required=True)
    add("list", cmd_pts_list, "every PTS", pts)
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
        command = add(name, handler, text)
        command.add_argument("name")
        command.add_argument("--input", help="the input as JSON")
        command.add_argument("--input-file", help="a file holding the input JSON ('-': stdin)")
        if name == "submit":
            command.add_argument("--key", help="idempotency key: a repeat returns the first job")

    jobs = sub.add_parser("jobs", help="list, inspect and manage jobs").add_subparsers(
        required=True)
    listing = add("list", cmd_jobs_list, "recent jobs, newest first", jobs)
    listing.add_argument("--pts")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--offset", type=int)
    for name, handler, text in (("show", cmd_jobs_show, "a job's status record"),
                                ("result", cmd_jobs_result, "a finished job's result"),
                                ("cancel", cmd_jobs_cancel, "dismiss a job"),
                                ("delete", cmd_jobs_delete,
                                 "delete a job (cancelled first if unfinished)")):
        add(name, handler, text, jobs).add_argument("id")
    watch = add("watch", cmd_jobs_watch, "follow a job's events", jobs)
    watch.add_argument("id")
    watch.add_argument("--after", type=int, default=0, help="last event number already seen")
    cleanup = add("cleanup", cmd_jobs_cleanup, "delete old finished jobs", jobs)
    cleanup.add_argument("--max-age", type=float)
    cleanup.add_argument("--max-bytes", type=int)
    return parser
