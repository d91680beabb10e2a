"""Resource limits (rlimits) for the children the hosts start.

Owns turning a spec's :class:`~pnsd.spec.Limits` into ``setrlimit`` calls that run in the
child between fork and exec. It must not start processes itself or touch the daemon's own
limits.

Why a ``preexec_fn`` is acceptable here: CPython warns that code run between fork and exec in a
multi-threaded parent may deadlock on a lock another thread held at fork time (malloc, logging,
the import lock). The function built here is a closure over pre-computed integers; it only
calls ``resource.setrlimit`` (already imported, no logging, no imports, nothing that takes a
Python-level lock), and glibc's malloc is fork-safe. The alternatives are worse: ``prlimit(pid)``
after spawning races the child's exec, and a wrapper process (the ``prlimit`` tool or a
``python -c`` shim) costs an extra exec per run. When a spec sets no limits, no preexec
function is used at all, so :mod:`subprocess` keeps its fast vfork/posix_spawn path.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

from pnsd.spec import Limits

RlimitSetting = tuple[int, tuple[int, int]]


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


def preexec_for(limits: Limits) -> Callable[[], None] | None:
    """A function applying ``limits`` in the child, or None when there is nothing to apply."""
    settings = rlimit_settings(limits)
    if not settings:
        return None

    def apply_rlimits() -> None:
        for res, pair in settings:
            resource.setrlimit(res, pair)

    return apply_rlimits
