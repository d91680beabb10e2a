"""A config file as checked TOML: reading it and taking its tables key by key.

Owns reading one TOML document (stdlib ``tomllib``: configuration is data, never executed
code), refusing unknown top-level tables, and :class:`Table`, typed access to one table whose
every failure is a :class:`~pnsd.errors.ConfigError` naming the file and the key. It must not
know what the keys mean or their defaults (:mod:`pnsd.config`'s) nor read PTS tables
(:mod:`pnsd.spec`'s).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from typing import Any

from pnsd.errors import ConfigError


class Table:
    """Typed access to one config table; every failure names the file and the key."""

    def __init__(self, data: object, origin: str, name: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table", file=origin, key=name)
        self.data: dict[str, Any] = data
        self.origin = origin
        self.name = name

    def fail(self, key: str, what: str) -> ConfigError:
        message = f"{self.origin}: [{self.name}] {key!r} {what}"
        return ConfigError(message, file=self.origin, key=key)

    def check_known(self, known: frozenset[str]) -> None:
        unknown = sorted(set(self.data) - known)
        if unknown:
            raise self.fail(unknown[0], f"is not a known key (known: {', '.join(sorted(known))})")

    def text(self, key: str, default: str, *, allow_empty: bool = False) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not (value or allow_empty):
            raise self.fail(key, "must be a non-empty string")
        return value

    def integer(self, key: str, default: int, *, low: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "must be an integer")
        if value < low:
            raise self.fail(key, f"must be at least {low}")
        return value

    def number(self, key: str, default: float, *, low: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "must be a number")
        if value < low:
            raise self.fail(key, f"must be at least {low}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        if (value := self.text(key, default).lower()) not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}")
        return value


def check_top_level(document: Mapping[str, Any], origin: str, *, allowed: set[str]) -> None:
    """Refuse a top-level key that is not one of the ``allowed`` tables."""
    unknown = sorted(set(document) - allowed)
    if unknown:
        tables = ", ".join(f"[{name}]" for name in sorted(allowed))
        raise ConfigError(
            f"{origin}: unknown top-level key {unknown[0]!r} (allowed: {tables})",
            file=origin, key=unknown[0],
        )


def read_toml(source: Traversable, origin: str) -> dict[str, Any]:
    """The document of one TOML file (or packaged resource); any failure a ConfigError."""
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read: {exc.strerror or exc}", file=origin) from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{origin}: not UTF-8 text", file=origin) from exc
    except tomllib.TOMLDecodeError as exc:
        # the message carries "(at line N, column M)"
        raise ConfigError(f"{origin}: bad TOML: {exc}", file=origin) from exc
