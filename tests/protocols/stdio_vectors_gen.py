"""Regenerates protocols/vectors/stdio.json: `python -m tests.protocols.stdio_vectors_gen`.

The stdio transport's records (SPEC.md, "The stdio transport"), with fixed ids, timestamps and
key: regenerating must give the same file, which test_stdio_vectors checks.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from protocols.codec import DEFAULT_MAX_BYTES, Codec
from protocols.stdioframe import LENGTH, SLACK, pack_bytes
from tests.protocols.vectors_gen import KEY, NOW, b64

PATH = Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "stdio.json"
LIMIT = DEFAULT_MAX_BYTES + SLACK
HELLO = {"pid": 4242, "id": "w0.1", "entry": "echo:run", "hooks": [], "python": "3.6.15",
         "capabilities": ["cancel", "progress", "log"], "protocols": [1, 2]}


def plain(value: Any) -> Any:
    """Bytes as the vectors spell them ({"base64": ...}), as in v1.json."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def message(msg_type: str, body: Any, *, msg_id: str, re: str | None = None) -> dict[str, Any]:
    frames = Codec(KEY, clock=lambda: NOW).encode(msg_type, body, re=re, msg_id=msg_id, ts=NOW)
    return {"frames": frames,
            "expect": {"type": msg_type, "id": msg_id, "re": re, "ts": NOW, "body": plain(body)}}


def good(name: str, *messages: dict[str, Any]) -> dict[str, Any]:
    stream = b"".join(pack_bytes(m["frames"]) for m in messages)
    return {"name": name, "verdict": "ok", "stream": base64.b64encode(stream).decode(),
            "messages": [{"frames": b64(m["frames"]), "expect": m["expect"]} for m in messages]}


def broken(name: str, stream: bytes, verdict: str = "broken") -> dict[str, Any]:
    return {"name": name, "verdict": verdict, "stream": base64.b64encode(stream).decode()}


def vectors() -> list[dict[str, Any]]:
    hello = message("worker.hello", HELLO, msg_id="a" * 32)
    refusal = {"code": "version", "message": "worker speaks protocol 3-4; this daemon speaks 1-2",
               "details": {"worker": [3, 4], "daemon": [1, 2]}}
    task = {"op": "run", "data": bytes(range(256)) * 300, "timeout": 30.0, "job": "f" * 32}
    beat = message("worker.heartbeat", {"busy": True}, msg_id="c" * 32)
    reply = message("task.rep", {"result": {"x": [1, 2.5, "t"]}}, msg_id="d" * 32,
                    re="b" * 32)
    record = pack_bytes(beat["frames"])
    short = pack_bytes([b"PNS", b"", b"\x90"])
    overrun = bytearray(record)
    overrun[-len(beat["frames"][3]) - 1] += 1      # the body frame's length, one too many
    return [
        good("worker hello with a version range", hello),
        good("welcome", message("worker.welcome", {"protocol": 2}, msg_id="e" * 32,
                                re="a" * 32)),
        good("version refusal", message("error", refusal, msg_id="9" * 32, re="a" * 32)),
        good("task with a blob frame", message("task.req", task, msg_id="b" * 32)),
        good("two records back to back", beat, reply),
        broken("a text line", b"hello, world\n"),
        broken("a length, then text", LENGTH.pack(5) + b"hello"),
        broken("a record over the limit", LENGTH.pack(LIMIT + 1) + b"\0\0\0\3PNS"),
        broken("frame lengths overrun the record", bytes(overrun)),
        broken("three frames", short),
        broken("a partial record at the end", record[:30], "partial"),
    ]


def render() -> str:
    return json.dumps({"limit": LIMIT, "key": KEY.decode(), "now": NOW,
                       "vectors": vectors()}, indent=1) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
