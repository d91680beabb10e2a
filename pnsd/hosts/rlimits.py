"""Resource limits (rlimits) for the children the hosts start, and how a child's end is told.

Owns turning a spec's :class:`~pnsd.spec.Limits` into ``setrlimit`` calls that run in the
child between fork and exec (with, on request, the parent-death signal), and describing how a
child ended in words that say when a limit or the kernel's OOM killer was the cause. It must
not start processes itself or touch the daemon's own limits.

Why a ``preexec_fn`` is acceptable here: CPython warns that code run between fork and exec in a
multi-threaded parent may deadlock on a lock another thread held at fork time (malloc, logging,
the import lock). The function built here is a closure over pre-computed integers; it only
calls ``resource.setrlimit`` and, for workers, libc's ``prctl`` through a ctypes function
looked up in the parent (already imported, no logging, no imports, nothing that takes a
Python-level lock), and glibc's malloc is fork-safe. The alternatives are worse: ``prlimit(pid)``
after spawning races the child's exec, and a wrapper process (the ``prlimit`` tool or a
``python -c`` shim) costs an extra exec per run. When a process-mode spec sets no limits, no
preexec function is used at all, so :mod:`subprocess` keeps its fast vfork/posix_spawn path
(process-mode children get no parent-death signal for that reason: a restarted daemon ends
their groups from the ledger of :mod:`pnsd.hosts.leftovers`).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from collections.abc import Callable

from pnsd.spec import Limits

RlimitSetting = tuple[int, tuple[int, int]]
PR_SET_PDEATHSIG = 1     # from <linux/prctl.h>


def rlimit_settings(limits: Limits) -> list[RlimitSetting]:
    """The ``(resource, (soft, hard))`` pairs for ``limits``, never above the current hard limit.

    Computed in the parent, so the child has nothing left to decide.
    """
    wanted: list[tuple[int, int, int]] = []   # (resource, soft, hard)
    if limits.memory_mb is not None:
        size = limits.memory_mb * 2**20
        wanted.append((resource.RLIMIT_AS, size, size))
    if limits.cpu_seconds is not None:
        # one second between soft and hard: SIGXCPU first, so a script may clean up, then SIGKILL
        wanted.append((resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1))
    if limits.open_files is not None:
        wanted.append((resource.RLIMIT_NOFILE, limits.open_files, limits.open_files))
    settings: list[RlimitSetting] = []
    for res, soft, hard in wanted:
        _, current = resource.getrlimit(res)
        capped = hard if current == resource.RLIM_INFINITY else min(hard, current)
        settings.append((res, (min(soft, capped), capped)))
    return settings


def preexec_for(limits: Limits, *, die_with_parent: bool = False) -> Callable[[], None] | None:
    """A function applying ``limits`` in the child, or None when there is nothing to apply.

    With ``die_with_parent`` the child also asks the kernel for SIGKILL when its parent dies
    (``PR_SET_PDEATHSIG``), so a daemon killed outright takes it along. The kernel sends that
    signal when the parent THREAD that forked the child ends, not the process: the hosts start
    their children from the event loop's thread (``loop.subprocess_exec`` forks there), which
    lives as long as the daemon serves.
    """
    settings = rlimit_settings(limits)
    prctl = _prctl() if die_with_parent else None
    parent = os.getpid()
    if not settings and prctl is None:
        return None

    def apply_limits() -> None:
        for res, pair in settings:
            resource.setrlimit(res, pair)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:     # the parent died before the request took effect
                os._exit(1)

    return apply_limits


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up in the parent (nothing is loaded between fork and exec)."""
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None     # not Linux: the restart's sweep of recorded groups still applies
    return function


def describe_exit(returncode: int | None, limits: Limits, *, oom_before: int) -> str:
    """Why a child ended: "exit code 3", "killed by signal SIGKILL", "killed: out of memory".

    ``oom_before`` is :func:`oom_kill_count` taken when the child started.
    """
    if returncode is None:
        return "still running"
    if returncode >= 0:
        return f"exit code {returncode}"
    signum = -returncode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = str(signum)
    if signum == signal.SIGKILL and oom_kill_count() > oom_before:
        return "killed: out of memory (SIGKILL from the OOM killer)"
    if signum == signal.SIGXCPU and limits.cpu_seconds is not None:
        return f"killed by signal {name}: CPU time limit of {limits.cpu_seconds} s"
    return f"killed by signal {name}"


def oom_kill_count() -> int:
    """How often the OOM killer struck in this process's cgroup (v2); 0 when unknown.

    A read of a few bytes from cgroupfs (kernel memory, not disk), so callers do it inline.
    """
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            path = next((line[3:].strip() for line in fh if line.startswith("0::")), None)
        if path is None:
            return 0
        with open(f"/sys/fs/cgroup{path}/memory.events", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0
