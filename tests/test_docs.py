"""The documentation stays true and inside the repository.

The configuration reference and the protocol's spec-keys table list exactly the keys the code
accepts (so neither can drift from it); every link in the README and ``docs/`` resolves within
a clone; no source file cites a file that is not in the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pnsd.config import PNSD_KEYS
from pnsd.spec import parse_spec
from pnsweb.settings import USER_KEYS, WEB_KEYS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def table_keys(text: str, heading: str) -> set[str]:
    """The keys in the first column of the table under ``heading`` (up to the next heading)."""
    section = text.split(f"\n{heading}\n", 1)[1]
    section = re.split(r"\n#{1,6} ", section, maxsplit=1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


def test_the_configuration_reference_lists_every_pnsd_and_pnsweb_key() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert table_keys(text, "## `[pnsd]`") == PNSD_KEYS
    assert table_keys(text, "## `[pnsweb]`") == WEB_KEYS
    assert table_keys(text, "### `[[pnsweb.users]]`") == USER_KEYS


def test_the_protocol_lists_every_pts_spec_key() -> None:
    text = (ROOT / "protocols" / "SPEC.md").read_text()
    spec = parse_spec("tool", {"mode": "inproc", "entry": "tool:run"})
    assert table_keys(text, "### PTS spec keys") == set(spec.public()) - {"name"}


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading (lower case, punctuation dropped)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines()
            if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        assert not re.match(r"[a-z]+:", target), f"{page.name}: {target} leaves the repository"
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} is outside the clone"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.name}: no heading for {target}"


# Notes kept outside the repository, by name; a source file saying "STYLE rule 6" or
# "(DESIGN.md)" points a reader at something a clone does not have.
OUTSIDE = re.compile(
    r"\b(?:STYLE|DESIGN|PERF|LAYOUT|REFERENCE)(?:\.md|\b ?rule| \"|: )|\bshared/|\brule \d")


def test_no_source_file_cites_a_file_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    citing = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".toml", ".service"} or not path.is_file():
            continue
        if name == "tests/test_docs.py":
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                citing.append(f"{name}:{number}: {line.strip()}")
    assert citing == []
