"""Workers inside containers: the container runtime's command line, and its own stop and kill.

Owns how a worker-mode PTS whose spec has a ``container`` table is started and ended. Each
worker is ``RUNTIME run --rm -i --name NAME`` with what it needs mounted at the same path as on
the host (the generation's socket directory, the key file, the ``protocols`` package and the
spec's ``pythonpath``), the spec's variables and ``PYTHONPATH`` passed through, the spec's
options, the image, and then the worker's usual command line. The daemon supervises the
runtime's client process like any worker; ending one uses the runtime itself (``stop -t``,
its SIGTERM, grace and SIGKILL inside the container; ``kill``), since a signal to the client
alone can leave the container running. Containers are labelled with the daemon's run dir, the
daemon process and the generation: a generation removes whatever is left of its own when it
stops, and one starting removes those a dead daemon left behind. Must not: parse specs
(:mod:`pnsd.spec`), supervise (:mod:`pnsd.hosts.worker`).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

import structlog

from pnsd.hosts.children import Child
from pnsd.spec import Container

log = structlog.get_logger(__name__)

STOP_SLACK = 10.0      # seconds the runtime's stop may take beyond its own grace
COMMAND_TIMEOUT = 60.0
DAEMON = os.urandom(6).hex()    # this daemon process: containers labelled otherwise are leftovers


def container_name(pts: str, token: str, identity: str) -> str:
    """A name unique per worker process (the runtime refuses a second container by a name)."""
    return f"pns-{pts}-{token}-{identity}"


def run_prefix(container: Container, name: str, *, mounts: Iterable[Path],
               env_names: Iterable[str], run_dir: Path, generation: str) -> list[str]:
    """``RUNTIME run …  IMAGE``: the part of a worker's command line before its interpreter."""
    argv = [*container.runtime, "run", "--rm", "-i", "--name", name,
            "--label", f"pns.run={run_dir}", "--label", f"pns.daemon={DAEMON}",
            "--label", f"pns.generation={generation}"]
    for path in dict.fromkeys(str(p) for p in mounts):
        argv += ["-v", f"{path}:{path}"]
    for variable in dict.fromkeys(env_names):
        argv += ["-e", variable]      # the value comes from the runtime client's environment
    return [*argv, *container.options, container.image]


class ContainerChild(Child):
    """A worker's container runtime client; stopping or killing it ends the container too."""

    runtime: tuple[str, ...] = ()
    name: str = ""
    _killer: subprocess.Popen[bytes] | None = None

    def attach(self, container: Container, name: str) -> ContainerChild:
        self.runtime, self.name = container.runtime, name
        return self

    def signal(self, signum: int) -> None:
        """Signal the client's group; a SIGKILL also has the runtime kill the container."""
        super().signal(signum)
        if signum == signal.SIGKILL and self._killer is None and self.name:
            # not awaited: a kill must take effect even from a callback or a stopping loop
            self._killer = subprocess.Popen(
                [*self.runtime, "kill", self.name], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    async def stop(self, grace: float) -> None:
        """The runtime's own stop (SIGTERM, ``grace``, SIGKILL in the container), then the
        client's group as for any child."""
        if not self.exited.done():
            seconds = max(1, math.ceil(grace))
            log.info("container_stop", name=self.name, grace=seconds)
            await run_quietly([*self.runtime, "stop", "-t", str(seconds), self.name],
                              timeout=seconds + STOP_SLACK)
        await super().stop(min(grace, 1.0))

    def close(self) -> None:
        super().close()
        if self._killer is not None and self._killer.poll() is None:
            self._keep_reaping(self._killer)

    @staticmethod
    def _keep_reaping(process: subprocess.Popen[bytes]) -> None:
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, process.wait)


async def run_quietly(argv: list[str], *, timeout: float) -> None:
    """Run a runtime command; a failure (the container is already gone) is only logged."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        log.warning("container_command_timeout", command=argv, timeout=timeout)
        return
    if process.returncode:
        log.info("container_command_failed", command=argv, returncode=process.returncode,
                 stderr=err.decode(errors="replace")[-300:])


def remove_containers(runtime: tuple[str, ...], label: str, *, leftovers: bool) -> list[str]:
    """Force-remove the containers carrying ``label`` (only those of other daemons when
    ``leftovers``); their names. Blocking: call it in a thread."""
    try:
        listed = subprocess.run(
            [*runtime, "ps", "-a", "--filter", f"label={label}", "--format",
             '{{.Names}} {{index .Labels "pns.daemon"}}'],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:   # starting a worker will say it too
        log.warning("container_list_failed", command=list(runtime), error=str(exc))
        return []
    if listed.returncode:
        log.warning("container_list_failed", command=list(runtime), stderr=listed.stderr[-300:])
        return []
    names = [line.split()[0] for line in listed.stdout.splitlines()
             if line.split() and not (leftovers and line.split()[-1] == DAEMON)]
    for action in (["kill"], ["rm", "-f"]) if names else ():   # rm alone may wait a grace
        subprocess.run([*runtime, *action, *names], capture_output=True,
                       timeout=COMMAND_TIMEOUT, check=False)
    if names:
        log.info("containers_removed", names=names, leftovers=leftovers)
    return names
