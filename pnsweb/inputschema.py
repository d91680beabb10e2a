"""Checking OGC execute ``inputs`` against the process description, before anything runs.

Owns the rules a process description states for its inputs: each input's JSON Schema
(Draft 2020-12, the dialect OGC API - Processes descriptions use), ``minOccurs`` and
``maxOccurs``. A request that breaks one is a 400 problem+json whose ``errors`` member names,
for each failure, the input, the JSON pointer into the request body and the rule that failed
(a JSON Schema keyword, ``minOccurs`` or ``maxOccurs``). Validators are compiled once per
distinct schema and kept; a request only runs them. It must do no I/O and never call the
daemon: the schemas come from the descriptions :class:`pnsweb.views_v1_io.Catalog` keeps.

Which schemas: the ones pnsweb's process descriptions carry (:mod:`pnsweb.ogc`). pnsd does not
know them, so a direct ZeroMQ client is not checked here; its PTS checks its own input.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from pnsweb import ogc
from pnsweb.errors import ApiError

MAX_ERRORS = 20          # failures listed in one reply
MAX_MESSAGE = 200        # characters of one failure's text (it may quote the value)
QUALIFIED = frozenset({"value", "mediaType", "encoding", "schema"})   # an OGC qualified value
LINK = frozenset({"href", "rel", "type", "hreflang", "title"})          # an input by reference


class Failure(NamedTuple):
    """One broken rule: which input, where in the body, which rule, and why."""

    input: str
    pointer: str
    rule: str
    message: str

    def public(self) -> dict[str, str]:
        return self._asdict()


def check_inputs(model: ogc.ProcessModel, inputs: Mapping[str, Any]) -> None:
    """Raise a 400 naming every failure (up to :data:`MAX_ERRORS`) of ``inputs``.

    ``inputs`` is the request's ``inputs`` object, already known to name declared inputs only.
    """
    failures: list[Failure] = []
    for port in model.inputs:
        failures.extend(_port_failures(port, inputs))
        if len(failures) >= MAX_ERRORS:
            break
    if failures:
        raise _refusal(model, failures[:MAX_ERRORS])


def _port_failures(port: ogc.Port, inputs: Mapping[str, Any]) -> Iterator[Failure]:
    pointer = "/inputs/" + _escape(port.id)
    if port.id not in inputs:
        if port.required:
            yield Failure(port.id, pointer, "minOccurs",
                          f"input {port.id!r} is required (minOccurs {port.min_occurs})")
        return
    value = inputs[port.id]
    if port.max_occurs == 1 or not isinstance(value, list):
        yield from _value_failures(port, value, pointer)
        return
    if not port.min_occurs <= len(value) <= port.max_occurs:
        rule = "minOccurs" if len(value) < port.min_occurs else "maxOccurs"
        yield Failure(port.id, pointer, rule,
                      f"{len(value)} values given; input {port.id!r} takes "
                      f"{port.min_occurs} to {port.max_occurs}")
        return
    for index, item in enumerate(value):
        yield from _value_failures(port, item, f"{pointer}/{index}")


def _value_failures(port: ogc.Port, value: Any, pointer: str) -> Iterator[Failure]:
    """The schema failures of one occurrence; a qualified value is checked by its ``value``."""
    if isinstance(value, dict) and "href" in value and value.keys() <= LINK:
        yield Failure(port.id, pointer, "href", "inputs by reference (href) are not supported")
        return
    if isinstance(value, dict) and "value" in value and value.keys() <= QUALIFIED:
        value, pointer = value["value"], pointer + "/value"
    if not port.schema:       # any value: nothing to check
        return
    for error in validator(port.schema_text).iter_errors(value):
        where = pointer + "".join("/" + _escape(str(part)) for part in error.absolute_path)
        yield Failure(port.id, where, str(error.validator), _short(error.message))


@functools.lru_cache(maxsize=256)
def validator(schema_text: str) -> Draft202012Validator:
    """The compiled validator of one schema (its canonical JSON text), built once."""
    schema = json.loads(schema_text)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ApiError(502, f"the process declares an invalid input schema: "
                            f"{_short(exc.message)}") from exc
    return Draft202012Validator(schema)


def _refusal(model: ogc.ProcessModel, failures: Iterable[Failure]) -> ApiError:
    listed = list(failures)
    first = listed[0]
    more = f" (and {len(listed) - 1} more)" if len(listed) > 1 else ""
    detail = (f"process {model.id}: input {first.input!r} at {first.pointer} fails "
              f"{first.rule}: {first.message}{more}")
    return ApiError(400, detail, extra={"errors": [failure.public() for failure in listed]})


def _escape(token: str) -> str:
    """One JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."
