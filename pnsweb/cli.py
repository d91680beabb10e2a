"""The ``pnsweb`` command: serve the web API in front of a running pnsd.

Owns the reference server's flags (``--username/-u``, ``--password/-p``, ``--ip/-i``,
``--port/-o``, ``-v``) plus ``--config`` and ``--password-file`` (or ``$PNSWEB_PASSWORD``: a
password that ``ps`` cannot show), building the settings from them and the shared config
file, the daemon client's lifetime, and a graceful stop on SIGTERM/SIGINT. A password given on
the command line is hashed at start and never kept in clear. ``--hash-password`` prints a hash
for a ``[[pnsweb.users]]`` entry of the config file. ``--workers N`` (or ``workers`` in
``[pnsweb]``; default: one per core) serves the port from N processes (:mod:`pnsweb.prefork`);
1 serves from this process alone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
import uvloop
from aiohttp import web

from pnslog import configure_logging
from pnsweb.app import create_app
from pnsweb.nodes import daemon_client
from pnsweb.prefork import serve_workers, stop_signal
from pnsweb.settings import SettingsError, User, WebSettings, hash_password, load_settings
from protocols import memory
from protocols.version import __version__

EXIT_FAILURE = 1
PASSWORD_ENV = "PNSWEB_PASSWORD"    # the --username's password, kept out of the command line
EXIT_USAGE = 2
MAX_WORKERS = 256
log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pnsweb", description="The PNS web API (/v0.6 and /v1) in front of pnsd.")
    parser.add_argument("--version", action="version", version=f"pnsweb {__version__}")
    parser.add_argument("--config", type=Path, help="the pnsd TOML config file")
    parser.add_argument("--username", "-u", help="a user allowed to modify (an administrator)")
    parser.add_argument("--password", "-p",
                        help="that user's password (hashed at start; shows in ps: prefer "
                        f"--password-file or ${PASSWORD_ENV})")
    parser.add_argument("--password-file", type=Path,
                        help="read that user's password from this file (its first line)")
    parser.add_argument("--ip", "-i", dest="host", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", "-o", type=int, help="port to listen on (5000)")
    parser.add_argument("--workers", type=int,
                        help="processes serving the port (default: the number of cores; "
                        "1: this process alone)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="debug logging")
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password, print its hash for the config file, and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hash_password:
        print(hash_password(_read_password()))
        return 0
    try:
        settings = settings_of(args)
    except SettingsError as exc:
        print(f"pnsweb: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(level="debug" if settings.verbose else settings.log_level)
    try:
        # uvloop: more requests per second than asyncio's own loop (bench/FINDINGS.md, fourth
        # pass); pnsd keeps asyncio's, where uvloop measured no gain.
        workers = settings.workers or len(os.sched_getaffinity(0))
        if workers > 1:
            return uvloop.run(serve_workers(settings, workers, banner=_banner("{url}", settings)))
        uvloop.run(serve(settings))
    except OSError as exc:        # the address is taken, or not ours to bind
        print(f"pnsweb: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_FAILURE
    return 0


def settings_of(args: argparse.Namespace) -> WebSettings:
    """The config file's settings with the command line's on top."""
    settings = load_settings(config=args.config)
    port = settings.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise SettingsError(f"--port {port} is not a port number")
    workers = settings.workers if args.workers is None else args.workers
    if not 0 <= workers <= MAX_WORKERS:
        raise SettingsError(f"--workers {workers}: give 1-{MAX_WORKERS}, or 0 for one per core")
    users = settings.users
    password = _given_password(args)
    if args.username is not None or password is not None:
        if not args.username or not password:
            raise SettingsError("--username and --password (or --password-file, or "
                                f"${PASSWORD_ENV}) go together")
        admin = User(args.username, hash_password(password), admin=True)
        users = (admin, *(u for u in users if u.name != args.username))
    return dataclasses.replace(settings, host=args.host or settings.host, port=port,
                               workers=workers, users=users, verbose=args.verbose)


async def serve(settings: WebSettings) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking requests, finish, close the client."""
    client = await daemon_client(settings)
    runner = web.AppRunner(create_app(settings, client=client), access_log=None)
    # large blocks mapped on their own: each parse thread's arena kept a 16 MiB body's copies
    trimming = asyncio.create_task(memory.keep_trimmed(log.debug, large_blocks=True),
                                   name="trim-memory")
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        url = _url(runner, settings)
        print(_banner(url, settings), flush=True)
        log.info("pnsweb_started", url=url, endpoint=settings.endpoint,
                 users=len(settings.users))
        if not settings.users:
            log.warning("no_users", reason="every modifying call will be refused (401); "
                        "give --username/--password or [[pnsweb.users]]")
        await stop_signal()
        log.info("pnsweb_stopping")
    finally:
        trimming.cancel()
        await runner.cleanup()
        await client.close()


def _banner(url: str, settings: WebSettings) -> str:
    daemons = ", ".join(settings.daemons) or settings.endpoint
    return f"pnsweb serving {url}/v0.6/ (daemon {daemons}); Ctrl-C stops"



def _url(runner: web.AppRunner, settings: WebSettings) -> str:
    """The URL served, with the port actually bound (``--port 0`` picks a free one)."""
    port = settings.port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            port = address[1]
            break
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{port}"


def _given_password(args: argparse.Namespace) -> str | None:
    """--password, else the first line of --password-file, else $PNSWEB_PASSWORD when a
    --username is given (a password in the environment is for that user only)."""
    if args.password is not None:
        return str(args.password)
    if args.password_file is not None:
        try:
            lines = args.password_file.read_text().splitlines()
        except OSError as exc:
            raise SettingsError(f"cannot read --password-file {args.password_file}: "
                                f"{exc.strerror or exc}") from exc
        return lines[0] if lines else ""
    if args.username:
        return os.environ.get(PASSWORD_ENV)
    return None


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise SystemExit("pnsweb: an empty password is not allowed")
    return password
