"""The PTS spec: what a processing task is and how it is hosted.

Owns parsing and validating one PTS table (from TOML or from the JSON of a deploy call) into an
immutable :class:`PtsSpec`. It must not start, import or run anything: a spec is only data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pnsd.errors import InvalidSpec
from pnsd.interface import Interface, is_safe_name, parse_interface

__all__ = ["Interface", "Limits", "Mode", "PtsSpec", "is_safe_name", "parse_spec"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENTRY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 24 * 3600.0


class Mode(StrEnum):
    INPROC = "inproc"
    WORKER = "worker"
    PROCESS = "process"


@dataclass(frozen=True)
class Limits:
    """Optional rlimits applied to worker and process-mode children."""

    memory_mb: int | None = None
    cpu_seconds: int | None = None
    open_files: int | None = None


@dataclass(frozen=True)
class Container:
    """A worker that runs in a container: the runtime's command (``["podman"]``, ``["docker"]``,
    with global options), the image, and options added to its ``run``."""

    runtime: tuple[str, ...]
    image: str
    options: tuple[str, ...] = ()

    def table(self) -> dict[str, Any]:
        return {"runtime": list(self.runtime), "image": self.image, "options": list(self.options)}


@dataclass(frozen=True)
class PtsSpec:
    name: str
    mode: Mode
    version: str = ""
    description: str = ""
    # inproc and worker: callables as "module:function"
    entry: str | None = None
    init_entry: str | None = None
    config_entry: str | None = None
    clean_entry: str | None = None
    # worker
    workers: int = 1
    remote_workers: int = 0      # how many remote workers may join (over worker_endpoint)
    prefetch: int = 0                # tasks a worker may hold beyond its current one
    python: str | None = None
    command: tuple[str, ...] = ()
    transport: str = "zmq"          # how workers are reached: their socket, or stdin/stdout
    container: Container | None = None
    # process: argv lists, no shell
    dir: str | None = None
    init: tuple[str, ...] = ()
    config: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    clean: tuple[str, ...] = ()
    # common: what the PTS takes and gives (pnsd.interface)
    interface: Interface = field(default_factory=Interface)
    timeout: float = DEFAULT_TIMEOUT
    queue: int = 64
    concurrency: int | None = None
    inline: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    pythonpath: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    selftest: Any = None
    idempotent: bool = False

    @property
    def slots(self) -> int:
        """How many runs may execute at once."""
        if self.concurrency is not None:
            return self.concurrency
        return self.workers + self.remote_workers if self.mode is Mode.WORKER else 1

    def public(self) -> dict[str, Any]:
        """The spec as plain data, for describe replies (no secrets live in a spec)."""
        out: dict[str, Any] = {"name": self.name, "mode": self.mode.value}
        callables = self.mode is not Mode.PROCESS
        for key in _KEYS:
            attr = f"{key}_entry" if callables and key in HOOKS else key
            value = getattr(self, attr, None)
            if key in _INTERFACE:
                value = self._interface_key(key)
            elif isinstance(value, Container):
                value = value.table()
            elif isinstance(value, Limits):
                value = {k: v for k, v in vars(value).items() if v is not None}
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[key] = value
        return out

    def _interface_key(self, key: str) -> Any:
        """An interface key as the spec table gives it (parsing it again gives it back)."""
        interface = self.interface
        if key in ("title", "keywords"):
            value = getattr(interface, key)
            return list(value) if isinstance(value, tuple) else value
        ports = interface.inputs if key == "inputs" else interface.outputs
        if ports is None:
            return None
        return {port.name: port.table(output=key == "outputs") for port in ports}


# in inproc and worker mode these keys name callables (attributes *_entry), in process mode argv
HOOKS = ("init", "config", "clean")    # what a PTS may have besides run (one place)
TRANSPORTS = ("zmq", "stdio")           # how a worker-mode PTS reaches its workers
_INTERFACE = ("title", "keywords", "inputs", "outputs")
_KEYS = (
    "version", "title", "description", "keywords", "entry", "workers", "remote_workers",
    "prefetch", "python", "command",
    "dir", "init", "config", "run", "clean", "inputs", "outputs", "timeout", "queue",
    "concurrency", "inline", "env", "pythonpath", "limits", "selftest", "idempotent",
    "transport", "container",
)


def parse_spec(name: str, table: Mapping[str, Any]) -> PtsSpec:
    """Validate one PTS table; raise :class:`InvalidSpec` naming the offending key."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidSpec(f"bad PTS name {name!r}: letters, digits, '_', '.', '-' (max 64)")
    if not isinstance(table, Mapping):
        raise InvalidSpec(f"PTS {name}: spec must be a table")
    unknown = set(table) - set(_KEYS) - {"mode", "name"}
    if unknown:
        raise InvalidSpec(f"PTS {name}: unknown keys {sorted(unknown)}")
    raw_mode = table.get("mode")
    try:
        mode = Mode(raw_mode if isinstance(raw_mode, str) else repr(raw_mode))
    except ValueError:
        raise InvalidSpec(
            f"PTS {name}: mode must be one of inproc, worker, process (got {raw_mode!r})"
        ) from None
    reader = _Reader(name, table)
    common: dict[str, Any] = {
        "version": reader.text("version", ""),
        "description": reader.text("description", ""),
        "timeout": reader.number("timeout", DEFAULT_TIMEOUT, low=0.001, high=MAX_TIMEOUT),
        "queue": reader.integer("queue", 64, low=0, high=1_000_000),
        "concurrency": reader.optional_integer("concurrency", low=1, high=10_000),
        "inline": reader.boolean("inline", False),
        "env": reader.str_map("env"),
        "pythonpath": reader.argv("pythonpath", allow_empty=True),
        "limits": reader.limits(),
        "selftest": table.get("selftest"),
        "idempotent": reader.boolean("idempotent", False),
        "interface": parse_interface(name, table, process=mode is Mode.PROCESS),
    }
    if mode is not Mode.WORKER:
        reader.transport(mode)          # refuses a transport where there are no workers
    if mode is Mode.PROCESS:
        reader.container(mode)          # refuses a container where there are no workers
        return PtsSpec(
            name=name, mode=mode, dir=reader.optional_text("dir"),
            init=reader.argv("init", allow_empty=True),
            config=reader.argv("config", allow_empty=True),
            run=reader.argv("run", allow_empty=False),
            clean=reader.argv("clean", allow_empty=True), **common,
        )
    entries = {key: reader.entry(key, required=key == "entry")
               for key in ("entry", "init", "config", "clean")}
    workers, remote_workers = _worker_counts(reader, mode)
    return PtsSpec(
        name=name, mode=mode, entry=entries["entry"], init_entry=entries["init"],
        config_entry=entries["config"], clean_entry=entries["clean"],
        workers=workers, remote_workers=remote_workers,
        prefetch=reader.integer("prefetch", 0, low=0, high=64) if mode is Mode.WORKER else 0,
        python=reader.optional_text("python"),
        command=reader.argv("command", allow_empty=True), transport=reader.transport(mode),
        container=reader.container(mode), **common,
    )


def _worker_counts(reader: _Reader, mode: Mode) -> tuple[int, int]:
    """``workers`` (local, 0-256) and ``remote_workers`` (0-256); at least one of them."""
    if mode is not Mode.WORKER:
        return 1, 0
    remote = reader.integer("remote_workers", 0, low=0, high=256)
    return reader.integer("workers", 1, low=0 if remote else 1, high=256), remote


class _Reader:
    """Typed access to one spec table; every failure names the PTS and the key."""

    def __init__(self, name: str, table: Mapping[str, Any]) -> None:
        self.name = name
        self.table = table

    def fail(self, key: str, what: str) -> InvalidSpec:
        return InvalidSpec(f"PTS {self.name}: {key!r} {what}")

    def text(self, key: str, default: str) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, "must be a string")
        return value

    def transport(self, mode: Mode) -> str:
        value = self.text("transport", "zmq")
        if value not in TRANSPORTS:
            raise self.fail("transport", f"must be one of {', '.join(TRANSPORTS)}")
        if value != "zmq" and mode is not Mode.WORKER:
            raise self.fail("transport", "applies to worker mode only")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key, "") or None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "must be a number")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}")
        return float(value)

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "must be an integer")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}")
        return value

    def optional_integer(self, key: str, *, low: int, high: int) -> int | None:
        if self.table.get(key) is None:
            return None
        return self.integer(key, 0, low=low, high=high)

    def argv(self, key: str, *, allow_empty: bool) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        if not value and not allow_empty:
            raise self.fail(key, "is required")
        return tuple(value)

    def entry(self, key: str, *, required: bool) -> str | None:
        value = self.table.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is required (module:function)")
            return None
        if not isinstance(value, str) or not ENTRY_RE.match(value):
            raise self.fail(key, "must name a callable as module:function")
        return value

    def str_map(self, key: str) -> Mapping[str, str]:
        value = self.table.get(key, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.fail(key, "must be a table of strings")
        return dict(value)

    def container(self, mode: Mode) -> Container | None:
        value = self.table.get("container")
        if value is None:
            return None
        if mode is not Mode.WORKER:
            raise self.fail("container", "applies to worker mode only")
        if not isinstance(value, Mapping) or set(value) - {"runtime", "image", "options"}:
            raise self.fail("container", "must be a table of runtime, image and options")
        inner = _Reader(self.name, value)
        image = inner.text("image", "")
        if not image or image.startswith("-"):
            raise self.fail("container", "needs an image (a name, not an option)")
        runtime = inner.argv("runtime", allow_empty=True) or ("podman",)
        return Container(runtime, image, inner.argv("options", allow_empty=True))

    def limits(self) -> Limits:
        value = self.table.get("limits", {})
        if not isinstance(value, Mapping):
            raise self.fail("limits", "must be a table")
        unknown = set(value) - {"memory_mb", "cpu_seconds", "open_files"}
        if unknown:
            raise self.fail("limits", f"has unknown keys {sorted(unknown)}")
        sub = _Reader(self.name, value)
        return Limits(**{k: sub.optional_integer(k, low=1, high=2**40) for k in value})
