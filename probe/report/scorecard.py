"""The scorecard at the top of the report: one row per feature examined, with a verdict chip, the
one number that decides it (with its 95 % interval) and a link to the section that shows it.

Rows, in order:

- each planted feature of ``summary["features"]``: its verdict (relies / no reliance / inconclusive,
  from docs/design.md's reliance rule), decided by the reliance gap; links to its verdict card;
- each discovered shortcut of ``summary["discovered"]`` (when discovery ran): "used shortcut" reads
  *relies*, "used, plausibly task-relevant" keeps its own chip; decided by the override rate;
  links to ``#shortcuts-found``;
- each invariance edit (``change_rate`` rows of ``behaviour.csv``): *relies* when the change rate's
  whole interval lies above ``analyses.reliance_threshold``, *no reliance* when it lies wholly
  below, else *inconclusive* (also when the edit left every input unchanged); links to the
  invariance table;
- each natural property probed (``probing.csv`` properties other than the task and the planted
  features): *correlational only* — probing shows what is decodable, not what is used — decided by
  the amplification (fine-tuned − pretrained probe accuracy) at the layer where it is largest in size;
  links to the probing section.
"""

from __future__ import annotations

import re

import pandas as pd

from probe.report.tables import interval, number

CHIPS = {"relies": "relies", "none": "no reliance", "inconclusive": "inconclusive",
         "correlational": "correlational only", "relevant": "used, plausibly task-relevant"}


def slug(text: str) -> str:
    """A stable anchor id from a name: lower-case letters, digits and single hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def _row(feature: str, kind: str, status: str, metric: str, value, lo, hi, href: str, signed: bool = False,
         note: str = "") -> dict:
    return {"feature": feature, "kind": kind, "status": status, "chip": CHIPS[status], "metric": metric,
            "value": number(value, 2, signed), "ci": interval(lo, hi, 2, signed), "href": href, "note": note}


def _planted(summary: dict) -> list[dict]:
    rows = []
    for f in summary.get("features", []):
        gap = f.get("reliance_gap") or {}
        status = f.get("verdict_status", "inconclusive")
        rows.append(_row(f.get("name", ""), f.get("kind", "planted"), status if status in CHIPS else "inconclusive",
                         "reliance_gap", gap.get("value"), gap.get("ci_low"), gap.get("ci_high"),
                         "#verdict-" + slug(f.get("name", ""))))
    return rows


def _discovered(summary: dict) -> list[dict]:
    rows = []
    for d in summary.get("discovered") or []:
        verdict = str(d.get("verdict", ""))
        status = {"used shortcut": "relies", "used, plausibly task-relevant": "relevant"}.get(verdict, "inconclusive")
        name = f"{d.get('feature', '')} → {d.get('class', '')}" if d.get("class") not in (None, "") \
            else str(d.get("feature", ""))
        q = d.get("q_value")
        rows.append(_row(name, f"discovered {d.get('kind', '')}".strip(), status, "override_rate",
                         d.get("override_rate"), d.get("override_ci_low"), d.get("override_ci_high"),
                         "#shortcuts-found", note=f"q = {number(q, 3)}" if q is not None else ""))
    return rows


def _invariance(behaviour: pd.DataFrame | None, threshold: float) -> list[dict]:
    if behaviour is None or "metric" not in behaviour:
        return []
    rows = []
    for r in behaviour[behaviour.metric == "change_rate"].to_dict("records"):
        lo, hi = float(r["ci_low"]), float(r["ci_high"])
        vacuous = float(r.get("identical_inputs") or 0.0) >= 1.0
        status = ("inconclusive" if vacuous or lo != lo else "relies" if lo > threshold
                  else "none" if hi < threshold else "inconclusive")
        rows.append(_row(str(r["property"]).replace("_", " "), "invariance edit", status, "change_rate",
                         r["value"], lo, hi, "#invariance",
                         note="the edit left every input unchanged" if vacuous else ""))
    return rows


def _natural(probing: pd.DataFrame | None, planted: set[str]) -> list[dict]:
    if probing is None or "metric" not in probing:
        return []
    rows = []
    for prop in dict.fromkeys(probing["property"].astype(str)):
        if prop == "task" or prop in planted or prop.startswith("token:"):
            continue
        amp = probing[(probing["property"].astype(str) == prop) & (probing.metric == "accuracy_difference")]
        amp = amp[amp["value"].astype(float).notna()]
        if amp.empty:
            rows.append(_row(prop.replace("_", " "), "natural property", "correlational", "accuracy_difference",
                             None, None, None, "#probing"))
            continue
        r = amp.loc[amp["value"].astype(float).abs().idxmax()]
        rows.append(_row(prop.replace("_", " "), "natural property", "correlational", "accuracy_difference",
                         r["value"], r["ci_low"], r["ci_high"], "#probing", signed=True,
                         note=f"largest at layer {int(r['layer'])}" if r["layer"] == r["layer"] else ""))
    return rows


def scorecard(summary: dict, tables: dict[str, pd.DataFrame], threshold: float = 0.05) -> list[dict]:
    """The scorecard's rows (see the module docstring); every string is plain text for Jinja to escape."""
    planted = {str(f.get("name", "")) for f in summary.get("features", [])}
    return (_planted(summary) + _discovered(summary) + _invariance(tables.get("behaviour"), threshold)
            + _natural(tables.get("probing"), planted))
