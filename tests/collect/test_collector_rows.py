"""The collector's generated row builder gives exactly codec.to_units for every field."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from precast import compile_template, parse_template
from precast.collect.rows import row_builder
from precast.wire.codec import to_units
from strategies import examples, raws, templates


def same(a: Any, b: Any) -> bool:
    """Equal value, type and sign of zero (repr tells 0.0 from -0.0 and 1 from 1.0)."""
    return type(a) is type(b) and repr(a) == repr(b)


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_row_builder_is_to_units(data: st.DataObject) -> None:
    layout = data.draw(templates())
    raw = data.draw(raws(layout))
    row = row_builder(layout)((0x50, 0x10, layout.template.id, 7, 9, *raw), 3, "at", "tk", "src")
    assert row[:6] == (7, 9, 3, "at", "tk", "src")
    want = [to_units(s, r) for s, r in zip(layout.fields, raw, strict=True)]
    assert all(same(a, b) for a, b in zip(row[6:], want, strict=True)), (row[6:], want)


@given(
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from([0.1, 0.01, 0.001, 0.25, 2.5]),
    st.sampled_from([0, -40, 273.15, 0.5, -0.005]),
)
def test_exact_division_equals_rounding(raw: int, scale: float, offset: float) -> None:
    """Also for the extremes of i32 and offsets with more decimals than the scale."""
    doc = {"id": 1, "field": [{"name": "x", "type": "i32", "scale": scale, "offset": offset}]}
    layout = compile_template(parse_template(doc))
    row = row_builder(layout)((0, 0, 1, 0, 0, raw), 0, "", "", "")
    assert same(row[6], to_units(layout.fields[0], raw))
