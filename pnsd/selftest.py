"""Readiness checks of a new generation before it is swapped in: its init hook and self-test.

Owns what a spec's ``selftest`` means and checking its shape, running the init hook of modes
whose host does not run it at start, and the pre-flight check that a worker's interpreter
exists. A self-test is a table::

    selftest = {input = {x = 1}, expect = {x = 1}, timeout = 5}

``input`` (required) is run once on the new generation, outside any job record, before it
serves; the run must succeed. ``expect`` (optional) must then match the result: scalars and
lists are compared for equality (``true`` is not ``1``); a table matches a table that holds at
least its keys with matching values (recursively), so a process-mode test can say
``expect = {returncode = 0}``. ``timeout`` (optional) lowers the spec's ``timeout``. The
``input`` must fit the spec's declared inputs (checked before the generation starts), and when
the spec declares outputs the self-test's result must hold each with a value that fits its
schema (:mod:`pnsd.interface`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

from pnsd.errors import BadRequest, InvalidSpec, PtsFailed
from pnsd.jobs.model import new_job_id
from pnsd.registry import Generation
from pnsd.spec import Mode, PtsSpec
from pnsd.validation import InputCheck, check_outputs
from protocols.context import RunContext

SELFTEST_KEYS = frozenset({"input", "expect", "timeout"})
SHOWN = 300     # characters of an unexpected result quoted in the error


def check(spec: PtsSpec) -> None:
    """Refuse a spec whose self-test is malformed or whose worker interpreter is missing.

    Blocking (it looks on the disk): call it in a thread.
    """
    selftest = spec.selftest
    if selftest is not None:
        if not isinstance(selftest, Mapping) or "input" not in selftest:
            raise InvalidSpec(f"PTS {spec.name}: 'selftest' must be a table with 'input' "
                              "(and optionally 'expect' and 'timeout')")
        if unknown := set(selftest) - SELFTEST_KEYS:
            raise InvalidSpec(f"PTS {spec.name}: 'selftest' has unknown keys {sorted(unknown)}")
        try:
            InputCheck(spec.name, spec.interface.inputs).check(selftest["input"])
        except BadRequest as exc:
            raise InvalidSpec(f"PTS {spec.name}: 'selftest.input' does not fit the declared "
                              f"inputs: {exc.message}", **exc.details) from None
        limit = selftest.get("timeout", spec.timeout)
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
            raise InvalidSpec(f"PTS {spec.name}: 'selftest.timeout' must be positive seconds")
    if spec.mode is Mode.WORKER:
        executable = spec.python or (spec.command[0] if spec.command else sys.executable)
        found = shutil.which(executable) if os.sep not in executable else (
            executable if os.access(executable, os.X_OK) else None)
        if found is None:
            raise InvalidSpec(f"PTS {spec.name}: executable {executable!r} not found")


async def init(generation: Generation) -> None:
    """Run the init hook; worker mode's runtime ran it in every worker before its hello."""
    if generation.spec.mode is not Mode.WORKER:
        await generation.host.hook("init", timeout=generation.spec.timeout)


async def run(generation: Generation) -> None:
    """Run the spec's self-test on ``generation``; raise PtsFailed if it fails or mismatches."""
    selftest = generation.spec.selftest
    if selftest is None:
        return
    limit = min(float(selftest.get("timeout", generation.spec.timeout)), generation.spec.timeout)
    result = await generation.host.run(selftest["input"], timeout=limit,
                                       ctx=RunContext(new_job_id()))
    if "expect" in selftest and not matches(selftest["expect"], result):
        shown = repr(result)
        shown = shown if len(shown) <= SHOWN else shown[:SHOWN] + "..."
        raise PtsFailed(f"selftest expected {selftest['expect']!r}, got {shown}")
    interface = generation.spec.interface
    if interface.outputs:
        process = generation.spec.mode is Mode.PROCESS
        try:
            check_outputs(generation.spec.name, interface.output_values(result, process=process),
                          interface.outputs)
        except BadRequest as exc:
            raise PtsFailed(f"selftest: {exc.message}", **exc.details) from None


def matches(expect: Any, got: Any) -> bool:
    """True when ``got`` matches ``expect`` (see the module's docstring)."""
    if isinstance(expect, Mapping):
        return isinstance(got, Mapping) and all(
            k in got and matches(v, got[k]) for k, v in expect.items())
    if isinstance(expect, list | tuple):
        return (isinstance(got, list | tuple) and len(got) == len(expect)
                and all(matches(e, g) for e, g in zip(expect, got, strict=True)))
    if isinstance(expect, bool) or isinstance(got, bool):
        return type(expect) is type(got) and expect == got
    return bool(expect == got)
