"""A PTS's interface: the typed inputs and outputs its spec declares, and holding runs to them.

Owns the interface keys of a spec table (``title``, ``keywords``, ``inputs.NAME`` and
``outputs.NAME`` tables), refusing at parse time what cannot work (a schema that is not valid
JSON Schema Draft 2020-12, a reference out of the schema, an output table its mode cannot
produce), the interface's plain form in ``pts.describe`` replies, and :class:`InputCheck`, the
validators of one generation, compiled when the generation is built and run on every input
before anything runs. A refused input is :class:`pnsd.errors.BadRequest` whose ``errors``
detail lists, per failure, the ``input``, the JSON ``pointer`` into the input map, the ``rule``
(a JSON Schema keyword, ``minOccurs``, ``maxOccurs``, ``declared``, ``contentMediaType``) and a
``message``. It runs nothing and does no I/O.

The mapping, the same for every mode: a run's input is the map input name -> value (what
OGC's ``inputs`` object holds). A PTS that declares no inputs takes any value. An input with
``maxOccurs`` above one takes a list of values (or one value). A binary input (its schema names
a ``contentMediaType`` that is not text or JSON) takes bytes. Outputs: a callable that declares
outputs returns a map output name -> value; one that declares none has the single output
``result`` (its whole return value); a process-mode PTS's outputs are files of its ``outputs``
dir (every file, as the output ``outputs``, when it declares none).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from pnsd.errors import BadRequest, InvalidSpec

MAX_ERRORS = 20          # failures listed in one refusal
MAX_MESSAGE = 200        # characters of one failure's text (it may quote the value)
PORT_KEYS = frozenset({"title", "description", "schema", "minOccurs", "maxOccurs", "file"})
OUTPUT_KEYS = PORT_KEYS - {"minOccurs", "maxOccurs"}
MAX_OCCURS = 1_000_000
TEXT_TYPES = ("text/", "application/json")
HEAVY = 1000             # values in an input above which it is checked off the event loop
WHOLE_RESULT = "result"
ALL_FILES = "outputs"


def is_binary(media_type: str | None) -> bool:
    """True for a media type whose content is bytes, not text or JSON."""
    if not media_type:
        return False
    kind = media_type.split(";", 1)[0].strip().lower()
    return not (kind.startswith(TEXT_TYPES) or kind.endswith("+json"))


@dataclass(frozen=True)
class Port:
    """One declared input or output. ``max_occurs`` None is unbounded; ``file`` is the file
    name of a process-mode input or output (its name unless the table says otherwise)."""

    name: str
    title: str = ""
    description: str = ""
    schema: Mapping[str, Any] = field(default_factory=dict)
    min_occurs: int = 1
    max_occurs: int | None = 1
    file: str | None = None

    @property
    def media_type(self) -> str | None:
        value = self.schema.get("contentMediaType")
        return value if isinstance(value, str) else None

    @property
    def binary(self) -> bool:
        return is_binary(self.media_type)

    def table(self, *, output: bool = False) -> dict[str, Any]:
        """The port as its spec table says it (what parsing it again gives back)."""
        out: dict[str, Any] = {}
        if self.title:
            out["title"] = self.title
        if self.description:
            out["description"] = self.description
        if self.schema:
            out["schema"] = dict(self.schema)
        if not output:
            out["minOccurs"] = self.min_occurs
            out["maxOccurs"] = "unbounded" if self.max_occurs is None else self.max_occurs
        if self.file is not None and self.file != self.name:
            out["file"] = self.file
        return out


@dataclass(frozen=True)
class Interface:
    """What a PTS says it takes and gives. ``inputs``/``outputs`` None: not declared."""

    title: str = ""
    keywords: tuple[str, ...] = ()
    inputs: tuple[Port, ...] | None = None
    outputs: tuple[Port, ...] | None = None

    def input_files(self) -> dict[str, str] | None:
        """Process mode: input name -> file name; None when any names are taken."""
        if self.inputs is None:
            return None
        return {port.name: port.file or port.name for port in self.inputs}

    def output_files(self) -> tuple[str, ...] | None:
        """Process mode: the output files to read; None for every file."""
        if self.outputs is None:
            return None
        return tuple(port.file or port.name for port in self.outputs)

    def described(self, *, process: bool) -> dict[str, Any]:
        """The plain form of ``pts.describe``: each output with the ``path`` of its value in
        the run's result (keys to follow), so that a reader needs to know no mode."""
        inputs = None if self.inputs is None else {
            port.name: {**port.table(), "binary": port.binary} for port in self.inputs}
        return {"title": self.title, "keywords": list(self.keywords), "inputs": inputs,
                "outputs": {port.name: {**port.table(output=True), "binary": port.binary,
                                        "path": path}
                            for port, path in self._output_paths(process=process)}}

    def output_values(self, result: Any, *, process: bool) -> dict[str, Any]:
        """Output name -> value in a run's ``result`` (None where the value is missing)."""
        values = {}
        for port, path in self._output_paths(process=process):
            value = result
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            values[port.name] = value
        return values

    def _output_paths(self, *, process: bool) -> Iterator[tuple[Port, list[str]]]:
        if self.outputs is None and process:
            yield Port(ALL_FILES, "the output files", "output file name -> content",
                       {"type": "object"}), [ALL_FILES]
        elif self.outputs is None:
            yield Port(WHOLE_RESULT, "the result", "what the PTS returned"), []
        else:
            for port in self.outputs:
                yield port, [ALL_FILES, port.file or port.name] if process else [port.name]


# -- parsing ------------------------------------------------------------------------------------

def parse_interface(name: str, table: Mapping[str, Any], *, process: bool) -> Interface:
    """The interface keys of spec ``table``; InvalidSpec naming the offending field."""
    title = table.get("title", "")
    if not isinstance(title, str):
        raise InvalidSpec(f"PTS {name}: 'title' must be a string")
    keywords = table.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        raise InvalidSpec(f"PTS {name}: 'keywords' must be a list of strings")
    inputs = _ports(name, "inputs", table.get("inputs"), process=process)
    outputs = _ports(name, "outputs", table.get("outputs"), process=process)
    return Interface(title, tuple(keywords), inputs, outputs)


def _ports(pts: str, key: str, value: Any, *, process: bool) -> tuple[Port, ...] | None:
    if value is None:
        return None
    if isinstance(value, list):        # the short form: names only (process mode's files)
        value = ({item: {"minOccurs": 0} if key == "inputs" else {} for item in value}
                 if all(isinstance(item, str) for item in value) else 0)
    if not isinstance(value, Mapping):
        raise InvalidSpec(f"PTS {pts}: {key!r} must be a table of {key[:-1]} name -> table "
                          "(or a list of names)")
    return tuple(_port(pts, f"{key}.{port}", port, table, process=process,
                       output=key == "outputs") for port, table in value.items())


def _port(pts: str, where: str, name: Any, table: Any, *, process: bool, output: bool) -> Port:
    if not isinstance(name, str) or not name or not name.isprintable() or len(name) > 64:
        raise InvalidSpec(f"PTS {pts}: {where!r}: a name must be 1 to 64 printable characters")
    if not isinstance(table, Mapping):
        raise InvalidSpec(f"PTS {pts}: {where!r} must be a table")
    unknown = set(table) - (OUTPUT_KEYS if output else PORT_KEYS)
    if unknown:
        raise InvalidSpec(f"PTS {pts}: {where!r} has unknown keys {sorted(unknown)}")
    texts = {key: table.get(key, "") for key in ("title", "description")}
    if not all(isinstance(text, str) for text in texts.values()):
        raise InvalidSpec(f"PTS {pts}: {where!r}: title and description must be strings")
    schema = table.get("schema", {})
    check_schema(pts, f"{where}.schema", schema)
    low, high = _occurs(pts, where, table)
    port = Port(name, texts["title"], texts["description"], schema, low, high,
                _file(pts, where, table, name, process=process))
    if process:
        _check_file_port(pts, where, port)
    return port


def _occurs(pts: str, where: str, table: Mapping[str, Any]) -> tuple[int, int | None]:
    low = table.get("minOccurs", 1)
    high = table.get("maxOccurs", max(1, low) if isinstance(low, int) else 1)
    if isinstance(low, bool) or not isinstance(low, int) or not 0 <= low <= MAX_OCCURS:
        raise InvalidSpec(f"PTS {pts}: {where}.minOccurs must be an integer from 0")
    if high == "unbounded":
        return low, None
    if isinstance(high, bool) or not isinstance(high, int) or not max(1, low) <= high:
        raise InvalidSpec(f"PTS {pts}: {where}.maxOccurs must be an integer of at least "
                          f"{max(1, low)} (minOccurs), or \"unbounded\"")
    return low, high


def _file(pts: str, where: str, table: Mapping[str, Any], name: str, *,
          process: bool) -> str | None:
    if not process:
        if "file" in table:
            raise InvalidSpec(f"PTS {pts}: {where}.file: only a process-mode PTS exchanges "
                              "files; a callable takes and returns values")
        return None
    file = table.get("file", name)
    if not is_safe_name(file):
        raise InvalidSpec(f"PTS {pts}: {where}: {file!r} is not a plain file name "
                          "(say which file with 'file')")
    return str(file)


def _check_file_port(pts: str, where: str, port: Port) -> None:
    """A process-mode input or output is one file: text or bytes, one value."""
    kind = port.schema.get("type")
    if kind not in (None, "string") and not port.binary:
        raise InvalidSpec(f"PTS {pts}: {where}.schema: a process-mode PTS exchanges files, "
                          f"which hold text (type \"string\") or bytes (a contentMediaType), "
                          f"not type {kind!r}")
    if port.max_occurs != 1:
        raise InvalidSpec(f"PTS {pts}: {where}.maxOccurs: a file holds one value")


def check_schema(pts: str, where: str, schema: Any) -> None:
    """Refuse what is not a valid Draft 2020-12 schema, or refers outside itself."""
    if not isinstance(schema, Mapping):
        raise InvalidSpec(f"PTS {pts}: {where} must be a table (a JSON Schema)")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        at = "/".join(str(part) for part in exc.absolute_path)
        raise InvalidSpec(f"PTS {pts}: {where}{'/' + at if at else ''} is not valid "
                          f"JSON Schema: {short(exc.message)}", field=where) from None
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise InvalidSpec(f"PTS {pts}: {where}: $ref {ref!r} leaves the schema; only "
                              "references within it (#...) are resolved", field=where)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


# -- checking ----------------------------------------------------------------------------------

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
            if not isinstance(value, bytes | bytearray):
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
            if not isinstance(outputs[port.name], bytes | bytearray):
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


def is_safe_name(name: object) -> bool:
    """True for a plain file name: no separators, no '..', not hidden, printable, short."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name not in (".", "..")
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and name.isprintable()
        and "\x00" not in name
    )


def escape(token: str) -> str:
    """One JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."
