"""Logging for the entry points of pnsd and pnsweb: structlog set up once, stdlib loggers
routed into the same stream.

Owns the processor chains and the one root handler. It is a package of its own because both
services need it, pnsd and pnsweb must not import each other, and ``protocols`` must not depend
on structlog. It imports nothing of ours. Importing it does nothing: an entry point calls
:func:`configure_logging` once; library modules only call ``structlog.get_logger``.

structlog events are rendered by structlog and written straight to the stream: going through
the stdlib's handler and formatter cost more than twice as much per line (bench/FINDINGS.md,
fourth pass), and pnsweb writes a line per request at the default level. Records of stdlib
loggers (aiohttp, asyncio) go through the root handler, rendered by the same renderer, to the
same stream; each side writes a line in one call, so lines never interleave. The bound loggers
are structlog's level-filtering ones, so a line below the level costs next to nothing.
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

# one name, so configuring again replaces the handler instead of adding a second one
HANDLER_NAME = "pns-structlog"
# run on structlog events and on foreign (stdlib) records alike
SHARED_PROCESSORS: tuple[Processor, ...] = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
)


def configure_logging(
    *, level: str = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Log to ``stream`` (stderr when None) at ``level``; calling again replaces the setup.

    ``json=None`` picks JSON lines unless the stream is a terminal, which gets readable lines.
    """
    out = sys.stderr if stream is None else stream
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    tty = out.isatty()
    renderers = _renderers(json=json if json is not None else not tty, colors=tty)
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.processors.StackInfoRenderer(), *renderers],
        logger_factory=partial(NamedWriteLogger, out),
        # Filters by level before any processor runs: a disabled debug line costs a no-op call.
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Cached: an uncached module-level logger re-resolves the configuration on every call,
        # a measurable share of a fast run's cost. A cached logger keeps the stream it first
        # wrote to; only entry points configure (once), and tests that capture logs do not
        # call this.
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=list(SHARED_PROCESSORS),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
    ))
    _install(handler, numeric)


class NamedWriteLogger(structlog.WriteLogger):
    """structlog's line writer, carrying the name ``get_logger`` was given, for
    ``add_logger_name``."""

    def __init__(self, file: TextIO, name: str = "", *_args: Any) -> None:
        super().__init__(file)
        self.name = name


def _renderers(*, json: bool, colors: bool) -> list[Processor]:
    if json:
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    return [structlog.dev.ConsoleRenderer(colors=colors)]


def _install(handler: logging.Handler, level: int) -> None:
    """Put ``handler`` on the root logger in place of an earlier one, so setup is idempotent."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
