"""A stored reading as a database row and as a JSON object, made fast.

The row is (device, seq, epoch, received_at, source, <fields in units>...), in
the store's column order; the JSON object is what `--jsonl` writes and the
sinks publish: {"template", "device", "seq", "received_at", "fields"}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

from precast.wire.codec import to_units
from precast.wire.header import DEVICE, FIRST_FIELD, SEQ
from precast.wire.layout import Layout

Row = tuple[Any, ...]
RowBuilder = Callable[[tuple[Any, ...], int, str, str], Row]


def row_builder(layout: Layout) -> RowBuilder:
    """A function (unpacked body, epoch, received_at, source) -> the readings row.

    Generated once per template so that each field costs one expression. A
    field in units is codec.to_units: raw * scale + offset, rounded to the
    scale's decimals k. With integers m = scale * 10**k and o = offset * 10**k
    that is (raw * m + o) / 10**k, one correctly rounded division: the same
    float, without round()'s cost. An f32 field carries units (no scale, no
    offset): to_units only names the float32 by its shortest decimal.
    """
    env: dict[str, Any] = {}
    parts = []
    for i, s in enumerate(layout.fields):
        f = s.field
        v = f"v[{FIRST_FIELD + i}]"
        ints = type(f.scale) is int and type(f.offset) is int
        if f.type == "f32":
            env[f"_u{i}"] = partial(to_units, s)
            parts.append(f"_u{i}({v})")
        elif ints and f.scale == 1 and f.offset == 0:
            parts.append(v)
        elif ints or not s.digits:
            parts.append(f"({v} * {f.scale!r} + {f.offset!r})")
        else:
            d = 10**s.digits
            m = Decimal(repr(f.scale)) * d
            o = Decimal(repr(f.offset)) * d
            assert m == int(m) and o == int(o), (f, s.digits)
            parts.append(f"(({v} * {int(m)} + {int(o)}) / {d})")
    head = f"v[{DEVICE}], v[{SEQ}]"
    src = f"def row(v, e, t, s):\n    return ({head}, e, t, s, {', '.join(parts)})\n"
    exec(compile(src, f"<row {layout.template.name}>", "exec"), env)
    fn: RowBuilder = env["row"]
    return fn


def reading_doc(template: int, names: list[str], row: Row) -> dict[str, Any]:
    """The JSON object of a stored row: non-finite floats (an f32 NaN) become null."""
    fields = {
        n: (None if isinstance(x, float) and not math.isfinite(x) else x)
        for n, x in zip(names, row[5:], strict=True)
    }
    return {
        "template": template,
        "device": row[0],
        "seq": row[1],
        "received_at": row[3],
        "fields": fields,
    }
