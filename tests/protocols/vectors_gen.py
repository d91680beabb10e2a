"""Regenerates protocols/vectors/v1.json: `python -m tests.protocols.vectors_gen`.

The vectors are fixed (ids, timestamps, key): regenerating must give the same file, which
test_vectors checks, so a change to the wire format cannot slip through unnoticed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgpack

from protocols.codec import Codec
from protocols.version import MAGIC

KEY = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
NOW = 1_795_000_000.0
PATH = Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "v1.json"


def b64(frames: list[bytes]) -> list[str]:
    return [base64.b64encode(f).decode() for f in frames]


def good(name: str, key: bytes, msg_type: str, body: Any, *, msg_id: str,
         re: str | None = None, local: bool = False) -> dict[str, Any]:
    frames = Codec(key, clock=lambda: NOW, local=local).encode(msg_type, body, re=re,
                                                              msg_id=msg_id, ts=NOW)
    case = {"name": name, "key": key.decode(), "now": NOW, "frames": b64(frames),
            "expect": {"type": msg_type, "id": msg_id, "re": re, "ts": NOW, "body": body}}
    if local:
        case["receiver"] = "ipc"   # a receiver that takes unsigned blob frames
    return case


def bad(name: str, frames: list[bytes], code: str, *, now: float = NOW,
        receiver: str | None = None) -> dict[str, Any]:
    case = {"name": name, "key": KEY.decode(), "now": now, "frames": b64(frames),
            "error": code}
    if receiver:
        case["receiver"] = receiver
    return case


def vectors() -> list[dict[str, Any]]:
    codec = Codec(KEY, clock=lambda: NOW)
    ping = codec.encode("ping.req", {}, msg_id="a" * 32, ts=NOW)
    tampered = list(ping)
    tampered[3] = msgpack.packb({"x": 1})
    old_header = msgpack.packb([2, "c" * 32, "ping.req", None, NOW])
    wrong_version = [MAGIC, codec.signer.sign([MAGIC, old_header, ping[3]]), old_header, ping[3]]
    blob_body = {"pts": "echo", "input": bytes(range(256)) * 300}
    cases = [
        good("ping request", KEY, "ping.req", {}, msg_id="a" * 32),
        good("run reply", KEY, "run.rep", {"job": "f" * 32, "result": {"x": [1, 2.5, "t"]}},
             msg_id="b" * 32, re="a" * 32),
        good("error reply", KEY, "error",
             {"code": "not_found", "message": "no PTS named 'x'", "details": {"pts": "x"}},
             msg_id="d" * 32, re="a" * 32),
        good("unsigned (signing off)", b"", "ping.req", {}, msg_id="e" * 32),
    ]
    blob = good("large bytes as a blob frame", KEY, "run.req", blob_body, msg_id="1" * 32)
    blob["expect"]["body"] = {"pts": "echo", "input": {"base64": base64.b64encode(
        blob_body["input"]).decode()}}
    cases.append(blob)
    cases += ipc_blobs(blob_body)
    text = "é" * 33_000 + "x" * 33_000
    cases.append(good("large text as a text blob frame", KEY, "run.rep",
                      {"job": "f" * 32, "result": text}, msg_id="3" * 32, re="1" * 32))
    cases += [
        bad("tampered body", tampered, "auth"),
        bad("missing signature", [ping[0], b"", *ping[2:]], "auth"),
        bad("wrong protocol version", wrong_version, "version"),
        bad("stale timestamp", ping, "replay", now=NOW + 3600),
        bad("not a PNS message", [b"XYZ", b"", b"", b""], "malformed"),
        bad("timestamp NaN", codec.encode("ping.req", {}, msg_id="7" * 32, ts=float("nan")),
            "malformed"),
        bad("timestamp infinite", codec.encode("ping.req", {}, msg_id="8" * 32,
                                               ts=float("inf")), "malformed"),
    ]
    cases.append(refusal())
    return cases


def ipc_blobs(blob_body: dict[str, Any]) -> list[dict[str, Any]]:
    """Blob frames left out of the signature, their lengths in the header (SPEC.md, "Blob
    frames on ipc://"): taken by an ipc receiver, refused if a frame does not match."""
    local = Codec(KEY, clock=lambda: NOW, local=True)
    frames = local.encode("run.req", blob_body, msg_id="2" * 32, ts=NOW)
    case = good("large bytes as an unsigned blob frame (ipc)", KEY, "run.req", blob_body,
                msg_id="2" * 32, local=True)
    case["expect"]["body"] = {"pts": "echo", "input": {"base64": base64.b64encode(
        blob_body["input"]).decode()}}
    longer = [*frames[:4], frames[4] + b"\0"]
    return [
        case,
        bad("unsigned blob frame cut short (ipc)", [*frames[:4], frames[4][:-1]], "malformed",
            receiver="ipc"),
        bad("unsigned blob frame one byte longer (ipc)", longer, "malformed", receiver="ipc"),
        bad("unsigned blob frame dropped (ipc)", frames[:4], "malformed", receiver="ipc"),
        bad("extra unsigned blob frame (ipc)", [*frames, b"x"], "malformed", receiver="ipc"),
        bad("unsigned blob frames to a TCP receiver", frames, "auth", receiver="tcp"),
    ]


def refusal() -> dict[str, Any]:
    """The unsigned answer to a request refused for its signature (SPEC.md, "Refusals")."""
    body = {"code": "auth", "message": "bad message signature", "details": {}}
    frames = Codec(KEY, clock=lambda: NOW).encode("error", body, re="a" * 32, msg_id="9" * 32,
                                                  ts=NOW)
    frames[1] = b""
    return {"name": "auth refusal, unsigned", "key": KEY.decode(), "now": NOW,
            "frames": b64(frames),
            "refusal": {"type": "error", "id": "9" * 32, "re": "a" * 32, "ts": NOW, "body": body}}


def render() -> str:
    return json.dumps({"protocol": 1, "vectors": vectors()}, indent=1) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
