"""Deployed PTS specs on disk: ``$PNS_HOME/pts.d/<name>.toml``, one ``[pts.NAME]`` table each.

Owns writing a deployed spec (atomically: a temporary file, fsync, rename), removing it on
undeploy, finding which file defines a PTS, and the small TOML writer this needs. Reading the
files back is :mod:`pnsd.config`'s job (at start and on reload), so what is written here is what
a restarted daemon serves. Blocking file I/O: callers run these in a thread.

Why a TOML writer of our own rather than ``tomli-w``: the stdlib only reads TOML, and a spec is
a flat table of strings, numbers, booleans, lists and small inline tables (``env``, ``limits``,
``selftest``); writing exactly that is ~30 lines, checked by a round-trip test through
``tomllib``, and saves the daemon a dependency. TOML has no null: a ``None`` value is refused.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pnsd.errors import Conflict, InvalidSpec

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class SpecFiles:
    """The ``pts.d`` directory of one home, plus the config file that may also define PTS."""

    def __init__(self, pts_dir: Path, *, config: Path | None) -> None:
        self.pts_dir = pts_dir
        self.config = config

    def path(self, name: str) -> Path:
        return self.pts_dir / f"{name}.toml"

    def owner(self, name: str) -> Path | None:
        """The user file that defines PTS ``name`` (config file or any pts.d file), if any."""
        candidates = [self.path(name)]
        if self.pts_dir.is_dir():
            candidates += sorted(p for p in self.pts_dir.glob("*.toml") if p != self.path(name))
        if self.config is not None:
            candidates.append(self.config)
        for path in candidates:
            if path.is_file() and name in _pts_tables(path):
                return path
        return None

    def check_writable(self, name: str) -> None:
        """Conflict unless ``pts.d/<name>.toml`` may hold ``name`` (no other file defines it)."""
        owner = self.owner(name)
        if owner is not None and owner != self.path(name):
            raise Conflict(f"PTS {name} is defined in {owner}: change it there and reload",
                           pts=name, file=str(owner))

    def check_removable(self, name: str) -> None:
        """Conflict unless ``name`` is defined by ``pts.d/<name>.toml`` (else it would return)."""
        owner = self.owner(name)
        if owner != self.path(name):
            where = str(owner) if owner else "the packaged demo"
            raise Conflict(f"PTS {name} is defined in {where}, not deployed in pts.d: remove it "
                           "there and reload", pts=name)

    @staticmethod
    def render(name: str, table: Mapping[str, Any]) -> str:
        """The file's text: ``[pts.NAME]`` and ``table``; InvalidSpec for what TOML can't hold."""
        return f"[pts.{key(name)}]\n" + "".join(
            f"{key(k)} = {value(v, k)}\n" for k, v in table.items() if k != "name")

    def write(self, name: str, table: Mapping[str, Any]) -> Path:
        return self.write_text(name, self.render(name, table))

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` as ``pts.d/<name>.toml``, atomically; return the path."""
        path = self.path(name)
        self.pts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _sync_dir(self.pts_dir)
        return path

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)
        _sync_dir(self.pts_dir)


def key(text: str) -> str:
    return text if BARE_KEY.match(text) else _string(text)


def value(item: Any, where: str = "value") -> str:
    """``item`` as a TOML value (inline tables and arrays for nested data)."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | float):
        return _number(item)
    if isinstance(item, str):
        return _string(item)
    if isinstance(item, list | tuple):
        return "[" + ", ".join(value(v, where) for v in item) + "]"
    if isinstance(item, Mapping):
        return "{" + ", ".join(f"{key(str(k))} = {value(v, f'{where}.{k}')}"
                               for k, v in item.items()) + "}"
    what = "null, which a spec file cannot hold: leave it out" if item is None else (
        f"a {type(item).__name__}, which a spec cannot hold")
    raise InvalidSpec(f"{where!r} is {what}")


def _number(item: float) -> str:
    if isinstance(item, int) or math.isfinite(item):
        return repr(item)
    return "nan" if math.isnan(item) else "inf" if item > 0 else "-inf"


def _string(text: str) -> str:
    # JSON's escapes are TOML's, but TOML also forbids a raw DEL
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _pts_tables(path: Path) -> set[str]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()   # unreadable files are reported by the config loader on reload
    tables = document.get("pts")
    return set(tables) if isinstance(tables, dict) else set()


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
