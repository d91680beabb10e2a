"""OGC values in and out: execute ``inputs`` into a PTS input, a PTS result into outputs.

Owns the JSON side of the mapping the daemon defines (``pnsd.interface``): the OGC ``inputs``
object *is* the PTS's input map, except that JSON cannot hold bytes, so a binary input's value
(its description says ``contentMediaType``) arrives as base64 text, bare or as a qualified
value ``{"value": ..., "mediaType": ...}``, and is decoded here; a media type the input does
not declare is refused. Checking the values against the declared schemas is the daemon's (it
holds every client to them); its refusal (``bad_request`` listing input, pointer and rule) is
turned here into the 400 problem+json, its pointers made pointers into the request body. Out:
an output's value is found in the result by its ``path``; bytes go out as a qualified value in
JSON documents, an output sent by reference as a link to ``/v1/jobs/{id}/results/{name}``.
Pure functions: no I/O, no daemon calls.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from pnsweb import ogc
from pnsweb.errors import ApiError
from protocols.errors import ErrorCode, RemoteError

QUALIFIED_KEYS = frozenset({"value", "mediaType", "encoding", "schema"})
LINK_KEYS = frozenset({"href", "rel", "type", "hreflang", "title"})
OCTETS = "application/octet-stream"
JSON_TYPES = ("application/json", "text/plain")
VALUE, REFERENCE = "value", "reference"


class PtsInput(NamedTuple):
    """The PTS input, and where the request gave qualified values (pointers into the map)."""

    data: Any
    qualified: frozenset[str]


def pts_input(model: ogc.ProcessModel, inputs: Any) -> PtsInput:
    """The PTS input for OGC ``inputs``: the same map, binary values decoded to bytes.

    ``inputs`` comes from a JSON body: its objects are dicts (checked as such, as an ABC check
    costs more).
    """
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise ogc.bad_request("'inputs' must be an object: input id -> value")
    qualified: set[str] = set()
    data: dict[str, Any] = {}
    ports = model.input_ports
    for key, value in inputs.items():
        port = ports.get(key)
        pointer = "/" + _escape(key)
        if port is not None and port.max_occurs != 1 and isinstance(value, list):
            data[key] = [_plain(port, key, item, f"{pointer}/{index}", qualified)
                         for index, item in enumerate(value)]
        else:
            data[key] = _plain(port, key, value, pointer, qualified)
    return PtsInput(data, frozenset(qualified))


def _plain(port: ogc.Port | None, key: str, value: Any, pointer: str,
           qualified: set[str]) -> Any:
    """One occurrence as the PTS gets it: a qualified value unwrapped, base64 decoded."""
    binary = port is not None and port.binary
    if isinstance(value, dict):
        if "href" in value and value.keys() <= LINK_KEYS:
            raise input_error(key, pointer, "href", "inputs by reference (href) are not "
                              "supported: give the value")
        if "value" not in value or not value.keys() <= QUALIFIED_KEYS:
            return value
        qualified.add(pointer)
        _check_media_type(port, key, value.get("mediaType"), pointer)
        inner = value["value"]
        if binary or value.get("encoding") in ("base64", "binary"):
            return _decoded(key, inner, pointer + "/value")
        return inner
    if binary and isinstance(value, str):
        return _decoded(key, value, pointer)
    return value


def _check_media_type(port: ogc.Port | None, key: str, media: Any, pointer: str) -> None:
    if port is None or media is None:
        return
    declared = port.media_type
    if declared is not None and media != declared:
        raise input_error(key, pointer + "/mediaType", "contentMediaType",
                          f"input {key!r} takes {declared}, not {media!r}")
    if declared is None and (not isinstance(media, str) or not _is_json(media)):
        raise input_error(key, pointer + "/mediaType", "contentMediaType",
                          f"input {key!r} takes JSON values, not {media!r}")


def _is_json(media: str) -> bool:
    kind = media.split(";", 1)[0].strip().lower()
    return kind in JSON_TYPES or kind.endswith("+json")


def _decoded(key: str, text: Any, pointer: str) -> bytes:
    if not isinstance(text, str):
        raise input_error(key, pointer, "contentEncoding",
                          f"input {key!r} is binary: give its bytes as base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise input_error(key, pointer, "contentEncoding",
                          f"input {key!r} is not valid base64") from None


def input_error(key: str, pointer: str, rule: str, message: str) -> ApiError:
    """A 400 for one input, in the shape of the daemon's refusals."""
    return _problem([{"input": key, "pointer": "/inputs" + pointer, "rule": rule,
                      "message": message}])


def input_refusal(exc: RemoteError, given: PtsInput, process: str) -> ApiError | None:
    """The 400 problem+json for the daemon's refusal of an input (None: not one)."""
    errors = exc.details.get("errors")
    if exc.code != ErrorCode.BAD_REQUEST or not isinstance(errors, list) or not errors:
        return None
    listed = [{"input": str(error.get("input", "")),
               "pointer": _body_pointer(str(error.get("pointer", "")), given.qualified),
               "rule": str(error.get("rule", "")), "message": str(error.get("message", ""))}
              for error in errors if isinstance(error, dict)]
    return _problem(listed, process=process) if listed else None


def _problem(failures: list[dict[str, str]], *, process: str = "") -> ApiError:
    first = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    which = f"process {process}: " if process else ""
    detail = (f"{which}input {first['input']!r} at {first['pointer']} fails {first['rule']}: "
              f"{first['message']}{more}")
    return ApiError(400, detail, extra={"errors": failures})


def _body_pointer(pointer: str, qualified: Iterable[str]) -> str:
    """A pointer into the input map as a pointer into the request body."""
    for start in qualified:
        if pointer == start or pointer.startswith(start + "/"):
            return "/inputs" + start + "/value" + pointer[len(start):]
    return "/inputs" + pointer


def _escape(token: str) -> str:
    """One JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


# -- outputs ----------------------------------------------------------------------------------

def outputs_of(model: ogc.ProcessModel, result: Any) -> dict[str, Any]:
    """Output id -> value in a PTS result (None where it is missing)."""
    return {port.id: value_at(result, port.path) for port in model.outputs}


def value_at(result: Any, path: Iterable[str]) -> Any:
    for key in path:
        result = result.get(key) if isinstance(result, Mapping) else None
    return result


def selection(model: ogc.ProcessModel, requested: Any, *, kept: bool) -> dict[str, str]:
    """Output id -> transmission mode that an execute request's ``outputs`` asks for (every
    output by value when absent). ``kept``: the job's result will be stored (a reference
    points into the store)."""
    if requested is None:
        return dict.fromkeys(model.output_ids(), VALUE)
    if not isinstance(requested, Mapping):
        raise ogc.bad_request("'outputs' must be an object: output id -> options")
    unknown = sorted(set(requested) - set(model.output_ports))
    if unknown:
        raise ogc.bad_request(f"process {model.id} has no output {', '.join(unknown)} "
                              f"(its outputs: {', '.join(model.output_ids()) or 'none'})")
    chosen = {}
    for key, options in requested.items():
        mode = options.get("transmissionMode", VALUE) if isinstance(options, Mapping) else VALUE
        if mode not in (VALUE, REFERENCE):
            raise ogc.bad_request(f"output {key}: transmissionMode must be 'value' or "
                                  "'reference'")
        if mode == REFERENCE and not kept:
            raise ogc.bad_request(f"output {key}: by reference needs the result kept, and this "
                                  "node keeps no results of synchronous runs: execute it "
                                  "asynchronously (Prefer: respond-async)")
        chosen[key] = mode
    return chosen


def media_type(port: ogc.Port, value: Any) -> str:
    """The media type an output's value is served with on its own."""
    if port.binary or isinstance(value, bytes):
        return port.media_type or OCTETS
    if isinstance(value, str) and port.media_type and port.media_type.startswith("text/"):
        return port.media_type
    return ogc.JSON


def shown(port: ogc.Port, value: Any) -> Any:
    """An output's value inside a JSON document: bytes as a qualified value."""
    if port.binary and isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return {"value": base64.b64encode(value).decode("ascii"), "encoding": "base64",
                "mediaType": port.media_type or OCTETS}
    return value


def results_document(model: ogc.ProcessModel, outputs: Mapping[str, Any],
                     chosen: Mapping[str, str] | None = None,
                     href: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The results document: output id -> value, or a link for an output by reference."""
    chosen = chosen if chosen is not None else dict.fromkeys(outputs, VALUE)
    document: dict[str, Any] = {}
    for key, mode in chosen.items():
        port = model.output_ports[key]
        value = outputs.get(key)
        if mode == REFERENCE and href is not None:
            document[key] = reference(port, href(key))
        else:
            document[key] = shown(port, value)
    return document


def reference(port: ogc.Port, href: str) -> dict[str, str]:
    """The link an output by reference is (OGC's link object)."""
    return {"href": href, "type": port.media_type or ogc.JSON, "title": port.title}
