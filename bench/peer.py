"""The peer under the same load: pygeoapi, the most used OGC API - Processes server in Python.

Owns installing it (pygeoapi 0.24 with gunicorn and uvicorn, in a venv of its own under the
user's cache directory, made once with Python 3.12 from pyenv: pygeoapi 0.24 does not run on
the 3.11 PNS targets) and starting it as its documentation recommends for production:
``gunicorn pygeoapi.starlette_app:APP -k uvicorn.workers.UvicornWorker``, here with 2 workers
(one per core of this machine), serving its hello-world process, either without a job manager
(pygeoapi's "Dummy": runs are answered and not recorded) or with its TinyDB one (each run a
job recorded in a JSON file). :func:`install` says why when it cannot work, and the rows
are then "not measured" with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.services import Service
from bench.stack import Stack
from harness.procs import free_port, http_ready, wait_until

VERSION = "0.24"
# starlette (its ASGI app) and tinydb (its TinyDB manager) are optional extras of pygeoapi
PACKAGES = (f"pygeoapi=={VERSION}.*", "starlette", "tinydb", "gunicorn", "uvicorn")
WORKERS = 2
PATH = "/processes/hello-world/execution"
BODY = {"inputs": {"name": "stranger", "message": "hi"}}
EXPECT = "Hello stranger!"
INSTALL_TIMEOUT = 900.0


class PeerUnavailable(Exception):
    """pygeoapi cannot be installed or started here; the message says why."""


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pns-bench" / f"pygeoapi-{VERSION}"


def python312() -> Path:
    """Python 3.12 from pyenv (``pyenv root``/versions/3.12.*), else ``python3.12`` on PATH."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        versions = Path(root.stdout.strip()) / "versions"
        found = sorted(versions.glob("3.12*/bin/python"), reverse=True) if root.stdout else []
        if found:
            return found[0]
    on_path = shutil.which("python3.12")
    if on_path:
        return Path(on_path)
    raise PeerUnavailable("no Python 3.12 (pyenv has none, and there is no python3.12 on "
                          "PATH); pygeoapi 0.24 needs it")


def install() -> Path:
    """The peer's venv, made and filled once (pip, from the configured index); its path."""
    venv = venv_dir()
    marker = venv / ".installed"
    if marker.exists() and marker.read_text() == " ".join(PACKAGES):
        return venv
    python = python312()
    steps = ([str(python), "-m", "venv", "--clear", str(venv)],
             [str(venv / "bin" / "pip"), "install", "-q", *PACKAGES])
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False,
                                  timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise PeerUnavailable(f"{' '.join(argv[:3])} took over {INSTALL_TIMEOUT:g} s") \
                from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise PeerUnavailable(f"{' '.join(argv[:3])} failed: {' / '.join(tail)}")
    marker.write_text(" ".join(PACKAGES))
    return venv


def config_text(port: int, *, tinydb: Path | None) -> str:
    manager = "" if tinydb is None else (
        f"  manager:\n    name: TinyDB\n    connection: {tinydb}\n"
        f"    output_dir: {tinydb.parent}/\n")
    return f"""server:
  bind: {{host: 127.0.0.1, port: {port}}}
  url: http://127.0.0.1:{port}
  mimetype: application/json; charset=UTF-8
  encoding: utf-8
  language: en-US
  limits: {{default_items: 10, max_items: 50}}
  map: {{url: 'https://tile.example.org/{{z}}/{{x}}/{{y}}.png', attribution: none}}
{manager}logging:
  level: ERROR
metadata:
  identification:
    title: bench
    description: bench
    keywords: [bench]
    keywords_type: theme
    terms_of_service: none
    url: http://127.0.0.1
  license: {{name: none, url: http://127.0.0.1}}
  provider: {{name: bench, url: http://127.0.0.1}}
  contact: {{name: bench, position: bench, address: x, city: x, stateorprovince: x,
            postalcode: x, country: x, phone: x, fax: x, email: x, url: x, hours: x,
            instructions: x, role: pointOfContact}}
resources:
  hello-world:
    type: process
    processor:
      name: HelloWorld
"""


def start(stack: Stack, name: str, *, tinydb: bool) -> Service:
    """pygeoapi under gunicorn with 2 uvicorn workers, as service ``name`` of ``stack``."""
    venv = install()
    port = free_port()
    home = stack.tmp / name
    home.mkdir(exist_ok=True)
    config = home / "pygeoapi.yml"
    config.write_text(config_text(port, tinydb=home / "jobs.db" if tinydb else None))
    openapi = home / "openapi.yml"
    env = {**os.environ, "PYGEOAPI_CONFIG": str(config), "PYGEOAPI_OPENAPI": str(openapi)}
    made = subprocess.run([str(venv / "bin" / "pygeoapi"), "openapi", "generate", str(config),
                           "--output-file", str(openapi)], capture_output=True, text=True,
                          env=env, check=False, timeout=120)
    if made.returncode != 0:
        raise PeerUnavailable(f"pygeoapi openapi generate failed: {made.stderr.strip()[-300:]}")
    child = stack.child(name, [str(venv / "bin" / "gunicorn"), "pygeoapi.starlette_app:APP",
                               "-w", str(WORKERS), "-k", "uvicorn.workers.UvicornWorker",
                               "-b", f"127.0.0.1:{port}", "--log-level", "warning"],
                        env=env, cwd=home)
    service = Service(name, child, port=port)
    stack.services[name] = service
    wait_until(lambda: http_ready(f"http://127.0.0.1:{port}/processes"), timeout=60,
               what=f"{name} answers /processes", child=child)
    return service


def stop(stack: Stack, name: str) -> None:
    service = stack.services.pop(name, None)
    if service is not None:
        service.child.stop()
