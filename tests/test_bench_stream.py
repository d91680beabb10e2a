"""The bench's bare Unix-stream echo and its client (the web area's hop rows): records cut from
any reads, replies matched to their calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.base_stream import BareStreamClient, _echo, _Link


async def test_calls_in_flight_with_blobs_come_back_whole_to_their_callers(
        tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    server = await asyncio.get_running_loop().create_unix_server(lambda: _Link(_echo), path)
    client = await BareStreamClient.connect(path)
    try:
        blob = bytes(range(256)) * 4096          # 1 MiB: many reads on either side
        calls = [client.call({"n": n}, [blob[n:]] if n % 2 else [], timeout=10.0)
                 for n in range(16)]
        replies = await asyncio.gather(*calls)
        for n, (body, blobs) in enumerate(replies):
            assert body == {"n": n}
            assert [bytes(b) for b in blobs] == ([blob[n:]] if n % 2 else [])
    finally:
        client.close()
        server.close()
        await server.wait_closed()
