"""pnsweb's settings: where it listens, which daemon it fronts, who may modify.

Owns the dataclass and the password hashing. Passwords are kept only as hashes (scrypt from
the standard library: memory-hard, no extra dependency) and never shown by any route.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str           # "scrypt$<salt hex>$<hash hex>"
    admin: bool = False

    def check(self, password: str) -> bool:
        return verify_password(password, self.password_hash)


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 5000
    endpoint: str = ""                   # the daemon's ipc:// or tcp:// endpoint
    key: bytes = field(default=b"", repr=False)   # message-signing key (never shown)
    users: tuple[User, ...] = ()
    default_pts: str = "hello"           # the PTS the /v0.6 routes drive
    max_body: int = 64 * 2**20           # request bodies above this get 413
    call_timeout: float = 3600.0         # longest wait for a daemon reply
    verbose: bool = False

    def user(self, name: str) -> User | None:
        for user in self.users:
            if hmac.compare_digest(user.name.encode(), name.encode()):
                return user
        return None


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return hmac.compare_digest(digest, expected)
