"""A PTS spec declares its interface; a spec that cannot work is refused, naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from pnsd.errors import InvalidSpec
from pnsd.spec import parse_spec

PNG = {"contentMediaType": "image/png"}


def spec(mode: str = "inproc", **keys: Any) -> Any:
    base: dict[str, Any] = {"mode": mode}
    base |= {"entry": "m:f"} if mode != "process" else {"run": ["x"]}
    return parse_spec("p", base | keys)


def test_declared_inputs_and_outputs_with_their_defaults() -> None:
    parsed = spec(title="T", keywords=["a"], inputs={
        "x": {"title": "X", "schema": {"type": "number"}},
        "many": {"minOccurs": 0, "maxOccurs": "unbounded"}},
        outputs={"png": {"schema": PNG}})
    interface = parsed.interface
    assert (interface.title, interface.keywords) == ("T", ("a",))
    assert interface.inputs is not None
    x, many = interface.inputs
    assert (x.min_occurs, x.max_occurs, x.schema) == (1, 1, {"type": "number"})
    assert (many.min_occurs, many.max_occurs) == (0, None)
    assert interface.outputs is not None and interface.outputs[0].binary


def test_a_spec_round_trips_through_its_public_form() -> None:
    parsed = spec("process", inputs={"name": {"schema": {"type": "string"}, "file": "in.txt",
                                              "minOccurs": 0}},
                  outputs={"png": {"schema": PNG}}, title="t")
    table = {k: v for k, v in parsed.public().items() if v is not None}
    assert parse_spec("p", table) == parsed


def test_describe_gives_each_output_the_path_of_its_value() -> None:
    outputs = {"png": {"schema": PNG}}
    assert spec(outputs=outputs).interface.described(process=False)["outputs"]["png"]["path"] \
        == ["png"]
    process = spec("process", outputs={"png": {"schema": PNG, "file": "out.png"}})
    assert process.interface.described(process=True)["outputs"]["png"]["path"] == [
        "outputs", "out.png"]
    whole = spec().interface.described(process=False)
    assert whole["inputs"] is None and whole["outputs"]["result"]["path"] == []
    files = spec("process").interface.described(process=True)["outputs"]
    assert list(files) == ["outputs"] and files["outputs"]["path"] == ["outputs"]


def test_a_process_mode_list_of_names_is_optional_files() -> None:
    parsed = spec("process", inputs=["infile"], outputs=["outfile"])
    assert parsed.interface.input_files() == {"infile": "infile"}
    assert parsed.interface.output_files() == ("outfile",)
    assert parsed.interface.inputs is not None
    assert parsed.interface.inputs[0].min_occurs == 0


@pytest.mark.parametrize(("mode", "keys", "names"), [
    ("inproc", {"inputs": {"x": {"schema": {"type": 12}}}}, "inputs.x.schema"),
    ("inproc", {"inputs": {"x": {"schema": {"minimum": "low"}}}}, "inputs.x.schema"),
    ("inproc", {"inputs": {"x": {"schema": {"pattern": "(unclosed"}}}}, "inputs.x.schema"),
    ("inproc", {"inputs": {"x": {"schema": {"$ref": "http://elsewhere/s.json"}}}},
     "inputs.x.schema"),
    ("worker", {"outputs": {"y": {"schema": "string"}}}, "outputs.y.schema"),
    ("inproc", {"outputs": {"y": {"file": "y.txt"}}}, "outputs.y.file"),
    ("process", {"outputs": {"y": {"schema": {"type": "object"}}}}, "outputs.y.schema"),
    ("process", {"inputs": {"x": {"file": "../etc/passwd"}}}, "inputs.x"),
    ("inproc", {"inputs": {"x": {"minOccurs": 2, "maxOccurs": 1}}}, "inputs.x.maxOccurs"),
    ("inproc", {"inputs": {"x": {"colour": "red"}}}, "inputs.x"),
    ("inproc", {"inputs": "x"}, "inputs"),
    ("inproc", {"keywords": "a"}, "keywords"),
])
def test_a_spec_that_cannot_work_is_refused_naming_the_field(
        mode: str, keys: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        spec(mode, **keys)
    assert names in caught.value.message
