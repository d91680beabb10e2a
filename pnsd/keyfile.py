"""The message-signing key file: created once (0600, random), read by every party.

Owns the key's on-disk form and its checks; it never signs anything (``protocols.signing``
does). Reading refuses a file others can read; an empty file switches signing off (tests only).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import structlog

from pnsd.errors import ConfigError

KEY_BYTES = 32
_log = structlog.get_logger(__name__)


def load_or_create_key(path: Path, *, create: bool) -> bytes:
    """Read the HMAC key (the file's text, whitespace stripped); with ``create``, make one first.

    A created key is 32 random bytes written as 64 hex characters, mode 0600. A key file that
    others can read is refused. An EMPTY file switches signing off: for tests only.
    """
    if create:
        _create_key(path)
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"key file {path} is not a regular file", file=str(path))
            if (mode := stat.S_IMODE(info.st_mode)) & 0o077:
                raise ConfigError(f"key file {path} is readable by others (mode {mode:o}): "
                                  "chmod 600 it", file=str(path))
            key = handle.read().strip()
    except FileNotFoundError as exc:
        raise ConfigError(f"key file {path} does not exist", file=str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}", file=str(path)) from exc
    if not key:
        _log.warning("message_signing_disabled", key_file=str(path), reason="empty key file")
    return key


def _create_key(path: Path) -> None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc.strerror}", file=str(path)) from exc
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        # a half-written key file would read as empty, which means "signing off": never leave one
        path.unlink(missing_ok=True)
        raise
    _log.info("key_file_created", key_file=str(path))
