"""JSON request bodies: how large a caller may send, parsing that never stalls the event loop,
and only values the daemon hop can carry.

Owns the body limits (``settings.max_anonymous_body`` before the caller is authenticated,
``settings.max_body`` after; both 413), JSON decoding and the checks of what was decoded. Both
faces read bodies through :func:`read_json_body` and shape the result themselves. Must not call
the daemon, and raises only :class:`pnsweb.errors.ApiError` (400 or 413).

Why two parsers: the standard library's C decoder holds the GIL for a whole document, so
``json.loads`` in a thread stalls the loop just as much (a 16 MiB ``[[],[],...]`` stopped it
for 1.9 s). A body up to :data:`INLINE_BYTES` is decoded on the loop with the C decoder (a few
milliseconds at most). A larger body is decoded in a thread, at most :data:`PARSE_SLOTS` at a
time per process; a document with few values still with the C decoder (its cost is the bytes),
one with many with the pure-Python scanner, which gives the GIL back every switch interval and
stops past :data:`MAX_VALUES` values (413). The reply of ``/v0.6/echo`` to a large body is
written the same way.

Memory: a parsed document takes up to about 32 times its size in bytes (the worst measured:
many small containers, ``[{"":[]},...]``; numbers and text take 4-12 times), and at most about
100 bytes per value beyond its text: a request holds at most its body three times over (bytes,
text, strings) plus ~100 MB for :data:`MAX_VALUES` values; an anonymous 1 MiB body at most
~35 MB.

Values (the msgpack hop to pnsd, and the JSON replies): NaN and Infinity are not JSON; numbers
beyond a 64-bit float (``1e400``) and integers beyond 64 bits cannot be carried; lone UTF-16
surrogates are not text; nesting deeper than :data:`MAX_DEPTH` is refused. Each is a 400 that
says which.
"""

from __future__ import annotations

import asyncio
import gc
import json
import json.scanner
import math
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pnsweb.auth import USER_NAME
from pnsweb.errors import ApiError
from pnsweb.keys import BODY_PARSER, SETTINGS

INLINE_BYTES = 64 << 10        # decoded on the event loop; larger bodies go to a thread
PARSE_SLOTS = 2                # large bodies decoded at once, per process
FEW_VALUES = 20_000            # below this many structural characters the C decoder is quick
MAX_DEPTH = 128                # nesting levels; msgpack stops at 511, real data far sooner
MAX_VALUES = 1_000_000         # JSON values in one body: bounds its parsed size and parse time
INT_RANGE = (-(2**63), 2**64 - 1)     # what msgpack carries
CHUNK = 256 << 10
_SURROGATE = re.compile("[\ud800-\udfff]")
_STRUCTURE = (b"{", b"[", b",")
_DEPTH_TEXT = f"the body is nested deeper than {MAX_DEPTH} levels"
_SURROGATE_TEXT = ("the body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not "
                   "Unicode text")


class BadBody(ValueError):
    """A body that decodes to something the API does not take; the message says why."""


class TooManyValues(Exception):
    """A body with more values than :data:`MAX_VALUES` (413: its parsed form is too large)."""


class BodyParser:
    """Decodes large bodies in threads, at most :data:`PARSE_SLOTS` at once (one per app)."""

    def __init__(self, slots: int = PARSE_SLOTS) -> None:
        self._slots = asyncio.Semaphore(slots)
        self.busy = 0          # large bodies being decoded or encoded now
        self._gc_was_enabled = False

    async def decode(self, raw: bytes | bytearray) -> Any:
        if len(raw) <= INLINE_BYTES:
            return decode(raw)
        return await self._in_thread(decode, raw)

    async def encode(self, value: Any) -> str:
        """JSON text of a value decoded from a large body, written in a thread by the
        pure-Python encoder (the C one would hold the GIL throughout, as the C decoder does)."""
        text: str = await self._in_thread(_python_encode, value)
        return text

    async def _in_thread(self, work: Callable[[Any], Any], data: Any) -> Any:
        """``work(data)`` in a thread, in a slot, with the cyclic collector paused.

        Why paused: a decoded document is a tree (no cycles to find), yet its many new objects
        set off full collections that hold the GIL for hundreds of milliseconds (1M values:
        a 280 ms stall). Reference counting still frees everything; the collector resumes
        when no large body is being worked on.
        """
        async with self._slots:
            if self.busy == 0:
                self._gc_was_enabled = gc.isenabled()
                gc.disable()
            self.busy += 1
            try:
                return await asyncio.to_thread(work, data)
            finally:
                self.busy -= 1
                if self.busy == 0 and self._gc_was_enabled:
                    gc.enable()


def body_limit(request: web.Request) -> int:
    """The largest body this request may send: small until the caller is authenticated."""
    settings = request.app[SETTINGS]
    if request.get(USER_NAME):
        return settings.max_body        # (the app's client_max_size too)
    return min(settings.max_anonymous_body, settings.max_body)


async def read_json_body(request: web.Request, *, limit: int | None = None) -> Any:
    """The body decoded and checked; :data:`EMPTY` for an empty (or all-blank) body.

    ``limit`` may lower the request's :func:`body_limit`, never raise it.
    """
    limit = body_limit(request) if limit is None else min(limit, body_limit(request))
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    # Read from the stream rather than with request.read(), which would keep the bytes for
    # the whole request beside their parsed value: a declared length into one buffer of that
    # size as the pieces come (never pieces joined afterwards: two copies at once); a chunked
    # body is counted as it comes. The decoder empties the buffer once it has the text.
    if length is not None:
        raw = await _read_exactly(request, length)
    else:
        raw = await _read_chunks(request, limit)
    if not raw or raw.isspace():
        return EMPTY
    try:
        return await request.app[BODY_PARSER].decode(raw)
    except BadBody as exc:
        raise ApiError(400, str(exc)) from None
    except TooManyValues as exc:
        raise ApiError(413, str(exc)) from None


EMPTY: Any = object()      # what read_json_body returns for an empty body


async def _read_exactly(request: web.Request, length: int) -> bytearray:
    """The body of a declared ``length``, read into one buffer of that size."""
    raw = bytearray(length)
    with memoryview(raw) as view:
        got = 0
        while got < length:
            chunk = await request.content.readany()
            if not chunk:
                raise asyncio.IncompleteReadError(b"", length)
            view[got:got + len(chunk)] = chunk
            got += len(chunk)
    return raw


async def _read_chunks(request: web.Request, limit: int) -> bytearray:
    raw = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK):
        if len(raw) + len(chunk) > limit:
            raise too_large(limit)
        raw += chunk
    return raw


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body exceeds the limit of {limit} bytes")


# -- decoding -----------------------------------------------------------------------------------

def decode(raw: bytes | bytearray) -> Any:
    """``raw`` as JSON, checked by :func:`check_value`; :class:`BadBody` says what is wrong.

    A ``bytearray`` is emptied once its text is decoded (the body is not held twice while it
    is parsed): the caller hands it over."""
    try:
        text = raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError as exc:
        raise BadBody(f"the body is not valid JSON: it is not UTF-8 text ({exc.reason} at byte "
                      f"{exc.start})") from None
    quick = len(raw) <= INLINE_BYTES or _few_values(raw)
    if isinstance(raw, bytearray):
        raw.clear()
    decoder = _C_DECODER if quick else _python_decoder()
    try:
        value = decoder.decode(text)
    except RecursionError:
        raise BadBody(_DEPTH_TEXT) from None
    except ValueError as exc:      # JSONDecodeError, a refused constant, an over-long integer
        raise BadBody(f"the body is not valid JSON: {exc}") from None
    check_value(value)
    return value


def _few_values(raw: bytes | bytearray) -> bool:
    return sum(raw.count(mark) for mark in _STRUCTURE) < FEW_VALUES


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_C_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _python_decoder() -> json.JSONDecoder:
    """A decoder running the pure-Python scanner that stops past :data:`MAX_VALUES` values
    (one per document: it counts, and the scanner has a memo)."""
    decoder = json.JSONDecoder(parse_constant=_refuse_constant)
    left = [MAX_VALUES]

    def counted(scan_once: Callable[[str, int], Any]) -> Callable[[str, int], Any]:
        def scan_counted(string: str, index: int) -> Any:
            left[0] -= 1
            if left[0] < 0:
                raise TooManyValues(f"the body holds more than {MAX_VALUES} JSON values")
            return scan_once(string, index)
        return scan_counted

    # The pure-Python scanner's parts (json.decoder.JSONObject and JSONArray, the decoder's
    # parse_object, parse_array and scan_once) are public in the module but absent from
    # typeshed's stubs, hence the ignores.
    def parse_object(s_and_end: Any, strict: bool, scan_once: Any, *hooks: Any) -> Any:
        return json.decoder.JSONObject(  # type: ignore[attr-defined]
            s_and_end, strict, counted(scan_once), *hooks)

    def parse_array(s_and_end: Any, scan_once: Any) -> Any:
        return json.decoder.JSONArray(s_and_end, counted(scan_once))  # type: ignore[attr-defined]

    decoder.parse_object = parse_object  # type: ignore[attr-defined]
    decoder.parse_array = parse_array  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder


def _python_encode(value: Any) -> str:
    # iterencode without _one_shot runs the pure-Python encoder
    return "".join(json.JSONEncoder(allow_nan=False).iterencode(value))


def check_value(value: Any) -> None:
    """Raise :class:`BadBody` if ``value`` (decoded JSON) holds what the API cannot carry.

    One loop over a level of nesting at a time, each check written inline: a call per value
    cost more than the checks themselves on a small body, which every request has
    (bench/FINDINGS.md, "/v1 at one connection, second pass")."""
    low, high = INT_RANGE
    level = [value]
    depth = 0
    while level:
        inner: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is str:
                if not item.isascii() and _SURROGATE.search(item):
                    raise BadBody(_SURROGATE_TEXT)
            elif kind is list:
                if depth >= MAX_DEPTH:
                    raise BadBody(_DEPTH_TEXT)
                inner.extend(item)
            elif kind is dict:
                if depth >= MAX_DEPTH:
                    raise BadBody(_DEPTH_TEXT)
                inner.extend(item)           # its keys: strings, checked with the values
                inner.extend(item.values())
            elif kind is int:
                if not low <= item <= high:
                    raise BadBody("the body holds an integer beyond 64 bits: integers must lie "
                                  "within [-2**63, 2**64 - 1]")
            elif kind is float and not math.isfinite(item):
                raise BadBody("the body holds a number beyond the range of a 64-bit float "
                              "(e.g. 1e400)")
        level = inner
        depth += 1
