"""``job.list`` bounded in time: ``since``/``until`` (epoch seconds) compare with ``created``,
both in the listing and its total, and a bound that is not a non-negative number is refused."""

from __future__ import annotations

from typing import Any

import pytest

import tests.pnsd.test_job_admission as admission
from pnsd.errors import DaemonError
from tests.pnsd.test_job_admission import Node, submit

node = admission.node    # the same daemon parts, two PTS, as the admission tests use


async def listed(node: Node, **body: Any) -> tuple[set[str], int]:
    reply = await node.handlers.job_list(body)
    return {job["id"] for job in reply["jobs"]}, reply["total"]


async def test_since_and_until_bound_the_creation_time(node: Node) -> None:
    jobs = [await submit(node, "echo", i) for i in range(4)]
    created = sorted(job["created"] for job in jobs)
    middle = created[1]

    def made(test: Any) -> set[str]:
        return {job["id"] for job in jobs if test(job["created"])}

    after = made(lambda c: c >= middle)
    assert await listed(node, since=middle) == (after, len(after))
    before = made(lambda c: c <= middle)
    assert await listed(node, until=middle) == (before, len(before))
    assert await listed(node, since=middle, until=middle) == (after & before, len(after & before))
    assert await listed(node, since=created[-1] + 3600) == (set(), 0)
    assert await listed(node, until=0) == (set(), 0)
    assert await listed(node, since=0, pts="echo") == (made(lambda c: True), 4)
    assert await listed(node, since=int(created[0]), pts="sleep") == (set(), 0)


@pytest.mark.parametrize("bad", ["1", -1, -0.5, True, float("nan"), float("inf"), [1], {}])
@pytest.mark.parametrize("key", ["since", "until"])
async def test_a_bad_time_bound_is_a_bad_request(node: Node, key: str, bad: Any) -> None:
    with pytest.raises(DaemonError) as caught:
        await node.handlers.job_list({key: bad})
    assert caught.value.code == "bad_request"
