"""pnsd under a service manager: READY=1 once it serves, STOPPING=1 when it stops."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pnsd.keyfile import load_or_create_key
from protocols.client import Client
from tests.integration.conftest import child_env, settings_for, write_config

pytestmark = pytest.mark.slow


def test_pnsd_notifies_ready_once_it_answers_and_stopping_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = write_config(home, "demo = false\n")
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(30)
        env = {**child_env(home), "NOTIFY_SOCKET": address}
        process = subprocess.Popen(
            [sys.executable, "-m", "pnsd", "start", "--home", str(home), "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True)
        try:
            ready = listener.recv(4096).decode()
            assert ready.splitlines() == ["READY=1", f"MAINPID={process.pid}"]
            settings = settings_for(home, "demo = false\n")
            key = load_or_create_key(settings.key_file, create=False)
            with Client(settings.endpoint, key=key, timeout=5) as client:
                assert client.call("ping", {}) is not None      # ready means it answers
            process.send_signal(signal.SIGTERM)
            assert listener.recv(4096) == b"STOPPING=1"
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
