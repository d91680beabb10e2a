"""Inputs too large for one message, sent in parts before the run that uses them.

Owns the upload area (``$PNS_HOME/uploads``, removed and made again at start): an upload is
made with the size of the input's msgpack form, takes its parts in order (each part's
``offset`` must be where the one before ended), and is taken whole by the ``run`` or
``submit`` that names it (``input_upload``), which gets the input unpacked and the upload
removed. An upload taken before all its bytes came (a part stream cut short) is BadRequest,
and removed; one left unused for :data:`IDLE` seconds is removed when the next upload is
made. Files are written and read in threads. It must not run or record jobs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pnsd.errors import BadRequest, Conflict, NotFound
from pnsd.jobs.packed import unpack

__all__ = ["IDLE", "Uploads"]

IDLE = 600.0           # seconds an unused upload is kept
MAX_OPEN = 64          # uploads under way at once
BYTES = (bytes, bytearray, memoryview)


@dataclass
class _Upload:
    path: Path
    size: int
    received: int = 0
    touched: float = 0.0
    busy: bool = False


class Uploads:
    """The uploads under way, by id (128 random bits: another caller cannot guess one)."""

    def __init__(self, root: Path, *, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.clock = clock
        self._open: dict[str, _Upload] = {}
        shutil.rmtree(root, ignore_errors=True)      # a previous life's parts are useless
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def put(self, body: Any) -> dict[str, Any]:
        """``upload``: ``{size}`` makes one; ``{upload, offset, data}`` adds a part."""
        if not isinstance(body, dict):
            raise BadRequest("upload takes a map")
        if body.get("upload") is None:
            return self._make(body.get("size"))
        upload, upload_id = self._find(body.get("upload"))
        data, offset = body.get("data"), body.get("offset")
        if not isinstance(data, BYTES) or not data:
            raise BadRequest("an upload part's data must be bytes")
        if upload.busy or offset != upload.received:
            raise Conflict(f"upload {upload_id} expects offset {upload.received}",
                           upload=upload_id, received=upload.received)
        if upload.received + len(data) > upload.size:
            self._drop(upload_id)
            raise BadRequest(f"upload {upload_id} is larger than its size of {upload.size}")
        upload.busy = True
        try:
            await asyncio.to_thread(_append, upload.path, data)
        except OSError as exc:
            self._drop(upload_id)
            raise BadRequest(f"upload {upload_id} cannot be stored: {exc}") from exc
        finally:
            upload.busy = False
        upload.received += len(data)
        upload.touched = self.clock()
        return {"upload": upload_id, "received": upload.received, "size": upload.size}

    async def take(self, upload_id: Any) -> Any:
        """The uploaded input, unpacked; the upload is gone afterwards (whatever happens)."""
        upload, upload_id = self._find(upload_id)
        self._open.pop(upload_id)
        try:
            if upload.busy or upload.received != upload.size:
                raise BadRequest(f"upload {upload_id} is incomplete: {upload.received} of "
                                 f"{upload.size} bytes came", upload=upload_id)
            return await asyncio.to_thread(_read_unpacked, upload.path)
        finally:
            await asyncio.to_thread(upload.path.unlink, missing_ok=True)

    def _make(self, size: Any) -> dict[str, Any]:
        if type(size) is not int or not 0 < size <= self.max_bytes:
            raise BadRequest(f"an upload's size must be 1 to {self.max_bytes} bytes")
        now = self.clock()
        for upload_id, upload in list(self._open.items()):
            if now - upload.touched > IDLE and not upload.busy:
                self._drop(upload_id)
        if len(self._open) >= MAX_OPEN:
            raise Conflict(f"{MAX_OPEN} uploads are under way already")
        upload_id = secrets.token_hex(16)
        path = self.root / f"{upload_id}.part"
        path.touch(mode=0o600)
        self._open[upload_id] = _Upload(path, size, touched=now)
        return {"upload": upload_id, "received": 0, "size": size}

    def _find(self, upload_id: Any) -> tuple[_Upload, str]:
        upload = self._open.get(upload_id) if isinstance(upload_id, str) else None
        if upload is None:
            raise NotFound(f"no upload {str(upload_id)[:64]}", upload=str(upload_id)[:64])
        return upload, upload_id

    def _drop(self, upload_id: str) -> None:
        upload = self._open.pop(upload_id, None)
        if upload is not None:
            upload.path.unlink(missing_ok=True)


def _append(path: Path, data: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _read_unpacked(path: Path) -> Any:
    try:
        return unpack(path.read_bytes())
    except ValueError as exc:     # msgpack's errors on a form that is not one value
        raise BadRequest(f"the uploaded input is not msgpack: {exc}") from exc
