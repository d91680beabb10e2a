"""pnsweb's settings: where it listens, which daemon it fronts, who may modify.

Owns the dataclass, the password hashing and reading pnsweb's part of the shared TOML config
(the daemon's endpoint and signing key, pnsweb's own table). Passwords are kept only as hashes
(scrypt from the standard library: memory-hard, no extra dependency) and never shown by any
route.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from protocols.membership import load_keys

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
    daemons: tuple[str, ...] = ()        # several nodes on one shared store (pnsweb.nodes)
    key: bytes = field(default=b"", repr=False)   # message-signing key (never shown)
    # CURVE keys for a tcp:// endpoint: (server public, own public, own secret); never shown
    curve: tuple[bytes, bytes, bytes] | None = field(default=None, repr=False)
    users: tuple[User, ...] = ()
    default_pts: str = "hello"           # the PTS the /v0.6 routes drive
    max_body: int = 64 * 2**20           # request bodies above this get 413
    max_anonymous_body: int = 2**20      # the same before the caller is authenticated
    public_url: str = ""                 # e.g. "https://pns.example.org": links use it, not Host
    call_timeout: float = 3600.0         # longest wait for a daemon reply
    max_message_bytes: int = 64 * 2**20  # pnsd's message limit: larger requests get 413
    log_level: str = "info"              # debug | info | warning | error | critical
    workers: int = 0                     # processes serving the port; 0: one per core
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


# -- reading the shared config file ---------------------------------------------------------------
#
# pnsweb reads the same file as pnsd (it must not import pnsd, so this is a small reader of just
# the keys it needs): from ``[pnsd]`` the home, the ipc endpoint, the key file and the message
# size limit (pnsweb refuses a request over it with 413 rather than send it); from an
# optional ``[pnsweb]`` table its own settings and users:
#
#     [pnsweb]
#     host = "127.0.0.1"
#     port = 5000
#     endpoint = "tcp://10.0.0.5:7755"   # optional: another daemon endpoint than [pnsd]'s
#     server_key = "curve/server.key"    # with a tcp:// endpoint: the daemon's CURVE public key
#     client_key = "web.key_secret"      # and pnsweb's own (`pnsd keys new web --role clients`)
#     daemons = ["ipc:///srv/a/pnsd.sock", "tcp://10.0.0.6:7755"]   # optional: several nodes
#                                        # sharing one job store and one signing key
#     log_level = "info"                 # "warning" drops the per-request summary lines
#     max_body = 67108864                # bytes an authenticated caller may send (413 above)
#     max_anonymous_body = 1048576       # bytes before authentication (/v0.6/echo)
#     public_url = "https://pns.example.org"   # links and Location use it, not the Host header
#     workers = 2                        # processes serving the port (0: one per core)
#     [[pnsweb.users]]
#     name = "admin"
#     password_hash = "scrypt$..."       # `pnsweb --hash-password` prints one
#     admin = true

DEFAULT_CONFIG_PATHS = ("~/.config/pns/pnsd.toml", "/etc/pns/pnsd.toml")
WEB_KEYS = frozenset({"host", "port", "endpoint", "daemons", "default_pts", "max_body",
                      "max_anonymous_body", "public_url", "call_timeout", "log_level", "users",
                      "server_key", "client_key", "workers"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
USER_KEYS = frozenset({"name", "password_hash", "admin"})


class SettingsError(Exception):
    """The config file or the key file cannot be used; the message says which and why."""


def load_settings(
    *, config: Path | None = None, env: Mapping[str, str] | None = None
) -> WebSettings:
    """pnsweb's settings from the config file found for ``config`` and ``env``."""
    env = os.environ if env is None else env
    path = find_config(config, env)
    document = _read_toml(path) if path else {}
    pnsd = _table(document, "pnsd")
    web = _table(document, "pnsweb")
    unknown = set(web) - WEB_KEYS
    if unknown:
        raise SettingsError(f"{path}: unknown [pnsweb] keys: {', '.join(sorted(unknown))}")
    home = _home(pnsd, path, env)
    endpoint = _value(web, "endpoint", str, "") or _ipc_endpoint(pnsd, home, env)
    key_file = home / _expand(_value(pnsd, "key_file", str, "secret.key"), env)
    defaults = WebSettings()
    return WebSettings(
        host=_value(web, "host", str, defaults.host),
        port=_value(web, "port", int, defaults.port),
        endpoint=endpoint,
        daemons=_daemons(web),
        key=read_key(key_file),
        curve=_curve(web, home, env),
        users=tuple(_user(entry) for entry in _value(web, "users", list, [])),
        default_pts=_value(web, "default_pts", str, defaults.default_pts),
        max_body=_value(web, "max_body", int, defaults.max_body),
        max_anonymous_body=_value(web, "max_anonymous_body", int, defaults.max_anonymous_body),
        public_url=public_url(_value(web, "public_url", str, defaults.public_url)),
        call_timeout=float(_value(web, "call_timeout", (int, float), defaults.call_timeout)),
        max_message_bytes=_value(pnsd, "max_message_bytes", int, defaults.max_message_bytes),
        log_level=_log_level(web),
        workers=_value(web, "workers", int, defaults.workers),
    )


def _curve(web: Mapping[str, Any], home: Path,
           env: Mapping[str, str]) -> tuple[bytes, bytes, bytes] | None:
    """The CURVE keys named by ``server_key`` and ``client_key`` (paths relative to the
    home), for a daemon's tcp:// endpoint; None when neither is set."""
    server, client = _value(web, "server_key", str, ""), _value(web, "client_key", str, "")
    if not (server or client):
        return None
    if not (server and client):
        raise SettingsError("[pnsweb] server_key and client_key go together")
    try:
        return load_keys(str(home / _expand(server, env)), str(home / _expand(client, env)))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read the CURVE keys: {exc}") from None


def public_url(value: str) -> str:
    """``value`` checked as an http(s) URL with a host and no query, without a trailing slash."""
    if not value:
        return ""
    try:
        url = urlsplit(value)
        good = (url.scheme in ("http", "https") and bool(url.hostname)
                and not url.query and not url.fragment)
    except ValueError:         # e.g. an unclosed IPv6 bracket
        good = False
    if not good:
        raise SettingsError(f"public_url must be an http:// or https:// URL with a host and no "
                            f"query, like https://pns.example.org, not {value!r}")
    return value.rstrip("/")


def _log_level(web: Mapping[str, Any]) -> str:
    level = _value(web, "log_level", str, WebSettings.log_level)
    if level not in LOG_LEVELS:
        raise SettingsError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    return str(level)


def find_config(config: Path | None, env: Mapping[str, str]) -> Path | None:
    """``--config``, ``$PNS_CONFIG`` (both must exist), then the default places, else None."""
    explicit = config or (Path(env["PNS_CONFIG"]) if env.get("PNS_CONFIG") else None)
    if explicit is not None:
        path = _expand(str(explicit), env)
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
        return path
    candidates = (_expand(p, env) for p in DEFAULT_CONFIG_PATHS)
    return next((p for p in candidates if p.is_file()), None)


def read_key(path: Path) -> bytes:
    """The message-signing key (the file's text, stripped); refused if others may read it."""
    try:
        with path.open("rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if mode & 0o077:
                raise SettingsError(f"key file {path} is readable by others (mode {mode:o}): "
                                    "chmod 600 it")
            return handle.read().strip()
    except FileNotFoundError:
        raise SettingsError(f"key file {path} does not exist: start pnsd once to create it, "
                            "or set PNS_HOME") from None
    except OSError as exc:
        raise SettingsError(f"cannot read key file {path}: {exc.strerror}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None


def _table(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    table = document.get(name, {})
    if not isinstance(table, dict):
        raise SettingsError(f"[{name}] must be a table")
    return table


def _value(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = table.get(key, default)
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise SettingsError(f"config key {key!r} has the wrong type ({type(value).__name__})")
    return value


def _user(entry: Any) -> User:
    if not isinstance(entry, dict) or set(entry) - USER_KEYS:
        raise SettingsError(f"each [[pnsweb.users]] takes only {', '.join(sorted(USER_KEYS))}")
    name = _value(entry, "name", str, "")
    password_hash = _value(entry, "password_hash", str, "")
    if not name or not password_hash.startswith("scrypt$"):
        raise SettingsError("each [[pnsweb.users]] needs a name and a scrypt password_hash")
    return User(name, password_hash, admin=_value(entry, "admin", bool, False))


def _home(pnsd: Mapping[str, Any], source: Path | None, env: Mapping[str, str]) -> Path:
    """``$PNS_HOME`` > ``home`` in the file (relative to the file) > ``~/pns``, as pnsd does."""
    if env.get("PNS_HOME"):
        return _expand(env["PNS_HOME"], env).absolute()
    if "home" in pnsd:
        home = _expand(_value(pnsd, "home", str, ""), env)
        return (source.parent / home if source else home).absolute()
    return _expand("~/pns", env).absolute()


def _daemons(web: Mapping[str, Any]) -> tuple[str, ...]:
    daemons = _value(web, "daemons", list, [])
    for endpoint in daemons:
        if not isinstance(endpoint, str) or not endpoint.startswith(("ipc://", "tcp://")):
            raise SettingsError(f"[pnsweb] daemons: {endpoint!r} is not an ipc:// or tcp:// "
                                "endpoint")
    return tuple(daemons)


def _ipc_endpoint(pnsd: Mapping[str, Any], home: Path, env: Mapping[str, str]) -> str:
    value = _value(pnsd, "endpoint", str, "ipc://run/pnsd.sock")
    if not value.startswith("ipc://"):
        raise SettingsError("[pnsd] endpoint must be an ipc:// address")
    return f"ipc://{home / _expand(value.removeprefix('ipc://'), env)}"


def _expand(value: str, env: Mapping[str, str]) -> Path:
    if value == "~" or value.startswith("~/"):
        value = (env.get("HOME") or str(Path.home())) + value[1:]
    return Path(value)
