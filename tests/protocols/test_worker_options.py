"""The worker's command line: remote options, and the same options from an INI file."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.worker import parse_args

BASE = ["--entry", "m:f", "--key-file", "k"]


def test_options_come_from_the_config_file_and_the_command_line_wins(tmp_path: Path) -> None:
    ini = tmp_path / "w.ini"
    ini.write_text("[worker]\nconnect = tcp://node:7756\npts = gpu\nentry = m:f\n"
                   "key_file = /etc/pns/secret.key\nserver_key = s.key\nkey = w.key_secret\n"
                   "heartbeat = 2\n")
    args = parse_args(["--config-file", str(ini), "--heartbeat", "0.5"])
    assert (args.connect, args.pts, args.key_file) == ("tcp://node:7756", "gpu",
                                                       "/etc/pns/secret.key")
    assert (args.server_key, args.key, args.heartbeat) == ("s.key", "w.key_secret", 0.5)


@pytest.mark.parametrize(("extra", "message"), [
    (["--server-key", "s"], "--server-key and --key go together"),
    (["--server-key", "s", "--key", "k"], "give --pts too"),
])
def test_curve_keys_need_each_other_and_a_pts(
        extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--connect", "tcp://n:1", *BASE, *extra])
    assert message in capsys.readouterr().err


def test_a_config_file_without_a_worker_section_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ini = tmp_path / "w.ini"
    ini.write_text("[other]\nx = 1\n")
    with pytest.raises(SystemExit):
        parse_args(["--config-file", str(ini)])
    assert "has no [worker] section" in capsys.readouterr().err
