"""A PTS's interface: the typed inputs and outputs its spec declares.

Owns the interface keys of a spec table (``title``, ``keywords``, ``inputs.NAME`` and
``outputs.NAME`` tables), refusing at parse time what cannot work (a schema that is not valid
JSON Schema Draft 2020-12, a reference out of the schema, an output table its mode cannot
produce), and the interface's plain form in ``pts.describe`` replies. The checks of inputs
and outputs against it are :mod:`pnsd.validation`'s. It runs nothing and does no I/O.

The mapping, the same for every mode: a run's input is the map input name -> value (what
OGC's ``inputs`` object holds). A PTS that declares no inputs takes any value. An input with
``maxOccurs`` above one takes a list of values (or one value). A binary input (its schema names
a ``contentMediaType`` that is not text or JSON) takes bytes. Outputs: a callable that declares
outputs returns a map output name -> value; one that declares none has the single output
``result`` (its whole return value); a process-mode PTS's outputs are files of its ``outputs``
dir (every file, as the output ``outputs``, when it declares none) and its inputs files of its
``input`` dir (text and bytes as they are, other values as their JSON text).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from pnsd.errors import InvalidSpec

MAX_MESSAGE = 200        # characters of one failure's text (it may quote the value)
PORT_KEYS = frozenset({"title", "description", "schema", "minOccurs", "maxOccurs", "file"})
OUTPUT_KEYS = PORT_KEYS - {"minOccurs", "maxOccurs"}
MAX_OCCURS = 1_000_000
TEXT_TYPES = ("text/", "application/json")
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
        _check_file_port(pts, where, port, output=output)
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


def _check_file_port(pts: str, where: str, port: Port, *, output: bool) -> None:
    """A process-mode output is a file the PTS wrote: text or bytes. (An input's value may be
    anything: text and bytes are written as they are, other values as their JSON text.)"""
    kind = port.schema.get("type")
    if output and kind not in (None, "string") and not port.binary:
        raise InvalidSpec(f"PTS {pts}: {where}.schema: a process-mode PTS's outputs are files, "
                          f"which hold text (type \"string\") or bytes (a contentMediaType), "
                          f"not type {kind!r}")


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


def short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."
