"""The reference's class-tagged JSON form: reading requests and building replies like its own."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pnsweb import fdi

DATA = Path(__file__).parent / "data"
# the plain spectrum the demo testcalc adds (pnsweb tests must not import pnsd)
SPECTRUM = {
    "col1": {"data": [1, 4.4, 5400.0], "unit": "eV"},
    "col2": {"data": [0, 43.2, 2000.0], "unit": "cnt"},
}


def _load(name: str) -> Any:
    return json.loads((DATA / f"fdi-{name}.json").read_text())


def _split_tai(result: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A copy of a reply Product without its creationDate tai, and that tai."""
    result = copy.deepcopy(result)
    value = result["meta"]["_sets"]["data"]["creationDate"]["value"]
    return result, value.pop("tai")


def _first_items(plain: dict[str, Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """The first meta item and first dataset, as the daemon's demo testcalc picks them."""
    meta_item = next(iter(plain["input"]["meta"].items()))
    dataset = next((k, v) for k, v in plain["input"].items() if k != "meta")
    return meta_item, dataset


def test_is_tagged_only_for_objects_with_stid() -> None:
    assert fdi.is_tagged(_load("testrun-request"))
    assert not fdi.is_tagged({"creator": "me"})
    assert not fdi.is_tagged(["_STID"])
    assert not fdi.is_tagged(None)


def test_read_testrun_request_gives_plain_fields() -> None:
    plain = fdi.read_request(_load("testrun-request"))
    assert plain["creator"] == "me"
    assert plain["rootcause"] == "server test"
    assert "timeout" not in plain
    assert list(plain["input"]) == ["meta", "theName"]
    assert fdi.dataset_value(plain["input"]["theName"]) == "stranger"
    assert next(iter(plain["input"]["meta"])) == "description"


def test_read_testcalc_request_keeps_objects_and_order() -> None:
    body = _load("testcalc-request")
    plain = fdi.read_request(body)
    product = body["data"]["input"]
    assert plain["input"]["meta"] == product["meta"]["_sets"]["data"]
    assert list(plain["input"]["meta"])[-1] == "testparam"
    assert plain["input"]["testdataset"] == product["_sets"]["data"]["testdataset"]


def test_read_request_passes_timeout() -> None:
    body = _load("testrun-request")
    body["data"]["timeout"] = 5
    assert fdi.read_request(body)["timeout"] == 5
    body["data"]["timeout"] = "5"
    with pytest.raises(ValueError, match="timeout"):
        fdi.read_request(body)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("_STID"), "_STID"),
        (lambda b: b.pop("data"), "data"),
        (lambda b: b["data"].pop("creator"), "creator"),
        (lambda b: b["data"].update(rootcause=1), "rootcause"),
        (lambda b: b["data"].update(input="x"), "input"),
        (lambda b: b["data"]["input"].pop("meta"), "meta"),
        (lambda b: b["data"]["input"]["meta"].pop("_sets"), "_sets"),
        (lambda b: b["data"]["input"]["_sets"].update(data=[]), "data"),
        (lambda b: b["data"]["input"]["_sets"]["data"].update(meta={}), "meta"),
    ],
)
def test_read_request_rejects_malformed_bodies(mutate: Any, message: str) -> None:
    body = _load("testrun-request")
    mutate(body)
    with pytest.raises(ValueError, match=message):
        fdi.read_request(body)


@pytest.mark.parametrize("ds", ["plain", 3, [1], {"no": "data"}])
def test_dataset_value_passes_untagged_values(ds: Any) -> None:
    assert fdi.dataset_value(ds) == ds


def test_fine_time1_counts_milliseconds_since_2017() -> None:
    assert fdi.fine_time1(1483228800.0) == {
        "tai": 0, "format": "%Y-%m-%dT%H:%M:%S.%f UTC", "_STID": "FineTime1"
    }
    assert fdi.fine_time1(1795830331.158)["tai"] == 312601531158


def test_testrun_reply_matches_the_reference() -> None:
    plain = fdi.read_request(_load("testrun-request"))
    sample = _load("testrun-response")
    answer = sample["result"]["_sets"]["data"]["theAnswer"]["data"]
    reply = fdi.testrun_reply(
        creator=plain["creator"], rootcause=plain["rootcause"], answer=answer,
        now=sample["timestamp"],
    )
    got, got_tai = _split_tai(reply)
    want, want_tai = _split_tai(sample["result"])
    assert got == want
    assert abs(got_tai - want_tai) <= 5
    assert json.loads(json.dumps(reply)) == reply


def test_testcalc_reply_matches_the_reference() -> None:
    plain = fdi.read_request(_load("testcalc-request"))
    sample = _load("testcalc-response")
    meta_item, dataset = _first_items(plain)
    reply = fdi.testcalc_reply(
        creator=plain["creator"], rootcause=plain["rootcause"],
        meta_item=meta_item, dataset=dataset,
        spectrum=SPECTRUM, now=sample["timestamp"],
    )
    got, got_tai = _split_tai(reply)
    want, want_tai = _split_tai(sample["result"])
    assert got == want
    assert abs(got_tai - want_tai) <= 5
    # the reply keeps the reference's key order, so its JSON reads the same
    assert list(got["meta"]["_sets"]["data"]) == list(want["meta"]["_sets"]["data"])
    assert list(got["_sets"]["data"]) == ["testdataset", "spectrum"]


def test_testcalc_reply_appends_a_non_standard_meta_item() -> None:
    param = {"value": 1, "_STID": "NumericParameter"}
    reply = fdi.testcalc_reply(
        creator="c", rootcause="r", meta_item=("testparam", param), dataset=("d", 1),
        spectrum=SPECTRUM, now=1483228800.0,
    )
    params = reply["meta"]["_sets"]["data"]
    assert list(params)[-1] == "testparam" and params["testparam"] == param
    assert params["description"]["value"] == "UNKNOWN"


def test_replies_do_not_share_mutable_parts() -> None:
    one = fdi.testrun_reply(creator="a", rootcause="b", answer="x", now=0.0)
    two = fdi.testrun_reply(creator="a", rootcause="b", answer="x", now=0.0)
    one["history"]["meta"]["listeners"].append("changed")
    one["meta"]["_sets"]["data"]["startDate"]["value"]["tai"] = 7
    assert two["history"]["meta"]["listeners"] == []
    assert two["meta"]["_sets"]["data"]["startDate"]["value"]["tai"] == 0
    assert one["meta"]["_sets"]["data"]["startDate"]["default"]["tai"] == 0


def test_product_meta_refuses_unknown_value_names() -> None:
    with pytest.raises(ValueError, match="standard"):
        fdi.product_meta(values={"colour": "red"})
