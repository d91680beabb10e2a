"""Reading a stored result in chunks: what ``job.result_chunk`` asks and answers.

A job's result may be larger than one message may be (SPEC.md, "Large results"): the daemon
keeps it as its msgpack form, and a client reads that form in chunks of at most
:data:`RESULT_CHUNK` bytes, joins them and unpacks them (or relays them, as pnsweb does).
Owns the request body, the end test and the unpacking; the clients own the calls.
Python 3.8 compatible; imports only msgpack and ``protocols``.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import msgpack

from protocols.errors import ErrorCode, ProtocolError

RESULT_CHUNK = 4 * 2**20   # bytes of a stored result asked for per job.result_chunk


def chunk_request(job: str, offset: int, chunk: int = RESULT_CHUNK) -> Dict[str, Any]:
    """The body of a ``job.result_chunk`` request."""
    return {"job": job, "offset": offset, "limit": chunk}


def chunk_end(reply: Any, offset: int) -> Tuple[bytes, int, bool]:
    """A chunk reply's data, the next offset and whether the result is complete."""
    data = reply["data"]
    if not isinstance(data, bytes):
        raise ProtocolError(ErrorCode.MALFORMED, "a result chunk must be bytes")
    offset += len(data)
    return data, offset, not data or offset >= int(reply["size"])


def unpack_result(blob: bytes) -> Any:
    """A result read with ``job.result_chunk``: the chunks joined are its msgpack form."""
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(
            ErrorCode.MALFORMED, "the stored result is not msgpack: %s" % exc) from exc
