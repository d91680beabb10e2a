"""Holding a run's input (and a self-test's output) to the interface its PTS declares.

Owns :class:`InputCheck`, the input validators of one generation (JSON Schema Draft 2020-12,
with ``jsonschema``: compiled when the generation is built, run on every input before anything
runs), and :func:`check_outputs`. A refusal is :class:`pnsd.errors.BadRequest` whose
``errors`` detail lists, per failure (up to :data:`MAX_ERRORS`), the ``input``, the JSON
``pointer`` into the input map, the ``rule`` (a JSON Schema keyword, ``minOccurs``,
``maxOccurs``, ``declared`` for an unknown input, ``contentMediaType`` for a binary input that
is not bytes) and a ``message``: the same for every client. The rules themselves are
:mod:`pnsd.interface`'s. It runs nothing and does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator

from pnsd.errors import BadRequest
from pnsd.interface import Port, short

MAX_ERRORS = 20          # failures listed in one refusal
HEAVY = 1000             # values in an input above which it is checked off the event loop


class Failure(dict[str, str]):
    """One broken rule: ``input``, ``pointer`` (into the input map), ``rule``, ``message``."""

    def __init__(self, port: str, pointer: str, rule: str, message: str) -> None:
        super().__init__(input=port, pointer=pointer, rule=rule, message=short(message))


class InputCheck:
    """The input validators of one generation, compiled once when it is built."""

    def __init__(self, pts: str, inputs: tuple[Port, ...] | None) -> None:
        self.pts = pts
        self.ports = inputs
        self._validators = {
            port.name: Draft202012Validator(port.schema)
            for port in inputs or () if port.schema and not port.binary}

    def quick(self, data: Any) -> bool:
        """Check ``data`` now and return True, or return False, unchecked, for an input so
        large that checking it would hold up the event loop (call :meth:`check` in a thread)."""
        if self.ports is None:
            return True
        if self._validators and _size(data, HEAVY) >= HEAVY:
            return False
        self.check(data)
        return True

    def check(self, data: Any) -> None:
        """Raise BadRequest listing every failure (up to :data:`MAX_ERRORS`)."""
        if self.ports is None:
            return
        failures = list(self._failures(data))
        if failures:
            raise refusal(self.pts, failures[:MAX_ERRORS])

    def _failures(self, data: Any) -> Iterator[Failure]:
        assert self.ports is not None
        if not isinstance(data, Mapping):
            yield Failure("", "", "type", f"the input must be a map of input name -> value "
                          f"(inputs: {', '.join(p.name for p in self.ports) or 'none'}), "
                          f"not {type(data).__name__}")
            return
        known = {port.name for port in self.ports}
        for name in data:
            if name not in known:
                yield Failure(str(name), "/" + escape(str(name)), "declared",
                              f"PTS {self.pts} has no input {name!r} "
                              f"(its inputs: {', '.join(sorted(known)) or 'none'})")
        for port in self.ports:
            yield from self._port_failures(port, data)

    def _port_failures(self, port: Port, data: Mapping[str, Any]) -> Iterator[Failure]:
        pointer = "/" + escape(port.name)
        if port.name not in data:
            if port.min_occurs > 0:
                yield Failure(port.name, pointer, "minOccurs",
                              f"input {port.name!r} is required (minOccurs {port.min_occurs})")
            return
        value = data[port.name]
        if port.max_occurs == 1 or not isinstance(value, list):
            if port.min_occurs > 1:
                yield Failure(port.name, pointer, "minOccurs",
                              f"1 value given; input {port.name!r} takes at least "
                              f"{port.min_occurs}")
            yield from self._value_failures(port, value, pointer)
            return
        high = port.max_occurs
        if len(value) < port.min_occurs or (high is not None and len(value) > high):
            rule = "minOccurs" if len(value) < port.min_occurs else "maxOccurs"
            yield Failure(port.name, pointer, rule,
                          f"{len(value)} values given; input {port.name!r} takes "
                          f"{port.min_occurs} to {high or 'unbounded'}")
            return
        for index, item in enumerate(value):
            yield from self._value_failures(port, item, f"{pointer}/{index}")

    def _value_failures(self, port: Port, value: Any, pointer: str) -> Iterator[Failure]:
        if port.binary:
            if not isinstance(value, bytes | bytearray | memoryview):
                yield Failure(port.name, pointer, "contentMediaType",
                              f"input {port.name!r} is binary ({port.media_type}): give "
                              f"bytes, not {type(value).__name__}")
            return
        validator = self._validators.get(port.name)
        if validator is None:
            return
        for error in validator.iter_errors(value):
            where = pointer + "".join("/" + escape(str(part)) for part in error.absolute_path)
            yield Failure(port.name, where, str(error.validator), error.message)


def check_outputs(pts: str, outputs: Mapping[str, Any], ports: tuple[Port, ...]) -> None:
    """Raise BadRequest when an output value breaks its declared schema (a self-test's)."""
    failures: list[Failure] = []
    for port in ports:
        pointer = "/" + escape(port.name)
        if port.name not in outputs or outputs[port.name] is None:
            failures.append(Failure(port.name, pointer, "required",
                                    f"output {port.name!r} is missing"))
        elif port.binary:
            if not isinstance(outputs[port.name], bytes | bytearray | memoryview):
                failures.append(Failure(port.name, pointer, "contentMediaType",
                                        f"output {port.name!r} must be bytes"))
        elif port.schema:
            failures.extend(
                Failure(port.name, pointer + "".join("/" + escape(str(p))
                                                     for p in error.absolute_path),
                        str(error.validator), error.message)
                for error in Draft202012Validator(port.schema).iter_errors(outputs[port.name]))
    if failures:
        raise refusal(pts, failures[:MAX_ERRORS], what="output")


def refusal(pts: str, failures: list[Failure], *, what: str = "input") -> BadRequest:
    first = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    where = f" {first['input']!r}" if first["input"] else ""
    return BadRequest(f"PTS {pts}: {what}{where} at {first['pointer'] or '/'} fails "
                      f"{first['rule']}: {first['message']}{more}",
                      errors=[dict(failure) for failure in failures])


def _size(value: Any, limit: int) -> int:
    """How many values ``value`` holds (a long text counting as several), up to ``limit``."""
    count, stack = 0, [value]
    while stack and count < limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            count += len(item) >> 12
    return count


def escape(token: str) -> str:
    """One JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


