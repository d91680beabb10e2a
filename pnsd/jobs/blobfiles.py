"""Job blobs as files: large inputs and results beside the database, under one dir per job.

Owns writing (temp file, optional fsync, rename: a committed row never sees a part file; a
:class:`pnsd.jobs.packed.Packed` value is written segment by segment, never joined first),
reading and removing them. Blocking: callers run these in a thread (or the store's writer).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from pnsd.errors import StorageError
from pnsd.jobs.packed import Packed, encoded


def write_blob(path: Path, data: bytes | Packed, *, durable: bool = True) -> None:
    """Write (and, if ``durable``, fsync) then rename into place: a row never sees a part file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        with os.fdopen(os.open(tmp, flags, 0o600), "wb") as fh:     # others never read a job
            for segment in data.segments if isinstance(data, Packed) else (data,):
                fh.write(encoded(segment))
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        for directory in (path.parent, path.parent.parent) if durable else ():
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)     # a disk that filled keeps no part file
        raise StorageError(f"cannot write {path}: {exc}") from exc


def write_blobs(job_dir: Path, blobs: dict[str, bytes | Packed]) -> str | None:
    """Write each ``name -> blob`` as ``name.bin`` (no fsync): None, or why it failed, after
    removing the job's dir (so that no part of the job's blobs remains). A blob that is the
    same values as one written before (:meth:`Packed.same_as`) becomes a link to its file:
    the bytes go to the disk once."""
    written: list[tuple[Path, bytes | Packed]] = []
    try:
        for name, blob in blobs.items():
            path = job_dir / f"{name}.bin"
            twin = next((p for p, b in written if isinstance(blob, Packed)
                         and isinstance(b, Packed) and blob.same_as(b)), None)
            if twin is None:
                write_blob(path, blob, durable=False)
                written.append((path, blob))
            else:
                _link(twin, path)
    except StorageError as exc:
        remove(job_dir)
        return exc.message
    return None


def _link(source: Path, path: Path) -> None:
    try:
        os.link(source, path)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from exc


def read_blob(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def read_range(path: Path, offset: int, limit: int) -> tuple[int, bytes]:
    """The file's size and at most ``limit`` of its bytes from ``offset``."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(offset)
            return size, fh.read(limit)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_all(paths: Iterable[Path]) -> None:
    for path in paths:
        remove(path)
