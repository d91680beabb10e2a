"""The service files in contrib/: units systemd accepts and rates safe, a production config.

The units are checked with ``systemd-analyze`` (``verify``, and ``security`` for the exposure
score). When the tool is missing it is installed with apt-get (as root); if that is impossible
the tests say so in their skip reason.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pnsd.config import load_settings
from pnsweb.settings import hash_password
from pnsweb.settings import load_settings as load_web_settings

ROOT = Path(__file__).resolve().parents[1]
CONTRIB = ROOT / "contrib"
UNITS = ("pnsd.service", "pnsweb.service", "pns-worker.service")
NODE_UNITS = UNITS[:2]
MAX_EXPOSURE = 2.0      # systemd-analyze security: 0 is the safest, 10 the most exposed
HARDENING = ("ProtectSystem=strict", "ProtectHome=true", "PrivateDevices=true",
             "CapabilityBoundingSet=", "SystemCallFilter=@system-service", "NoNewPrivileges=true")


@functools.cache
def _systemd_analyze() -> str | None:
    found = shutil.which("systemd-analyze")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        for step in (["apt-get", "update"], ["apt-get", "install", "-y", "systemd"]):
            subprocess.run(step, capture_output=True, timeout=900, check=False)
        found = shutil.which("systemd-analyze")
    return found


@pytest.fixture
def analyze() -> str:
    tool = _systemd_analyze()
    if tool is None:
        pytest.skip("systemd-analyze is not installed and `apt-get install -y systemd` could "
                    "not install it (not root, or no apt-get): the units were NOT verified")
    return tool


@pytest.fixture
def units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at this checkout's programs (verify wants them)."""
    copies = []
    bin_dir = Path(sys.executable).parent
    for name in UNITS:
        text = (CONTRIB / name).read_text().replace("/opt/pns/bin/", f"{bin_dir}/")
        (tmp_path / name).write_text(text)
        copies.append(tmp_path / name)
    return copies


def test_systemd_verifies_the_units(analyze: str, units: list[Path]) -> None:
    done = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=units[0].parent)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if ".service" in line], done.stderr


@pytest.mark.parametrize("index", range(len(UNITS)))
def test_the_units_exposure_is_low(analyze: str, units: list[Path], index: int) -> None:
    done = subprocess.run([analyze, "security", "--offline=true", str(units[index])],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=units[0].parent)
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert score is not None, done.stdout + done.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE


def _directives(name: str) -> set[str]:
    return {line.strip() for line in (CONTRIB / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")}


@pytest.mark.parametrize("name", UNITS)
def test_the_units_are_hardened_and_read_only_the_system_config(name: str) -> None:
    lines = _directives(name)
    assert set(HARDENING) <= lines
    start = next(line for line in lines if line.startswith("ExecStart="))
    wanted = "--config /etc/pns/pnsd.toml" if name in NODE_UNITS else (
        "-m protocols.worker --config-file /etc/pns/worker.ini")
    assert wanted in start      # never the service user's ~/.config


def test_pnsweb_starts_once_pnsd_said_it_is_ready() -> None:
    assert {"Type=notify", "StateDirectory=pns", "StateDirectoryMode=0700"} <= _directives(
        "pnsd.service")
    assert {"After=pnsd.service", "Requires=pnsd.service"} <= _directives("pnsweb.service")


def test_the_production_config_has_no_demo_and_a_web_administrator(tmp_path: Path) -> None:
    """contrib/pnsd.toml after the install step of docs/operations.md (the hash put in by sed)."""
    steps = (ROOT / "docs" / "operations.md").read_text()
    assert "contrib/pnsd.toml" in steps and "--hash-password" in steps
    text = (CONTRIB / "pnsd.toml").read_text()
    assert 'password_hash = ""' in text
    home = tmp_path / "pns"
    text = text.replace('password_hash = ""', f'password_hash = "{hash_password("pw")}"')
    config = tmp_path / "pnsd.toml"
    config.write_text(text.replace('home = "/var/lib/pns"', f"home = {str(home)!r}"))
    settings = load_settings(config=config, env={"HOME": str(tmp_path)})
    assert not settings.demo
    assert settings.pts == {}
    home.mkdir(mode=0o700)
    (home / "secret.key").write_text("k" * 64)
    (home / "secret.key").chmod(0o600)
    web = load_web_settings(config=config, env={"HOME": str(tmp_path)})
    assert [(user.name, user.admin, user.check("pw")) for user in web.users] == [
        ("admin", True, True)]

