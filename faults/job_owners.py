"""Fault 10: two users and an anonymous client attack each other's jobs through ``/v1``.

``ann`` and ``bob`` (ordinary users) each create jobs holding secrets (asynchronous ones, one
with an ``Idempotency-Key``, and a synchronous run). Then each attacks the other's jobs: status,
results, events and dismiss, plus ids one digit away from them, and a submission reusing the
other's key; an anonymous client tries the same and the job list. Every attempt must be
refused (404 ``no-such-job`` for a user, 401 for anonymous: expected) and no reply may carry a
secret or another user's job id (should-not-fail otherwise). Afterwards every job must still
give its owner its own result (lost otherwise), and the administrator must see them all.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field

import aiohttp

from faults.procs import WEB_USER, Node
from faults.report import Row
from faults.runner import Context
from pnsweb.settings import hash_password

PASSWORDS = {"ann": "ann-password", "bob": "bob-password"}
READS = ("", "/results", "/events")
DEADLINE = 60.0


@dataclass
class Owner:
    name: str
    auth: aiohttp.BasicAuth
    jobs: dict[str, str] = field(default_factory=dict)     # job id -> its secret
    key: str = ""


def users_config() -> str:
    return "".join(f'[[pnsweb.users]]\nname = "{name}"\npassword_hash = '
                   f'"{hash_password(password)}"\n\n' for name, password in PASSWORDS.items())


async def _execute(session: aiohttp.ClientSession, url: str, owner: Owner, value: str, *,
                   asynchronous: bool, key: str | None = None) -> tuple[int, dict[str, str]]:
    headers = {"Prefer": "respond-async"} if asynchronous else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with session.post(f"{url}/v1/processes/echo/execution",
                            json={"inputs": {"value": value}}, headers=headers,
                            auth=owner.auth) as reply:
        return reply.status, dict(reply.headers) | {"body": await reply.text()}


async def _create(session: aiohttp.ClientSession, url: str, owner: Owner, count: int,
                  row: Row) -> None:
    for i in range(count):
        secret = f"{owner.name}-secret-{i}-{secrets.token_hex(8)}"
        key = owner.key if i == 0 else None
        status, reply = await _execute(session, url, owner, secret, asynchronous=True, key=key)
        row.sent += 1
        if status != 201:
            row.fail(f"{owner.name}'s submission answered {status}: {reply['body'][:120]}")
            continue
        owner.jobs[json.loads(reply["body"])["jobID"]] = secret
    secret = f"{owner.name}-sync-{secrets.token_hex(8)}"
    status, reply = await _execute(session, url, owner, secret, asynchronous=False)
    row.sent += 1
    monitor = reply.get("Link", "").split("/jobs/")[-1].split(">")[0]
    if status != 200 or not monitor:
        row.fail(f"{owner.name}'s synchronous run answered {status}: {reply['body'][:120]}")
    else:
        owner.jobs[monitor] = secret


async def _try(session: aiohttp.ClientSession, method: str, url: str, *,
               auth: aiohttp.BasicAuth | None, wanted: int, leaks: list[str],
               row: Row) -> None:
    """One attack; it must be answered ``wanted`` and reveal none of ``leaks``."""
    row.sent += 1
    async with session.request(method, url, auth=auth) as reply:
        status, body = reply.status, await reply.text()
    revealed = [leak for leak in leaks if leak in body]
    if status != wanted or revealed:
        who = auth.login if auth else "anonymous"
        row.fail(f"{who} {method} {url.rsplit('/v1', maxsplit=1)[-1]}: {status} (wanted {wanted})"
                 + (f", revealed {revealed[0][:40]}" if revealed else ""))
    else:
        row.expected += 1


def _near(job: str) -> str:
    """An id one hex digit away from ``job`` (a guess from a known id)."""
    last = "0" if job[-1] != "0" else "1"
    return job[:-1] + last


async def _attack(session: aiohttp.ClientSession, url: str, victim: Owner,
                  attacker: Owner, row: Row) -> None:
    leaks = list(victim.jobs.values())       # the secrets (an attacker knows the ids it tries)
    tries = [("GET", suffix) for suffix in READS] + [("DELETE", "")]
    for job in [*victim.jobs, *map(_near, victim.jobs)]:
        for method, suffix in tries:
            target = f"{url}/v1/jobs/{job}{suffix}"
            await _try(session, method, target, auth=attacker.auth, wanted=404, leaks=leaks,
                       row=row)
            await _try(session, method, target, auth=None, wanted=401, leaks=leaks, row=row)
    await _try(session, "GET", f"{url}/v1/jobs?limit=1000", auth=None, wanted=401,
               leaks=leaks, row=row)
    async with session.get(f"{url}/v1/jobs?limit=1000", auth=attacker.auth) as listing:
        listed = await listing.text()
    row.sent += 1
    if any(leak in listed for leak in [*leaks, *victim.jobs]):
        row.fail(f"{attacker.name}'s job list shows {victim.name}'s jobs")
    status, reply = await _execute(session, url, attacker, "reuse", asynchronous=True,
                                   key=victim.key)
    row.sent += 1
    if status != 201 or json.loads(reply["body"])["jobID"] in victim.jobs:
        row.fail(f"{attacker.name} reusing {victim.name}'s Idempotency-Key got {status}: "
                 f"{reply['body'][:120]}")


async def _check(session: aiohttp.ClientSession, url: str, owner: Owner, row: Row) -> None:
    for job, secret in owner.jobs.items():
        for _ in range(int(DEADLINE / 0.05)):
            async with session.get(f"{url}/v1/jobs/{job}/results", auth=owner.auth) as reply:
                status, body = reply.status, await reply.text()
            if status != 404 or "result-not-ready" not in body:
                break
            await asyncio.sleep(0.05)    # not finished yet: poll, as a client does
        row.sent += 1
        if status != 200 or secret not in body:
            row.lose(f"{owner.name}'s job {job} answers {status}: {body[:120]}")


async def _scenario(url: str, count: int, row: Row) -> None:
    ann = Owner("ann", aiohttp.BasicAuth("ann", PASSWORDS["ann"]), key="shared-key")
    bob = Owner("bob", aiohttp.BasicAuth("bob", PASSWORDS["bob"]), key="bobs-key")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as session:
        for owner in (ann, bob):
            await _create(session, url, owner, count, row)
        for owner in (ann, bob):
            await _check(session, url, owner, row)
        await _attack(session, url, ann, bob, row)
        await _attack(session, url, bob, ann, row)
        for owner in (ann, bob):
            await _check(session, url, owner, row)
        async with session.get(f"{url}/v1/jobs?limit=1000",
                               auth=aiohttp.BasicAuth(*WEB_USER)) as reply:
            seen = {job["jobID"] for job in (await reply.json())["jobs"]}
        missing = (set(ann.jobs) | set(bob.jobs)) - seen
        if missing:
            row.fail(f"the administrator's job list misses {len(missing)} jobs")


def ownership(ctx: Context) -> Row:
    row = Row("ownership", tries=1)
    node = Node(ctx.dir, "home", pnsweb=users_config())
    try:
        node.start_daemon()
        node.start_web()
        asyncio.run(_scenario(node.url, ctx.pick(10, 4), row))
        if node.web is None or not node.web.alive():
            row.fail("pnsweb died")
    finally:
        node.stop()
    return row
