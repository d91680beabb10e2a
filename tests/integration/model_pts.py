"""The PTS the model-based test deploys, and what each version of them returns.

Owns writing the test's PTS code into a directory (one Python module per mode and version for
``inproc`` and ``worker``, one script for ``process`` that takes its version as an argument),
the spec of each (mode, version), the TOML form of a spec (for ``pts.d`` edits and reloads),
and the two sides of the model's promise "a successful job's result is what its PTS version
returns for its input": :func:`predicted` and :func:`observed`, both in one canonical shape
``{"v": version, "echo": input, "blob": size}`` (``blob`` only in process mode).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MODES = ("inproc", "worker", "process")
NAMES = {mode: f"m-{mode}" for mode in MODES}
RUN_TIMEOUT = 20

_MODULE = '''"""A model-test PTS, version {version}: returns its version and its input."""
import time

VERSION = {version}


def run(inputs):
    data = inputs["input"]     # it declares no inputs: the web sends its data as "input"
    if isinstance(data, dict) and data.get("sleep"):
        time.sleep(float(data["sleep"]))
    return {{"v": VERSION, "echo": data}}
'''

_SCRIPT = '''#!{python}
"""A model-test process-mode PTS: argv[1] is its version. Reads input/data (JSON) and
input/size; writes output/result ({{"v", "echo"}}) and, if size > 0, output/blob of that many
bytes."""
import json, pathlib, sys, time

version = int(sys.argv[1])
inbox, outbox = pathlib.Path("input"), pathlib.Path("output")
outbox.mkdir(exist_ok=True)
data = json.loads((inbox / "data").read_text()) if (inbox / "data").exists() else None
if isinstance(data, dict) and data.get("sleep"):
    time.sleep(float(data["sleep"]))
size = int((inbox / "size").read_text()) if (inbox / "size").exists() else 0
(outbox / "result").write_text(json.dumps({{"v": version, "echo": data}}))
if size:
    (outbox / "blob").write_text("x" * size)
'''


def module_name(mode: str, version: int) -> str:
    return f"m_{mode}_v{version}"


def write_code(code_dir: Path, mode: str, version: int) -> None:
    """The code of ``mode`` at ``version`` (written before the spec naming it is deployed)."""
    code_dir.mkdir(parents=True, exist_ok=True)
    if mode == "process":
        script = code_dir / "mproc.py"
        if not script.exists():
            script.write_text(_SCRIPT.format(python=sys.executable))
            script.chmod(0o755)
        return
    (code_dir / f"{module_name(mode, version)}.py").write_text(_MODULE.format(version=version))


def spec(mode: str, version: int, code_dir: Path) -> dict[str, Any]:
    """The spec of ``mode`` at ``version`` (the keys of a ``[pts.NAME]`` table)."""
    common: dict[str, Any] = {"mode": mode, "version": str(version), "timeout": RUN_TIMEOUT,
                              "description": f"model test PTS ({mode})"}
    if mode == "process":
        return {**common, "dir": str(code_dir), "run": ["mproc.py", str(version)],
                "inputs": ["data", "size"], "concurrency": 2, "queue": 16}
    entry = f"{module_name(mode, version)}:run"
    extra = {"workers": 2} if mode == "worker" else {"concurrency": 4}
    return {**common, "entry": entry, "pythonpath": [str(code_dir)], "queue": 16, **extra}


def toml_table(name: str, table: dict[str, Any]) -> str:
    """``[pts.NAME]`` with ``table``'s keys (strings, numbers and lists of strings only)."""
    lines = [f'[pts."{name}"]']
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def web_inputs(mode: str, data: Any, size: int) -> dict[str, Any]:
    """The OGC ``inputs`` that give the PTS ``data`` (and, in process mode, the blob size)."""
    if mode == "process":
        inputs = {"data": json.dumps(data)}
        if size:
            inputs["size"] = str(size)
        return inputs
    return {"input": data}


def predicted(mode: str, version: int, data: Any, size: int) -> dict[str, Any]:
    if mode == "process":
        return {"v": version, "echo": data, "blob": size}
    return {"v": version, "echo": data}


def observed(mode: str, value: Any) -> Any:
    """The canonical shape of a result as served: a sync run's raw body (process mode: the map
    of output files), a results document (``{"result"}`` / ``{"outputs"}``) or a daemon
    ``job.result`` reply's ``result``."""
    if mode != "process":
        if isinstance(value, dict) and set(value) == {"result"}:
            return value["result"]
        return value
    files = value
    if isinstance(files, dict) and set(files) == {"result"} and isinstance(files["result"], dict):
        files = files["result"]   # pnsweb's shape once the PTS is gone: the daemon's whole result
    if isinstance(files, dict) and isinstance(files.get("outputs"), dict):
        files = files["outputs"]
    if not isinstance(files, dict) or not isinstance(files.get("result"), str):
        return {"unexpected": str(value)[:200]}
    found = json.loads(files["result"])
    return {**found, "blob": len(files.get("blob") or "")}
