"""The rules of the house that code review would otherwise have to catch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from protocols.messages import OPERATIONS, all_message_types

ROOT = Path(__file__).resolve().parents[1]


def imported_roots(package: str) -> set[str]:
    roots = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(("package", "forbidden"), [
    ("protocols", {"pnsd", "pnsweb", "pnslog", "aiohttp", "structlog"}),
    ("pnslog", {"protocols", "pnsd", "pnsweb"}),
    ("pnsd", {"pnsweb", "aiohttp"}),
    ("pnsweb", {"pnsd"}),
])
def test_dependencies_run_one_way(package: str, forbidden: set[str]) -> None:
    assert imported_roots(package) & forbidden == set()


def test_pnsweb_imports_its_route_modules_where_the_import_linter_sees_them() -> None:
    import grimp  # noqa: PLC0415 - import-linter's own graph builder, only this test uses it

    assert "importlib" not in imported_roots("pnsweb")
    graph = grimp.build_graph("pnsweb")
    for module in ("pnsweb.routes_v06", "pnsweb.routes_v1", "pnsweb.routes_ops"):
        assert graph.direct_import_exists(importer="pnsweb.app", imported=module)


def test_every_operation_has_exactly_one_handler() -> None:
    from pnsd.handlers import Handlers  # noqa: PLC0415

    handlers, streams = Handlers.tables(Handlers.__new__(Handlers))
    assert set(handlers).isdisjoint(streams)
    assert set(handlers) | set(streams) == {op.name for op in OPERATIONS}


def test_message_types_are_unique() -> None:
    tags = all_message_types()
    assert len(tags) == len(set(tags))


def test_protocols_compiles_and_imports_on_the_oldest_python(tmp_path: Path) -> None:
    found = _oldest_python()
    if found is None:
        pytest.skip("no Python 3.8+ other than the running one under pyenv")
    # Syntax and stdlib imports on the old interpreter (it has no pyzmq or msgpack): compile
    # every module in memory, writing nothing.
    probe = (
        "import pathlib, sys\n"
        f"for f in sorted(pathlib.Path({str(ROOT / 'protocols')!r}).glob('*.py')):\n"
        "    compile(f.read_text(), str(f), 'exec')\n"
        "print('.'.join(map(str, sys.version_info[:2])))\n"
    )
    version, oldest = found
    result = subprocess.run([oldest, "-c", probe], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ".".join(map(str, version))


def _oldest_python() -> tuple[tuple[int, ...], str] | None:
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    candidates = []
    for python in Path(root, "versions").glob("3.*/bin/python"):
        version = tuple(int(p) for p in python.parts[-3].split(".")[:2])
        if (3, 8) <= version < sys.version_info[:2]:
            candidates.append((version, str(python)))
    return min(candidates) if candidates else None


def test_the_ogc_api_knows_no_pts_by_name() -> None:
    """/v1 builds every description from the PTS's declared interface: no entry point and no
    demo PTS is named in it (the reference API, /v0.6, drives the reference's own demos)."""
    import tomllib  # noqa: PLC0415 - only this test reads the demo specs

    demo = tomllib.loads((ROOT / "pnsd" / "demo" / "pts.toml").read_text())["pts"]
    names = {*demo, *(spec["entry"] for spec in demo.values() if "entry" in spec), "pnsd.demo"}
    v06 = {"views_v06.py", "views_v06_run.py", "views_v06_config.py", "views_v06_envelope.py",
           "routes_v06.py", "fdi.py", "settings.py"}
    for path in sorted((ROOT / "pnsweb").glob("*.py")):
        if path.name in v06:
            continue
        strings = {node.value for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert not names & strings, f"{path.name} names {sorted(names & strings)}"
