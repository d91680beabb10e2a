"""The reference's class-tagged JSON form, where every object names its class in ``_STID``.

Owns the translation between that form and the plain data the daemon's demo PTS take: reading
a tagged ``/testrun`` or ``/testcalc`` request into plain fields, and building the tagged
Product replies shaped like the reference implementation's replies. Pure functions on JSON
values: no I/O, no HTTP, no daemon calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STID = "_STID"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f UTC"
# FineTime1 counts milliseconds from 2017-01-01T00:00:00 UTC (Unix time 1483228800)
FINETIME1_EPOCH = 1483228800

# The standard Product metadata, in the reference's order: (name, description, default).
# A default that is None marks a date parameter (FineTime 0).
_STANDARD_META: tuple[tuple[str, str, str | None], ...] = (
    ("description", "Description of this product", "UNKNOWN"),
    ("type", "Product Type identification. Name of class or CARD.", "Product"),
    ("creator", "Generator of this product.", "UNKNOWN"),
    ("creationDate", "Creation date of this product", None),
    ("rootCause", "Reason of this run of pipeline.", "UNKNOWN"),
    ("version", "Version of product", "0.8"),
    ("FORMATV", "Version of product schema and revision", "1.4.0.8"),
    ("startDate", "Nominal start time  of this product.", None),
    ("endDate", "Nominal end time  of this product.", None),
    ("instrument", "Instrument that generated data of this product", "UNKNOWN"),
    ("modelName", "Model name of the instrument of this product", "UNKNOWN"),
    ("mission", "Name of the mission.", "_AGS"),
)


def is_tagged(body: object) -> bool:
    """True when ``body`` is a class-tagged object (a JSON object carrying ``_STID``)."""
    return isinstance(body, Mapping) and STID in body


def read_request(body: object) -> dict[str, Any]:
    """Read a tagged ``{"data": {"creator", "rootcause", "input": Product}}`` into plain form.

    Returns ``{"creator", "rootcause", "input": {"meta": {name: param}, dataset: ds, ...}}``
    plus ``"timeout"`` when the request has one. Parameter and dataset objects are kept as they
    came, in their order. Raises ValueError naming what is malformed.
    """
    if not isinstance(body, Mapping) or STID not in body:
        raise ValueError("not a class-tagged body: expected a JSON object with '_STID'")
    data = _field(body, "data", "the request")
    plain: dict[str, Any] = {
        "creator": _text(data, "creator"),
        "rootcause": _text(data, "rootcause"),
        "input": _read_product(_field(data, "input", "the request's data")),
    }
    timeout = data.get("timeout", body.get("timeout"))
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ValueError("'timeout' must be a number of seconds")
        plain["timeout"] = timeout
    return plain


def dataset_value(ds: Any) -> Any:
    """The payload of a tagged dataset (its ``data``); any other value is returned as is."""
    if isinstance(ds, Mapping) and "data" in ds:
        return ds["data"]
    return ds


def fine_time1(now: float) -> dict[str, Any]:
    """A FineTime1 for Unix time ``now`` (whole milliseconds since 2017-01-01 UTC)."""
    return {"tai": int((now - FINETIME1_EPOCH) * 1000), "format": TIME_FORMAT, STID: "FineTime1"}


def testrun_reply(*, creator: str, rootcause: str, answer: str, now: float) -> dict[str, Any]:
    """The tagged Product the reference answers ``/testrun`` with; ``answer`` is runPTS's text."""
    meta = product_meta(values={
        "description": "test pipeline product", "type": "test", "creator": creator,
        "rootCause": rootcause, "instrument": "hello", "modelName": "you know what!",
        "creationDate": fine_time1(now),
    })
    answer_ds = generic_dataset(answer, description="result from runPTS command")
    return product(meta, {"theAnswer": answer_ds})


def testcalc_reply(
    *,
    creator: str,
    rootcause: str,
    meta_item: tuple[str, Any],
    dataset: tuple[str, Any],
    spectrum: Mapping[str, Mapping[str, Any]],
    now: float,
) -> dict[str, Any]:
    """The tagged Product the reference answers ``/testcalc`` with.

    ``meta_item`` and ``dataset`` are the input's first metadata item and first dataset, copied
    unchanged; ``spectrum`` is plain ``{column: {"data": [...], "unit": str}}``.
    """
    meta = product_meta(
        values={
            "type": "test", "creator": creator, "rootCause": rootcause,
            "instrument": "MyFavourite", "modelName": "Flight", "creationDate": fine_time1(now),
        },
        extra={meta_item[0]: meta_item[1]},
    )
    ds_name, ds_value = dataset
    return product(meta, {ds_name: ds_value, "spectrum": table_dataset(spectrum)})


def product_meta(
    *, values: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The standard Product MetaData with some parameter ``values`` changed.

    ``extra`` maps names to whole parameter objects, placed as they are: a standard name is
    replaced where it stands, a new one is appended.
    """
    unknown = set(values) - {name for name, _, _ in _STANDARD_META}
    if unknown:
        raise ValueError(f"not standard metadata: {sorted(unknown)}")
    params: dict[str, Any] = {}
    for name, description, default in _STANDARD_META:
        if default is None:
            params[name] = date_param(description, values.get(name))
        else:
            params[name] = string_param(description, default, values.get(name, default))
    params.update(extra or {})
    return metadata(params)


def product(meta: dict[str, Any], datasets: Mapping[str, Any]) -> dict[str, Any]:
    """A Product with the given MetaData and datasets, and an empty history."""
    return {"meta": meta, "_sets": odict(datasets), "history": history(),
            "listeners": [], STID: "Product"}


def string_param(description: str, default: str, value: str) -> dict[str, Any]:
    return {"value": value, "description": description, "valid": None, "default": default,
            "typecode": "B", STID: "StringParameter"}


def date_param(description: str, value: dict[str, Any] | None = None) -> dict[str, Any]:
    """A DateParameter; its default (and value unless given) is FineTime 0."""
    return {"description": description, "value": value or fine_time0(), "default": fine_time0(),
            "valid": None, "typecode": TIME_FORMAT, STID: "DateParameter"}


def fine_time0() -> dict[str, Any]:
    return {"tai": 0, "format": TIME_FORMAT, STID: "FineTime"}


def generic_dataset(data: Any, *, description: str) -> dict[str, Any]:
    return {"description": description, "meta": metadata(), "data": data,
            STID: "GenericDataset"}


def table_dataset(columns: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A TableDataset from plain ``{name: {"data": [...], "unit": str}}`` columns."""
    return {"description": "UNKNOWN", "meta": metadata(),
            "data": {name: column(col) for name, col in columns.items()}, STID: "TableDataset"}


def column(col: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(col, Mapping) or "data" not in col:
        raise ValueError("a table column must be a map with 'data' (and 'unit')")
    return {"description": "UNKNOWN", "meta": metadata(), "data": list(col["data"]),
            "type": None, "default": None, "typecode": None, STID: "Column",
            "unit": col.get("unit")}


def metadata(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"_sets": odict(params or {}), "listeners": [], STID: "MetaData"}


def odict(items: Mapping[str, Any]) -> dict[str, Any]:
    return {"data": dict(items), STID: "ODict"}


def history() -> dict[str, Any]:
    return {"description": "UNKNOWN", "HIST_SCRIPT": "", "PARAM_HISTORY": "",
            "TASK_HISTORY": "", "meta": metadata(), "_sets": odict({}), STID: "History"}


def _read_product(value: Mapping[str, Any]) -> dict[str, Any]:
    """A tagged Product as ``{"meta": {name: param}, dataset name: dataset, ...}``."""
    meta = _odict_items(_field(value, "meta", "the input product"), "the input's meta")
    datasets = _odict_items(value, "the input product")
    if "meta" in datasets:
        raise ValueError("the input product has a dataset named 'meta', which the plain form "
                         "reserves for the metadata")
    return {"meta": meta, **datasets}


def _odict_items(holder: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The items of ``holder["_sets"]["data"]`` (how MetaData and Product keep their maps)."""
    sets = _field(holder, "_sets", where)
    return dict(_field(sets, "data", f"{where}'s _sets"))


def _field(holder: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = holder.get(key)
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must hold an object {key!r}")
    return value


def _text(holder: Mapping[str, Any], key: str) -> str:
    value = holder.get(key)
    if not isinstance(value, str):
        raise ValueError(f"the request's data must hold a string {key!r}")
    return value
