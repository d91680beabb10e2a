"""Watch mode (development only): reload when the config file or ``pts.d`` changes.

Owns one loop that compares the modification times of the config file, the ``pts.d``
directory and every ``*.toml`` in it once per interval, and calls the reload it is given when
they change. A bounded poll rather than inotify on purpose: it is opt-in (``[pnsd] watch =
true`` or ``pnsd start --watch``), meant for a developer's machine, costs a few ``stat`` calls
a second and needs no platform-specific dependency. Production reloads with SIGHUP or
``pnsd reload``. It must not parse or apply anything itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from pnsd.errors import DaemonError

log = structlog.get_logger(__name__)

Snapshot = dict[str, int]


def snapshot(config: Path | None, pts_dir: Path) -> Snapshot:
    """``path -> mtime_ns`` of what a reload reads. Blocking: call it in a thread."""
    paths = [pts_dir, *sorted(pts_dir.glob("*.toml"))] if pts_dir.is_dir() else []
    if config is not None:
        paths.append(config)
    seen: Snapshot = {}
    for path in paths:
        try:
            seen[str(path)] = path.stat().st_mtime_ns
        except OSError:   # removed between the listing and the stat: the next round sees it
            continue
    return seen


async def watch(config: Path | None, pts_dir: Path, reload: Callable[[], Awaitable[Any]], *,
                interval: float = 1.0) -> None:
    """Poll every ``interval`` s until cancelled; reload after each change seen."""
    last = await asyncio.to_thread(snapshot, config, pts_dir)
    log.info("watch_started", config=str(config) if config else None, pts_dir=str(pts_dir))
    while True:
        await asyncio.sleep(interval)     # the poll interval (see the module docstring)
        now = await asyncio.to_thread(snapshot, config, pts_dir)
        if now == last:
            continue
        last = now
        log.info("watch_changed", files=len(now))
        try:
            await reload()
        except DaemonError as exc:        # a broken file: keep serving, try again on next edit
            log.error("watch_reload_failed", error=exc.message)
