"""What every ``pnsd`` subcommand shares: exit statuses, :class:`CliError`, the settings and
client of a command line, and printing replies (JSON on stdout).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pnsd.config import Settings, load_settings
from pnsd.keyfile import load_or_create_key
from protocols.client import Client
from protocols.errors import ClientClosed, ClientTimeout, CodedError, ErrorCode

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
RUN_MARGIN = 10.0        # seconds a run's reply may take beyond the run's own timeout
SWAP_WAIT = 300.0        # a deploy or replace waits for start, init and self-test
EXIT_OF = {ErrorCode.UNAVAILABLE: EXIT_UNAVAILABLE}
TABLE_OFF = "JSON, even at a terminal (where a table is shown)"
PROGRESS_OFF = "no live progress at a terminal: wait, then print the result"


class CliError(CodedError):
    """An error found here: shown with a protocol error code, it ends the command with
    ``status`` (2 for bad usage, 3 for a daemon that is not there, 1 otherwise)."""

    def __init__(self, message: str, status: int = EXIT_FAILURE, *, kind: str = "") -> None:
        super().__init__(message, code=kind or {
            EXIT_USAGE: ErrorCode.BAD_REQUEST, EXIT_UNAVAILABLE: ErrorCode.UNAVAILABLE,
        }.get(status, "failed"))
        self.status = status


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
