"""Daemon settings: where pnsd lives, what it listens on and which PTS it serves.

Owns finding the TOML config and what its ``[pnsd]`` keys mean (types, defaults, paths), the
``[pts.NAME]`` tables of the config file, of ``$PNS_HOME/pts.d/*.toml`` and
of the packaged demo, creating the home directory, and the message-signing key file. It must not
open sockets, start processes or import PTS code. Reading a TOML file and checking its
tables key by key is :mod:`pnsd.tomltable`'s.

Config file lookup: ``--config``, ``$PNS_CONFIG``, ``~/.config/pns/pnsd.toml``,
``/etc/pns/pnsd.toml``, else built-in defaults. An explicit file that is missing is an error; the
two default locations are skipped when absent. The file holds one ``[pnsd]`` table whose keys are
the fields of :class:`Settings` (all optional, see their comments for defaults) and any number
of ``[pts.NAME]`` tables (see :mod:`pnsd.spec`); ``pts.d/*.toml`` files hold only the latter::

    [pnsd]
    home = "/srv/pns"                   # --home and $PNS_HOME win over this
    endpoint = "ipc://run/pnsd.sock"    # the default; a relative ipc path is under the home
    tcp_endpoint = "tcp://127.0.0.1:7755"   # opt-in; absent or "" means no TCP (CURVE)
    worker_endpoint = "tcp://0.0.0.0:7756"  # opt-in: remote workers join here (CURVE)
    retention_age = 0                   # 0 switches a retention bound off (also retention_bytes)
    store = "postgresql://pns@db/pns"   # optional: a job store several nodes share
    node = "node-a"                     # this node's name in it (default: the host name)

Relative paths in the file (and a relative ipc:// path) are relative to the home; a relative
``home`` in the file is relative to the file's own directory; ``~`` expands to ``$HOME``. A PTS
name defined in two user files is an error; a user PTS replaces a demo PTS of the same name.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from pnsd.errors import ConfigError, InvalidSpec
from pnsd.spec import PtsSpec, parse_spec
from pnsd.tomltable import Table, check_top_level, read_toml

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_CONFIG_PATHS = ("~/.config/pns/pnsd.toml", "/etc/pns/pnsd.toml")
# [pnsd] keys naming a path, with their default relative to the home
PATH_DEFAULTS = {"key_file": "secret.key", "pidfile": "run/pnsd.pid", "db_path": "jobs.db",
                 "files_dir": "jobs", "work_dir": "work", "curve_dir": "curve"}
PNSD_KEYS = frozenset({
    "home", "endpoint", "tcp_endpoint", "max_message_bytes", "max_clock_skew", "inline_limit",
    "retention_age", "retention_bytes", "log_level", "demo", "record_sync_runs",
    "swap_timeout", "drain_timeout", "watch", "max_db_bytes", "worker_endpoint", "tcp_insecure",
    "store", "node", "lease_ttl",
    *PATH_DEFAULTS,
})

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Settings:
    """Everything pnsd needs to start; built by :func:`load_settings`.

    It holds the key file's path, never the key itself, so no view of it can leak the secret.
    """

    home: Path                      # default ~/pns
    endpoint: str                   # default ipc://HOME/run/pnsd.sock
    tcp_endpoint: str | None        # opt-in, e.g. "tcp://127.0.0.1:7755"
    key_file: Path                  # default HOME/secret.key
    max_message_bytes: int          # default 64 MiB
    max_clock_skew: float           # seconds, default 60: older or newer messages are refused
    pidfile: Path                   # default HOME/run/pnsd.pid
    db_path: Path                   # default HOME/jobs.db
    files_dir: Path                 # default HOME/jobs: job blobs above inline_limit
    work_dir: Path                  # default HOME/work: process-mode job dirs
    inline_limit: int               # bytes, default 64 KiB
    retention_age: float | None     # seconds, default 7 days; None: no age bound
    retention_bytes: int | None     # default 1 GiB; None: no size bound
    log_level: str                  # debug | info (default) | warning | error | critical
    demo: bool                      # serve the packaged demo PTS, default true
    record_sync_runs: bool          # keep a job record of synchronous runs, default true
    pts: Mapping[str, PtsSpec]      # demo, config file and pts.d PTS by name
    source: Path | None             # the config file read, if any
    swap_timeout: float = 60.0      # seconds a new generation has to start, init and self-test
    drain_timeout: float = 30.0     # seconds a replaced generation's runs get to finish
    watch: bool = False             # development: reload when the config or pts.d changes
    max_db_bytes: int | None = None # a hard cap on jobs.db (writes past it fail as disk full)
    curve_dir: Path | None = None   # default HOME/curve: the node's CURVE keys, authorised keys
    worker_endpoint: str | None = None  # opt-in, e.g. "tcp://0.0.0.0:7756": remote workers
    tcp_insecure: bool = False      # tests and benches only: TCP without CURVE, loopback only
    store: str | None = None        # "postgresql://...": a job store several nodes share;
                                    #   None (the default): SQLite at db_path
    node: str = ""                  # this node's name in a shared store, default the host name
    lease_ttl: float = 10.0         # seconds without a lease renewal before a node is dead

    @property
    def pts_dir(self) -> Path:
        return self.home / "pts.d"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def public(self) -> dict[str, Any]:
        """Plain data for status replies and ``pnsd status``; secrets are never included."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "pts":
                value = {name: spec.public() for name, spec in sorted(value.items())}
            elif isinstance(value, Path):
                value = str(value)
            elif item.name == "store" and value:
                value = redacted_url(value)
            out[item.name] = value
        return out


def load_settings(*, config: Path | None = None, home: Path | None = None,
                  env: Mapping[str, str] = os.environ, demo_specs: Path | None = None) -> Settings:
    """Find and read the config, apply defaults and overrides, and load every PTS table.

    ``config`` is the ``--config`` argument and ``home`` the ``--home`` one; ``demo_specs``
    replaces the packaged demo PTS file (for tests). Raises :class:`ConfigError`.
    """
    source = find_config(config, env)
    origin = str(source) if source else "<built-in defaults>"
    document = read_toml(source, origin) if source else {}
    # [pnsweb] belongs to the web front-end, which shares this file; pnsd ignores it.
    check_top_level(document, origin, allowed={"pnsd", "pts", "pnsweb"})
    table = Table(document.get("pnsd", {}), origin, "pnsd")
    table.check_known(PNSD_KEYS)
    home_dir = _resolve_home(home, env, table, source)
    values = _pnsd_values(table, home_dir, env)
    demo_file: Traversable | None = None
    if values["demo"]:
        demo_file = demo_specs or importlib.resources.files("pnsd") / "demo" / "pts.toml"
    user_docs = [(origin, document), *_pts_dir_documents(home_dir / "pts.d")]
    pts = _collect_pts(demo_file, user_docs)
    return Settings(home=home_dir, pts=MappingProxyType(pts), source=source, **values)


def config_search_path(env: Mapping[str, str]) -> list[Path]:
    """The config files looked for, in order, when no ``--config`` is given."""
    explicit = [_expand(env["PNS_CONFIG"], env)] if env.get("PNS_CONFIG") else []
    return explicit + [_expand(path, env) for path in DEFAULT_CONFIG_PATHS]


def find_config(config: Path | None, env: Mapping[str, str]) -> Path | None:
    """The config file to use: an explicit one must exist, default locations may be absent."""
    if config is None and env.get("PNS_CONFIG"):
        config = Path(env["PNS_CONFIG"])
    if config is not None:
        path = _expand(config, env).absolute()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", file=str(path))
        return path
    found = [path for path in config_search_path(env) if path.is_file()]
    if len(found) > 1:     # e.g. a service user's ~/.config hiding /etc/pns: say so
        _log.warning("config_shadowed", used=str(found[0]), ignored=[str(p) for p in found[1:]],
                     hint="give --config to choose")
    return found[0] if found else None


def ensure_home(settings: Settings) -> None:
    """Create the home and its directories; the home and ``run/`` (the ipc sockets) are made
    private: a home others could read (the job database, the key) is tightened to 0700."""
    try:
        _make_private_dir(settings.home)
        _make_private_dir(settings.run_dir)
        ipc_path = ipc_socket_path(settings.endpoint)
        for path in (settings.pts_dir, settings.work_dir, settings.files_dir,
                     settings.pidfile.parent, settings.db_path.parent, settings.key_file.parent,
                     *([ipc_path.parent] if ipc_path else [])):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot prepare {exc.filename}: {exc.strerror}") from exc


def ipc_socket_path(endpoint: str) -> Path | None:
    """The file behind an ``ipc://`` endpoint, or None for other transports."""
    return Path(endpoint.removeprefix("ipc://")) if endpoint.startswith("ipc://") else None


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (mode := path.stat().st_mode & 0o777) & 0o077:
        path.chmod(0o700)
        _log.warning("dir_made_private", path=str(path), was=f"{mode:o}", now="700")


def _pnsd_values(table: Table, home: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The ``[pnsd]`` keys other than ``home``, validated, with paths made absolute."""
    values: dict[str, Any] = {
        key: home / _expand(table.text(key, default), env) for key, default in PATH_DEFAULTS.items()
    }
    retention_age = table.number("retention_age", 7 * 24 * 3600.0, low=0)
    retention_bytes = table.integer("retention_bytes", GIB, low=0)
    values.update(
        endpoint=_ipc_endpoint(table, home, env),
        tcp_endpoint=_tcp_endpoint(table, "tcp_endpoint"),
        worker_endpoint=_tcp_endpoint(table, "worker_endpoint"),
        tcp_insecure=_insecure(table),
        max_message_bytes=table.integer("max_message_bytes", 64 * MIB, low=KIB),
        max_clock_skew=table.number("max_clock_skew", 60.0, low=0.001),
        inline_limit=table.integer("inline_limit", 64 * KIB, low=0),
        retention_age=retention_age or None,
        retention_bytes=retention_bytes or None,
        log_level=table.choice("log_level", "info", LOG_LEVELS),
        demo=table.boolean("demo", True),
        record_sync_runs=table.boolean("record_sync_runs", True),
        swap_timeout=table.number("swap_timeout", 60.0, low=0.001),
        drain_timeout=table.number("drain_timeout", 30.0, low=0),
        watch=table.boolean("watch", False),
        max_db_bytes=table.integer("max_db_bytes", 0, low=0) or None,
        store=_store(table),
        node=table.text("node", socket.gethostname()),
        lease_ttl=table.number("lease_ttl", 10.0, low=0.5),
    )
    return values


def _store(table: Table) -> str | None:
    value = table.text("store", "", allow_empty=True)
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise table.fail("store", "must be a postgresql:// URL (leave it out for SQLite)")
    return value or None


def redacted_url(url: str) -> str:
    """``url`` without its password, for logs, status and replies."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _ipc_endpoint(table: Table, home: Path, env: Mapping[str, str]) -> str:
    value = table.text("endpoint", "ipc://run/pnsd.sock")
    if not value.startswith("ipc://") or value == "ipc://":
        raise table.fail("endpoint", "must be an ipc:// address (TCP goes in tcp_endpoint)")
    return f"ipc://{home / _expand(value.removeprefix('ipc://'), env)}"


def _tcp_endpoint(table: Table, key: str) -> str | None:
    value = table.text(key, "", allow_empty=True)
    if value and not value.startswith("tcp://"):
        raise table.fail(key, "must be a tcp://host:port address")
    return value or None


def _insecure(table: Table) -> bool:
    """``tcp_insecure`` (TCP without CURVE) is refused unless every TCP endpoint is loopback."""
    if not table.boolean("tcp_insecure", False):
        return False
    for key in ("tcp_endpoint", "worker_endpoint"):
        value = table.text(key, "", allow_empty=True)
        if value and not is_loopback(value):
            raise table.fail("tcp_insecure", f"is allowed only on loopback ({key} is {value})")
    return True


def is_loopback(endpoint: str) -> bool:
    """Whether a tcp:// endpoint's host is a loopback address."""
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    return host in {"localhost", "::1"} or host.startswith("127.")


def _resolve_home(home: Path | None, env: Mapping[str, str], table: Table,
                  source: Path | None) -> Path:
    """``--home`` > ``$PNS_HOME`` > ``home`` in the file (relative to the file) > ``~/pns``."""
    if home is not None:
        chosen = _expand(home, env)
    elif env.get("PNS_HOME"):
        chosen = _expand(env["PNS_HOME"], env)
    elif "home" in table.data:
        chosen = _expand(table.text("home", ""), env)
        if source is not None:
            chosen = source.parent / chosen
    else:
        chosen = _expand("~/pns", env)
    return chosen.absolute()


def _expand(value: str | Path, env: Mapping[str, str]) -> Path:
    """``~`` to ``$HOME`` of ``env`` (so tests never touch the real home); nothing else."""
    text = str(value)
    if text == "~" or text.startswith("~/"):
        text = (env.get("HOME") or str(Path.home())) + text[1:]
    return Path(text)


def _pts_dir_documents(pts_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    if not pts_dir.is_dir():
        return []
    documents = []
    for path in sorted(pts_dir.glob("*.toml")):
        if path.is_file():
            document = read_toml(path, str(path))
            check_top_level(document, str(path), allowed={"pts"})
            documents.append((str(path), document))
    return documents


def _collect_pts(demo_file: Traversable | None,
                 user_docs: list[tuple[str, dict[str, Any]]]) -> dict[str, PtsSpec]:
    """Demo PTS first, then user files; a user name replaces a demo one, never another user's."""
    specs: dict[str, PtsSpec] = {}
    if demo_file is not None:
        origin = f"demo PTS file {demo_file}"
        document = read_toml(demo_file, origin)
        check_top_level(document, origin, allowed={"pts"})
        specs.update(_pts_tables(document, origin))
    owners: dict[str, str] = {}
    for origin, document in user_docs:
        for name, spec in _pts_tables(document, origin).items():
            if name in owners:
                raise ConfigError(
                    f"PTS {name!r} is defined twice: in {owners[name]} and in {origin}",
                    files=[owners[name], origin], key=f"pts.{name}",
                )
            owners[name] = origin
            specs[name] = spec
    return specs


def _pts_tables(document: Mapping[str, Any], origin: str) -> dict[str, PtsSpec]:
    tables = Table(document.get("pts", {}), origin, "pts").data
    specs = {}
    for name, table in tables.items():
        try:
            specs[name] = parse_spec(name, table)
        except InvalidSpec as exc:
            raise ConfigError(f"{origin}: [pts.{name}] {exc.message}",
                              file=origin, key=f"pts.{name}") from exc
    return specs
