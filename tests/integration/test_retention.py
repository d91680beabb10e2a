"""The daemon holds ``retention_bytes`` as jobs are written, whatever their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pnsd.jobs import jobsql
from tests.integration.conftest import running_daemon, settings_for
from tests.waiting import until

pytestmark = pytest.mark.slow
SIZE_SQL = "SELECT COALESCE(SUM(input_size + result_size), 0) FROM jobs"
BOUND = 200_000
PAYLOAD = 30_000          # an echo job stores it twice: input and result


async def test_runs_and_submissions_keep_the_store_within_the_bound(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", f"retention_bytes = {BOUND}\n"
                                               "inline_limit = 1024\n")
    async with running_daemon(settings) as node, node.client(timeout=30.0) as client:
        store = node.daemon.store
        for i in range(40):
            if i % 2:
                await client.call("run", {"pts": "echo", "input": "x" * PAYLOAD})
            else:
                job = (await client.call("submit", {"pts": "echo", "input": "y" * PAYLOAD}))

                async def done(job_id: str = job["job"]["id"]) -> bool:
                    status = await client.call("job.status", {"job": job_id})
                    return bool(status["job"]["status"] == "successful")

                await until(done, timeout=20)
            await store.flush()
            total = await store.run_sql(lambda conn: jobsql.scalar(SIZE_SQL, [], conn),
                                        write=False, what="sum")
            assert total <= BOUND + 2 * PAYLOAD + 100, i
