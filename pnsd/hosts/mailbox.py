"""The mailbox of a process-mode run: per-job ``input/`` and ``output/`` dirs and their files.

Owns validating client-given file names and contents (text and bytes as they are, any other
value as its JSON text), creating a job dir without following
symlinks or reusing another run's dir, and reading files back with size caps and no symlink
following. Everything here blocks: callers run it in a thread. It never runs a process.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pnsd.errors import BadRequest, PtsFailed
from pnsd.interface import is_safe_name

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def validate_inputs(data: Any, declared: Mapping[str, str] | None) -> dict[str, Any]:
    """Input file name -> bytes. ``declared`` maps each declared input to its file name (the
    input was checked against the declarations before); None takes any plain file name."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise BadRequest(f"input must be a map of file name to content, not {type(data).__name__}")
    files: dict[str, Any] = {}     # name -> bytes-like
    for key, content in data.items():
        name = key if declared is None else declared.get(key)
        if name is None:
            raise BadRequest(f"input {key!r} is not declared; expected {list(declared or ())}")
        if not is_safe_name(name):
            raise BadRequest(f"input name {name!r} is not a plain file name")
        if isinstance(content, str):
            files[name] = content.encode("utf-8")
        elif isinstance(content, bytes | bytearray | memoryview):
            files[name] = content       # written as it came: never copied here
        else:       # a number, a boolean, a list or a map: the file holds its JSON text
            try:
                files[name] = json.dumps(content, ensure_ascii=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise BadRequest(f"input {name!r} cannot be written as JSON text: {exc}") \
                    from None
    return files


def make_job_dir(work_dir: Path, job_id: str, files: Mapping[str, Any]) -> Path:
    name = job_id if is_safe_name(job_id) else uuid.uuid4().hex
    job_dir = work_dir / name
    try:
        job_dir.mkdir(mode=0o700)
    except FileExistsError:        # a retried job id: never reuse another run's dir
        job_dir = work_dir / f"{name}-{uuid.uuid4().hex[:8]}"
        job_dir.mkdir(mode=0o700)
    make_exchange_dirs(job_dir)
    dir_fd = os.open(job_dir / "input", _DIR_FLAGS)
    try:
        for file_name, content in files.items():
            fd = os.open(file_name, _WRITE_FLAGS, 0o644, dir_fd=dir_fd)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
    finally:
        os.close(dir_fd)
    return job_dir


def make_exchange_dirs(base: Path) -> None:
    for sub in ("input", "output"):
        (base / sub).mkdir(parents=True, exist_ok=True)


def read_dir_files(path: Path, *, max_bytes: int) -> dict[str, str | bytes] | None:
    """``{name: content}`` of the regular files in ``path``; None when the dir is missing.

    Content is text when it decodes as UTF-8, else bytes. Symlinks are never followed; a file
    bigger than ``max_bytes`` raises :class:`PtsFailed`. Blocking: call it in a thread.
    """
    return read_files(path, None, max_bytes, "file")


def read_files(
    path: Path, names: Iterable[str] | None, max_bytes: int, label: str,
) -> dict[str, str | bytes] | None:
    try:
        dir_fd = os.open(path, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:      # the dir itself was swapped for a symlink
            return None
        raise
    try:
        if names is None:
            with os.scandir(dir_fd) as entries:
                names = sorted(e.name for e in entries
                               if e.is_file(follow_symlinks=False) and e.name.isprintable())
        found = {name: _read_one(dir_fd, name, max_bytes, label) for name in names}
    finally:
        os.close(dir_fd)
    return {name: _decoded(raw) for name, raw in found.items() if raw is not None}


def _read_one(dir_fd: int, name: str, max_bytes: int, label: str) -> bytes | None:
    """The content of one regular file, or None if it is absent, a symlink or not a file."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return None
        raise PtsFailed(f"cannot read {label} {name!r}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        # One read of the size the file has (and a byte more, to see it grew meanwhile):
        # no buffer of the whole limit, no second copy.
        data = os.read(fd, info.st_size + 1) if info.st_size <= max_bytes else b""
    finally:
        os.close(fd)
    if info.st_size > max_bytes or len(data) > max_bytes:
        raise PtsFailed(f"{label} {name!r} too large (limit {max_bytes} bytes)",
                        name=name, limit=max_bytes)
    return data


def _decoded(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw

