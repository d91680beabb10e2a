"""Sending a run's input too large for one message: in parts, before the run that uses it.

A ``run`` or ``submit`` whose input makes it larger than the message limit (SPEC.md, "Large
inputs") goes as ``upload {size}`` (the size of the input's msgpack form), then ``upload
{upload, offset, data}`` for each part of at most :data:`PART` bytes (a slice of that form,
sent as a blob frame without being copied), then the request itself with ``input_upload`` in
place of ``input``. Owns those calls (for either client, by duck typing: the clients own
their sockets) and telling the two ``too_large`` errors apart. Python 3.8 compatible; imports
only msgpack and ``protocols``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import msgpack

from protocols.errors import ErrorCode, ProtocolError, RemoteError

PART = 4 * 2**20     # bytes of the input's msgpack form per upload part
ENVELOPE = 64 * 1024  # a part message's room besides its data


def needs_upload(exc: RemoteError) -> bool:
    """True for the client's own refusal of a request over the limit (not a daemon's answer
    that a run's result is too large, which names the job)."""
    return exc.code == ErrorCode.TOO_LARGE and "job" not in exc.details


def stored_job(exc: RemoteError) -> Optional[str]:
    """The job whose result was too large for the reply (read it in chunks), or None."""
    job = exc.details.get("job") if exc.code == ErrorCode.TOO_LARGE else None
    return job if isinstance(job, str) else None


def input_form(body: Dict[str, Any]) -> bytes:
    """The msgpack form of the request's input, as the daemon unpacks it."""
    try:
        return msgpack.packb(body.get("input"), use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "input cannot be encoded: %s" % exc) from exc


def part_size(client: Any) -> int:
    """:data:`PART`, or less when the client's message limit is lower (room for the rest)."""
    limit = getattr(client, "max_bytes", None)
    return PART if not isinstance(limit, int) else max(1, min(PART, limit - ENVELOPE))


def parts(upload: str, form: bytes, part: int = PART) -> Iterator[Dict[str, Any]]:
    """The bodies of the ``upload`` calls carrying ``form``, in order."""
    view = memoryview(form)
    for offset in range(0, len(form), part):
        yield {"upload": upload, "offset": offset, "data": view[offset:offset + part]}


def uploaded(body: Dict[str, Any], upload: str) -> Dict[str, Any]:
    """The request, its input replaced by the upload that holds it."""
    request = {k: v for k, v in body.items() if k != "input"}
    request["input_upload"] = upload
    return request


async def call_uploading(client: Any, op: str, body: Any, timeout: Optional[float]) -> Any:
    """``client.call(op, body)`` of an asyncio client; a ``run`` or ``submit`` whose input is
    over the limit is sent after uploading its input (any other error is raised, a result
    over the limit too: see :func:`stored_job`)."""
    try:
        return await client.call(op, body, timeout=timeout)
    except RemoteError as exc:
        if not (needs_upload(exc) and op in ("run", "submit") and isinstance(body, dict)):
            raise
    form = input_form(body)
    upload = (await client.call("upload", {"size": len(form)}, timeout=timeout))["upload"]
    for part in parts(upload, form, part_size(client)):
        await client.call("upload", part, timeout=timeout)
    del form
    return await client.call(op, uploaded(body, upload), timeout=timeout)


async def run_async(client: Any, op: str, body: Dict[str, Any], timeout: Optional[float]) -> Any:
    """``AsyncClient.run``: :func:`call_uploading`, and a result over the limit read in
    chunks."""
    try:
        return await call_uploading(client, op, body, timeout)
    except RemoteError as exc:
        return await _stored_async(client, exc, timeout)


async def _stored_async(client: Any, exc: RemoteError, timeout: Optional[float]) -> Any:
    job = stored_job(exc)
    if job is None:
        raise exc
    return {"job": job, "result": (await client.result(job, timeout=timeout))["result"]}


def run_blocking(client: Any, op: str, body: Dict[str, Any], timeout: Optional[float]) -> Any:
    """``Client.run``: :func:`run_async` for the blocking client."""
    try:
        return client.call(op, body, timeout=timeout)
    except RemoteError as exc:
        if not needs_upload(exc):
            return _stored_blocking(client, exc, timeout)
    form = input_form(body)
    upload = client.call("upload", {"size": len(form)}, timeout=timeout)["upload"]
    for part in parts(upload, form, part_size(client)):
        client.call("upload", part, timeout=timeout)
    del form
    try:
        return client.call(op, uploaded(body, upload), timeout=timeout)
    except RemoteError as exc:
        return _stored_blocking(client, exc, timeout)


def _stored_blocking(client: Any, exc: RemoteError, timeout: Optional[float]) -> Any:
    job = stored_job(exc)
    if job is None:
        raise exc
    return {"job": job, "result": client.result(job, timeout=timeout)["result"]}
