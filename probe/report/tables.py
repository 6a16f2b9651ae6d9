"""Tables as the pages show them: human column names with definitions, a value with its 95 % interval
in one cell, heat-coloured per-layer grids, sort keys, and the CSV each table comes from.

A table is a plain dict, rendered by the ``table`` macro of ``templates/_page.html.j2``::

    {"id": "probing-all", "csv": "tables/probing.csv", "collapsed": True, "note": "",
     "columns": [{"label", "title", "numeric"}], "rows": [[{"text", "ci", "sort", "bg", "title"}]]}

Every string is plain text, escaped by Jinja; ``bg`` is a colour computed here from numbers only.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from probe.report import glossary

#: colour-blind safe (Okabe & Ito): blue for negative / low, vermillion for positive.
BLUE, VERMILLION = (0, 114, 178), (213, 94, 0)
#: tables with more rows than this are collapsed by default
COLLAPSE_ROWS = 25
#: columns that count or index things: a whole number there prints as an integer (layer 6, not 6.000)
INTEGER_COLUMNS = {"layer", "head", "n", "count", "seed", "rank", "epoch", "example", "support", "predicted",
                   "n_insert", "n_delete", "position", "layer_pre", "layer_fine", "step"}


def _known(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def number(v: Any, digits: int = 3, signed: bool = False) -> str:
    """``v`` rounded to ``digits`` (with a sign when ``signed``); ``n/a`` when missing."""
    if not _known(v):
        return "n/a"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def interval(lo: Any, hi: Any, digits: int = 3, signed: bool = False) -> str:
    """``"lo – hi"``, the 95 % interval as the cells show it under their value; ``""`` when missing."""
    if not (_known(lo) and _known(hi)):
        return ""
    return f"{number(lo, digits, signed)} – {number(hi, digits, signed)}"


def sort_key(v: Any) -> str:
    """What the page sorts a cell by: the number for numbers, else the text; missing values sort last."""
    if _known(v):
        return repr(float(v))
    if isinstance(v, float):
        return ""
    return str(v)


def _heat(v: Any, scale: float, signed: bool, low: float = 0.0) -> str:
    """A background colour for ``v``: diverging around 0 when ``signed``, else sequential from ``low``."""
    if not _known(v) or scale <= 0:
        return ""
    if signed:
        share, rgb = min(abs(v) / scale, 1.0), (VERMILLION if v > 0 else BLUE)
    else:
        share, rgb = min(max((v - low) / scale, 0.0), 1.0), BLUE
    return f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {0.5 * share:.2f})"


def column(name: str, numeric: bool = False, label: str | None = None) -> dict:
    return {"label": label or glossary.label(name), "title": glossary.definition(name), "numeric": numeric}


def _plain_cell(name: str, v: Any) -> dict:
    if name == "metric" or (name == "property" and v in glossary.TERMS):
        return {"text": glossary.label(str(v)), "sort": str(v), "title": glossary.definition(str(v))}
    if isinstance(v, float):
        if v != v:
            return {"text": "", "sort": ""}
        if name in INTEGER_COLUMNS and v.is_integer():
            return {"text": str(int(v)), "sort": sort_key(v)}
        small = 0 < abs(v) < 0.001  # a q-value, a tiny C: keep its significant digits
        text = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2g}" if small else f"{v:.3f}"
        return {"text": text, "sort": sort_key(v)}
    return {"text": str(v), "sort": sort_key(v)}


def value_cell(v: Any, lo: Any, hi: Any, signed: bool = False, bg: str = "") -> dict:
    """A cell reading ``v`` with its 95 % interval ``lo – hi`` under it."""
    return {"text": number(v, signed=signed), "ci": interval(lo, hi, signed=signed), "sort": sort_key(v), "bg": bg}


def table(tid: str, csv: str, columns: list[dict], rows: list[list[dict]], collapsed: bool | None = None,
          note: str = "", caption: str = "") -> dict:
    """A table dict; collapsed by default when it has more than ``COLLAPSE_ROWS`` rows."""
    if collapsed is None:
        collapsed = len(rows) > COLLAPSE_ROWS
    return {"id": tid, "csv": csv, "columns": columns, "rows": rows, "collapsed": collapsed, "note": note,
            "caption": caption}


def tidy(df: pd.DataFrame, tid: str, csv: str, collapsed: bool | None = None, caption: str = "") -> dict:
    """A tidy table as is, with human column and metric names; ``value``, ``ci_low`` and ``ci_high``
    become one cell (the value, its interval under it)."""
    merged = {"value", "ci_low", "ci_high"} <= set(df.columns)
    names = [c for c in df.columns if not (merged and c in ("ci_low", "ci_high"))]
    cols = [column("value_ci" if merged and c == "value" else c,
                   numeric=pd.api.types.is_numeric_dtype(df[c]) or c == "value") for c in names]
    rows = []
    for r in df.to_dict("records"):
        rows.append([value_cell(r["value"], r["ci_low"], r["ci_high"]) if merged and c == "value"
                     else _plain_cell(c, r[c]) for c in names])
    return table(tid, csv, cols, rows, collapsed, caption=caption)


def layer_grid(df: pd.DataFrame, index: list[str], tid: str, csv: str, signed: bool = True,
               collapsed: bool | None = None, note: str = "") -> dict:
    """``index`` × layer grid of ``value`` with its interval, heat-coloured: diverging around 0 when
    ``signed`` (vermillion positive, blue negative), else sequential over the grid's range."""
    values = df["value"].astype(float)
    finite = values[values.map(math.isfinite)]
    low = 0.0 if signed or finite.empty else float(finite.min())
    scale = (float(finite.abs().max()) if signed else float(finite.max()) - low) if not finite.empty else 0.0
    layers = sorted({int(v) for v in df["layer"].dropna()})
    cols = [column(c) for c in index] + [{"label": f"layer {layer}", "title": "", "numeric": True} for layer in layers]
    rows = []
    for key, g in df.groupby(index, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        by_layer = {int(r.layer): r for r in g.itertuples() if r.layer == r.layer}
        row = [_plain_cell(c, k) for c, k in zip(index, key)]
        for layer in layers:
            r = by_layer.get(layer)
            row.append(value_cell(r.value, r.ci_low, r.ci_high, signed, _heat(r.value, scale, signed, low))
                       if r is not None else {"text": "", "sort": ""})
        rows.append(row)
    return table(tid, csv, cols, rows, collapsed, note)


def wide(df: pd.DataFrame, index: list[str], tid: str, csv: str, collapsed: bool | None = None) -> dict:
    """``index`` × metric table: one column per metric (human name, definition on hover), cells
    reading the value with its interval."""
    metrics = list(dict.fromkeys(df["metric"]))
    cols = [column(c) for c in index] + [column(m, True) for m in metrics]
    rows = []
    for key, g in df.groupby(index, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        by_metric = {r.metric: r for r in g.itertuples()}
        row = [_plain_cell(c, k) for c, k in zip(index, key)]
        for m in metrics:
            r = by_metric.get(m)
            row.append(value_cell(r.value, r.ci_low, r.ci_high) if r is not None else {"text": "", "sort": ""})
        rows.append(row)
    return table(tid, csv, cols, rows, collapsed)


def names_used(tables: list[dict]) -> set[str]:
    """Machine names whose human names the given tables show (for the glossary)."""
    by_label = {}
    for name, (human, _) in glossary.TERMS.items():
        by_label.setdefault(human, name)
    used = set()
    for t in tables:
        for c in t["columns"]:
            if c["label"] in by_label:
                used.add(by_label[c["label"]])
        for row in t["rows"]:
            for cell in row:
                if cell.get("title") and cell["text"] in by_label:
                    used.add(by_label[cell["text"]])
    return used
