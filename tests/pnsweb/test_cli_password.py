"""pnsweb's administrator password without the command line (which ``ps`` shows to all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pnsweb import cli
from pnsweb.settings import SettingsError


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.key").write_text("ab" * 32 + "\n")
    (home / "secret.key").chmod(0o600)
    monkeypatch.setenv("PNS_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PNS_CONFIG", raising=False)
    monkeypatch.delenv(cli.PASSWORD_ENV, raising=False)
    return home


def _admin(*argv: str) -> tuple[str, bool]:
    (user,) = cli.settings_of(cli.build_parser().parse_args(list(argv))).users
    return user.name, user.check("s3cret")


def test_the_password_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.PASSWORD_ENV, "s3cret")
    assert _admin("-u", "root") == ("root", True)


def test_the_password_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    assert _admin("-u", "root", "--password-file", str(secret)) == ("root", True)
    with pytest.raises(SettingsError, match="cannot read --password-file"):
        _admin("-u", "root", "--password-file", str(tmp_path / "missing"))


def test_a_password_in_the_environment_needs_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.PASSWORD_ENV, "s3cret")
    assert cli.settings_of(cli.build_parser().parse_args([])).users == ()
    monkeypatch.setenv(cli.PASSWORD_ENV, "")
    with pytest.raises(SettingsError, match="together"):
        _admin("-u", "root")
