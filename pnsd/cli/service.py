"""The daemon's lifecycle from a shell: ``pnsd start`` (foreground or detached), ``stop``,
``reload`` and ``status``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time

from pnsd import terminal
from pnsd.cli.common import EXIT_UNAVAILABLE, SWAP_WAIT, CliError, call, emit, settings_of
from pnsd.config import Settings
from pnsd.pidfile import process_alive, read_pid
from pnslog import configure_logging
from protocols.errors import ErrorCode, PnsError


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
    if terminal.interactive(sys.stdout):
        terminal.status_table(status)
        return 0
    print(f"pnsd {status['version']} (protocol {status['protocol']}), "
          f"up {status['uptime']:.0f} s")
    for name, info in sorted(status["pts"].items()):
        reason = f" ({info['reason']})" if info.get("reason") else ""
        print(f"  {name:<16} {info.get('mode', '-'):<8} {info['state']}{reason}")
    return 0
