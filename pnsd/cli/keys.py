"""``pnsd keys``: the node's CURVE key pair and the keys of the clients and remote workers it
lets in over TCP (see :mod:`pnsd.curve`). These commands work on the home's files; a running
daemon sees a new key at the next connection that presents it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pnsd.cli.common import CliError, emit, settings_of
from pnsd.config import Settings
from pnsd.curve import ensure_server_pair, list_keys, new_key_pair
from pnsd.errors import ConfigError


def _curve_dir(settings: Settings) -> Path:
    return settings.curve_dir or settings.home / "curve"


def cmd_keys_new(args: argparse.Namespace) -> int:
    """Make NAME's key pair in --out and authorise it; print where each file is."""
    directory = _curve_dir(settings_of(args))
    try:
        public, secret = new_key_pair(directory, args.name, role=args.role,
                                      out=Path(args.out or ".").absolute())
    except ConfigError as exc:
        raise CliError(exc.message, kind="conflict") from exc
    emit({"name": args.name, "role": args.role, "public": str(public), "secret": str(secret),
          "server_key": str(directory / "server.key"),
          "authorised": str(directory / args.role / f"{args.name}.key")})
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    """The node's public key file and the authorised keys by role."""
    directory = _curve_dir(settings_of(args))
    ensure_server_pair(directory)
    emit({"server_key": str(directory / "server.key"), **list_keys(directory)})
    return 0


def add_keys_commands(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                      common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="CURVE keys of TCP clients and remote workers")
    commands = keys.add_subparsers(required=True)
    new = commands.add_parser("new", parents=[common], help="make and authorise a key pair")
    new.set_defaults(handler=cmd_keys_new, json=False)
    new.add_argument("name", help="the key's name (a file name: NAME.key, NAME.key_secret)")
    new.add_argument("--role", choices=["clients", "workers"], default="workers",
                     help="what the key may connect as (default: workers)")
    new.add_argument("--out", help="where the pair is written (default: the current directory)")
    listing = commands.add_parser("list", parents=[common],
                                  help="the node's public key and the authorised keys")
    listing.set_defaults(handler=cmd_keys_list, json=False)
