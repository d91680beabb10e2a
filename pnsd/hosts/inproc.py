"""The ``inproc`` hosting mode: a Python callable imported into the daemon.

Owns importing the spec's callables and calling them without blocking the event loop:
coroutine functions are awaited, ``inline`` callables (declared quick and non-blocking) are
called directly, everything else runs in a thread pool. Cancellation is cooperative (a thread
cannot be killed): on timeout or cancel the run's ``ctx.cancelled`` turns true and the caller
is answered at once.

The spec's ``pythonpath`` is honoured here too: its entries are put in front of ``sys.path``
(once, for the daemon's lifetime) before the callables are imported. A hot swap asks for a
fresh import with :func:`forget_modules`: the old generation keeps its function objects (and
through them its module), the new one imports the code as it is on disk now.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from pnsd.errors import Cancelled, InvalidSpec, PtsFailed, RunTimeout
from pnsd.hosts.base import HostState, no_mailbox
from pnsd.spec import HOOKS, PtsSpec
from protocols.context import EntryError, RunContext, accepts_ctx, load_entry

log = structlog.get_logger(__name__)
OWN_PACKAGES = frozenset({"pnsd", "pnsweb", "protocols"})


def load_callable(entry: str) -> Callable[..., Any]:
    """Import ``module:function``; raise InvalidSpec with the reason if it cannot be had."""
    try:
        return load_entry(entry)
    except EntryError as exc:
        raise InvalidSpec(str(exc)) from exc


def forget_modules(spec: PtsSpec) -> None:
    """Drop the spec's entry modules from ``sys.modules`` so that loading imports them afresh.

    The daemon's own packages are kept: their code cannot change without a restart, and
    re-importing them would split their module state.
    """
    importlib.invalidate_caches()
    for entry in (spec.entry, spec.init_entry, spec.config_entry, spec.clean_entry):
        module = (entry or "").partition(":")[0]
        if module and module.split(".")[0] not in OWN_PACKAGES:
            sys.modules.pop(module, None)


def extend_path(pythonpath: tuple[str, ...]) -> None:
    """Put the spec's ``pythonpath`` entries in front of ``sys.path`` (each once)."""
    for item in reversed(pythonpath):
        path = os.path.abspath(item)
        if path not in sys.path:
            sys.path.insert(0, path)


class _Call:
    """One imported callable and how to invoke it."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.wants_ctx = accepts_ctx(func)
        self.is_async = inspect.iscoroutinefunction(func)

    def args(self, data: Any, ctx: RunContext) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (data,), ({"ctx": ctx} if self.wants_ctx else {})


class InprocHost:
    """Runs one generation of an inproc PTS."""

    queues_runs = False

    def __init__(self, spec: PtsSpec, *, executor: ThreadPoolExecutor) -> None:
        self.spec = spec
        self._executor = executor
        self._calls: dict[str, _Call] = {}
        self._state = HostState()

    async def start(self) -> None:
        entries = {"run": self.spec.entry, "init": self.spec.init_entry,
                   "config": self.spec.config_entry, "clean": self.spec.clean_entry}
        extend_path(self.spec.pythonpath)
        try:
            for name, entry in entries.items():
                if entry:
                    func = await asyncio.to_thread(load_callable, entry)
                    self._calls[name] = _Call(func)
        except InvalidSpec as exc:
            self._state = HostState("unavailable", exc.message)
            raise
        self._state = HostState("ready")

    async def run(self, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        return await self._invoke("run", data, timeout=timeout, ctx=ctx)

    async def hook(self, name: str, *, timeout: float) -> Any:
        if name not in HOOKS:
            raise InvalidSpec(f"unknown hook {name!r}")
        if name not in self._calls:
            return None
        return await self._invoke(name, None, timeout=timeout, ctx=RunContext())

    async def _invoke(self, name: str, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        call = self._calls[name]
        args, kwargs = call.args(data, ctx)
        try:
            if call.is_async:
                async with asyncio.timeout(timeout):
                    return await call.func(*args, **kwargs)
            if self.spec.inline:
                return call.func(*args, **kwargs)
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, lambda: call.func(*args, **kwargs))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            ctx.cancel()
            raise RunTimeout(f"{name} exceeded {timeout:g} s") from None
        except asyncio.CancelledError:
            ctx.cancel()
            raise
        except Cancelled:
            raise
        except Exception as exc:
            raise self._failure(name, exc, ctx) from exc

    def _failure(self, name: str, exc: Exception, ctx: RunContext) -> Cancelled | PtsFailed:
        """The PTS's own exception as the error its run reports (without a traceback)."""
        if ctx.cancelled:
            return Cancelled("run was cancelled")
        log.info("pts_raised", pts=self.spec.name, op=name, error=repr(exc))
        return PtsFailed(f"{type(exc).__name__}: {exc}")

    async def stop(self, *, grace: float) -> None:
        self._calls.clear()
        self._state = HostState("stopped")

    def state(self) -> HostState:
        return self._state

    def exchange_dir(self) -> Path:
        raise no_mailbox(self.spec)

    def script(self, name: str) -> tuple[str, ...]:
        raise no_mailbox(self.spec)
