"""The packaged demo PTS: small callables for the inproc and worker modes, and the hello scripts.

Owns the demo behaviour that tests, benchmarks and ``make run`` rely on: ``echo``, the reference's
``hello`` and ``testcalc``, a cancellable ``sleep`` and a ``fail`` that always raises. Inputs and
results are plain msgpack-able values. Importing this module must do no I/O; the callables touch
nothing but the clock (``hello`` also reads the effective user name).
"""

from __future__ import annotations

import functools
import getpass
import math
import os
import pathlib
import pwd
import time
from collections.abc import Mapping
from typing import Any

from protocols.context import RunContext

SCRIPTS_DIR: pathlib.Path = pathlib.Path(__file__).resolve().parent / "scripts"
DEFAULT_NAME = "stranger"
MAX_SLEEP = 86400.0
# `date` in the C locale; %e pads the day with a space, as `date` does ("Nov  5").
DATE_FORMAT = "%a %b %e %H:%M:%S %Z %Y"


def demo_specs_path() -> pathlib.Path:
    """The TOML file declaring the demo PTS (``[pts.NAME]`` tables)."""
    return pathlib.Path(__file__).resolve().parent / "pts.toml"


def echo(data: Any) -> Any:
    """Return the input unchanged."""
    return data


def hello(data: Any, ctx: RunContext | None = None) -> str:
    """Greet a name exactly as the ``runPTS`` script does: ``hello NAME! From USER DATE``.

    ``data`` is the inputs map ``{"name": name}`` (its declared input), the reference's
    ``{"theName": name}``, or the name itself; a missing or empty name means "stranger".
    """
    name = _hello_name(data)
    if ctx is not None:
        ctx.log(f"greeting {name}")
    return f"hello {name}! From {_user_name(os.geteuid())} {time.strftime(DATE_FORMAT)}\n"


def init(data: Any = None) -> str:
    """The hello PTS's init hook: nothing to prepare."""
    return "hello initialised"


def clean(data: Any = None) -> str:
    """The hello PTS's clean hook: nothing to remove."""
    return "hello cleaned"


def testcalc(data: Any) -> dict[str, Any]:
    """The reference's in-memory demo on plain data.

    Echoes ``creator`` and ``rootcause``, copies the input's first metadata item and first
    dataset unchanged (their values are never inspected) and adds a small ``spectrum`` table.
    """
    if not isinstance(data, Mapping):
        raise ValueError("testcalc input must be a map with creator, rootcause and input")
    creator = _required_text(data, "creator")
    rootcause = _required_text(data, "rootcause")
    product = data.get("input")
    if not isinstance(product, Mapping):
        raise ValueError("testcalc 'input' must be a map with 'meta' and at least one dataset")
    meta = product.get("meta")
    if not isinstance(meta, Mapping) or not meta:
        raise ValueError("testcalc 'input.meta' must be a non-empty map of parameters")
    datasets = [(key, value) for key, value in product.items() if key != "meta"]
    if not datasets:
        raise ValueError("testcalc 'input' holds no dataset besides 'meta'")
    meta_name, meta_value = next(iter(meta.items()))
    ds_name, ds_value = datasets[0]
    return {
        "creator": creator,
        "rootcause": rootcause,
        "meta": {meta_name: meta_value},
        "datasets": {ds_name: ds_value, "spectrum": _spectrum()},
    }


def sleep(data: Any, ctx: RunContext | None = None) -> dict[str, Any]:
    """Sleep ``data`` seconds (or ``{"seconds": n}``), reporting progress; stop early on cancel."""
    seconds = _sleep_seconds(data)
    if ctx is None:
        time.sleep(seconds)
        return {"slept": seconds}
    if ctx.cancelled:
        raise RuntimeError("cancelled")
    step = min(1.0, max(0.05, seconds / 20))
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if ctx.wait_cancelled(min(step, remaining)):
            raise RuntimeError("cancelled")
        done = min(seconds, seconds - (deadline - time.monotonic()))
        ctx.progress(int(100 * done / seconds), f"slept {done:.1f} of {seconds}s")
    ctx.progress(100, "done")
    return {"slept": seconds}


def fail(data: Any) -> Any:
    """Always raise, so tests can see how a failing PTS is reported."""
    raise RuntimeError(f"demo failure: asked to fail with input of type {type(data).__name__}")


def _hello_name(data: Any) -> str:
    name = data.get("name", data.get("theName")) if isinstance(data, Mapping) else data
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("hello: the name must be UTF-8 text") from exc
    if name is None:
        return DEFAULT_NAME
    if not isinstance(name, str):
        raise ValueError(
            f"hello: the name must be a string or {{'theName': str}}, got {type(name).__name__}"
        )
    # runPTS reads the name with $(cat input/infile), which drops trailing newlines
    return name.rstrip("\n") or DEFAULT_NAME


@functools.lru_cache(maxsize=4)
def _user_name(uid: int) -> str:
    """The name of user ``uid``, as ``whoami`` prints it for the effective user. Cached: each
    lookup reads the password database, a visible share of a short run (bench/FINDINGS.md,
    "Micro-measurements")."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return getpass.getuser()


def _required_text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"testcalc {key!r} is required and must be a string")
    return value


def _spectrum() -> dict[str, Any]:
    return {
        "col1": {"data": [1, 4.4, 5400.0], "unit": "eV"},
        "col2": {"data": [0, 43.2, 2000.0], "unit": "cnt"},
    }


def _sleep_seconds(data: Any) -> float | int:
    value = data.get("seconds") if isinstance(data, Mapping) else data
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("sleep takes a number of seconds, or {'seconds': n}")
    if not math.isfinite(value) or not 0 <= value <= MAX_SLEEP:
        raise ValueError(f"sleep seconds must be between 0 and {MAX_SLEEP:g}, got {value!r}")
    return value
