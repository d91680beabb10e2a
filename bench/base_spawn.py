"""Baseline 4: a spawn-a-process-per-request server, as the reference served ``/testrun``.

``python -m bench.base_spawn PORT SCRIPT WORKDIR``. ``POST /testrun`` with the reference's body
``{"creator", "rootcause", "input": {"theName": name}}``: a fresh job dir under WORKDIR gets
``input/infile``, SCRIPT (the packaged bash ``runPTS``) runs there as a child process, and
``output/outfile`` is read back and answered as ``{"result": {"creator", "rootcause",
"theAnswer"}}``. One run at a time, like the reference. No auth, logging or records.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import sys
from pathlib import Path

from aiohttp import web

LOCK = web.AppKey("lock", asyncio.Lock)
SETUP = web.AppKey("setup", tuple)


def _prepare(job_dir: Path, name: str) -> None:
    (job_dir / "input").mkdir(parents=True)
    (job_dir / "output").mkdir()
    (job_dir / "input" / "infile").write_text(name)


def _collect(job_dir: Path) -> str:
    answer = (job_dir / "output" / "outfile").read_text()
    shutil.rmtree(job_dir)
    return answer


async def testrun(request: web.Request) -> web.Response:
    script, workdir, counter = request.app[SETUP]
    body = json.loads(await request.read())
    job_dir = workdir / f"job{next(counter)}"
    async with request.app[LOCK]:
        _prepare(job_dir, body["input"]["theName"])
        child = await asyncio.create_subprocess_exec(
            str(script), cwd=job_dir, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await child.communicate()
        answer = _collect(job_dir)
    result = {"creator": body["creator"], "rootcause": body["rootcause"], "theAnswer": answer}
    message = {"stdout": stdout.decode(), "stderr": stderr.decode(),
               "returncode": child.returncode}
    return web.json_response({"result": result, "message": message})


async def serve(port: int, script: Path, workdir: Path) -> None:
    app = web.Application()
    app[LOCK] = asyncio.Lock()
    app[SETUP] = (script, workdir, itertools.count())
    app.router.add_post("/testrun", testrun)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        from bench.base_echo import until_signalled  # noqa: PLC0415 - keeps the header short

        await until_signalled()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
