"""The scorecard at the top of the report: one row per feature examined, with a verdict chip, the
one number that decides it (with its 95 % interval) and a link to the section that shows it.

Rows, in order:

- each planted feature of ``summary["features"]``: its verdict (relies / no reliance / inconclusive,
  from docs/design.md's reliance rule), decided by the reliance gap; links to its verdict card;
- each discovered shortcut of ``summary["discovered"]`` (when discovery ran): "used shortcut" reads
  *relies*, "used, plausibly task-relevant" keeps its own chip; decided by the override rate;
  links to ``#shortcuts-found``; a label-word prompt's template element whose change moves predictions reads
  *relies*, decided by its effect (flip rate minus the control edit's), and links to ``#discovery-prompt``;
- each invariance edit (``change_rate`` rows of ``behaviour.csv``): *relies* when the change rate's
  whole interval lies above ``analyses.reliance_threshold``, *no reliance* when it lies wholly
  below, else *inconclusive* (also when the edit left every input unchanged); links to the
  invariance table;
- each natural property probed (``probing.csv`` properties other than the task and the planted
  features): *correlational only* — probing shows what is decodable, not what is used — decided by
  the amplification (fine-tuned − pretrained probe accuracy) at the layer where it is largest in size;
  links to the probing section; *uninformative* instead when no probe of it, at any layer of either
  model, beats the majority rate (its interval's lower end never above the majority baseline): a
  property the probes can only predict as its majority value says nothing either way.

Each row carries the threshold of its deciding number and its rule in words (Evidently-style: the value
next to what it is judged against), the n it is computed on, and rows sort by severity: relies first,
then plausibly task-relevant, inconclusive, no reliance, correlational, uninformative.
"""

from __future__ import annotations

import re

import pandas as pd

from probe.report.tables import interval, number

CHIPS = {"relies": "relies", "none": "no reliance", "inconclusive": "inconclusive",
         "correlational": "correlational only", "relevant": "used, plausibly task-relevant",
         "uninformative": "uninformative"}
#: each chip's glossary entry (probe.report.glossary.TERMS)
CHIP_TERMS = {"relies": "verdict_relies", "none": "verdict_none", "inconclusive": "verdict_inconclusive",
              "relevant": "verdict_relevant", "correlational": "correlational", "uninformative": "uninformative"}
#: the order rows sort in: most severe first
SEVERITY = ("relies", "relevant", "inconclusive", "none", "correlational", "uninformative")


def slug(text: str) -> str:
    """A stable anchor id from a name: lower-case letters, digits and single hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def _row(feature: str, kind: str, status: str, metric: str, value, lo, hi, href: str, signed: bool = False,
         note: str = "", n=None, threshold: str = "", rule: str = "") -> dict:
    known_n = isinstance(n, (int, float)) and n == n
    return {"feature": feature, "kind": kind, "status": status, "chip": CHIPS[status], "chip_term": CHIP_TERMS[status],
            "metric": metric,
            "value": number(value, 2, signed), "ci": interval(lo, hi, 2, signed), "href": href, "note": note,
            "n": f"n = {int(n)}" if known_n else "", "threshold": threshold, "rule": rule,
            "severity": SEVERITY.index(status)}


def _n(table: pd.DataFrame | None, prop: str, metric: str):
    """The ``n`` column of ``table``'s row for (``prop``, ``metric``), or None."""
    if table is None or "n" not in table or "metric" not in table:
        return None
    r = table[(table["property"].astype(str) == prop) & (table.metric == metric)]["n"].dropna()
    return float(r.iloc[0]) if len(r) else None


def _planted(summary: dict, behaviour: pd.DataFrame | None, threshold: float) -> list[dict]:
    rows = []
    for f in summary.get("features", []):
        gap = f.get("reliance_gap") or {}
        status = f.get("verdict_status", "inconclusive")
        rows.append(_row(f.get("name", ""), f.get("kind", "planted"), status if status in CHIPS else "inconclusive",
                         "reliance_gap", gap.get("value"), gap.get("ci_low"), gap.get("ci_high"),
                         "#verdict-" + slug(f.get("name", "")), n=_n(behaviour, f.get("name", ""), "reliance_gap"),
                         threshold=f"{threshold:g}",
                         rule=f"relies: whole interval above {threshold:g}; no reliance: wholly below it and the "
                              f"model learned the task; else inconclusive"))
    return rows


def _discovered(summary: dict, q: float, min_effect: float) -> list[dict]:
    rows = []
    for d in summary.get("discovered") or []:
        verdict = str(d.get("verdict", ""))
        if d.get("kind") == "template":  # a prompt's template element: decided by the flip rate over its control
            rows.append(_row(str(d.get("feature", "")), "discovered template element", "relies", "effect",
                             d.get("effect"), d.get("effect_ci_low"), d.get("effect_ci_high"), "#discovery-prompt",
                             note=f"q = {number(d.get('q_value'), 3)}", n=d.get("n"),
                             threshold=f"q ≤ {q:g}, effect > {min_effect:g}",
                             rule=f"format moves predictions: the variant flips more predictions than a same-size "
                                  f"control edit at q ≤ {q:g}, the effect's whole interval above {min_effect:g}"))
            continue
        status = {"used shortcut": "relies", "used, plausibly task-relevant": "relevant"}.get(verdict, "inconclusive")
        name = f"{d.get('feature', '')} → {d.get('class', '')}" if d.get("class") not in (None, "") \
            else str(d.get("feature", ""))
        qv = d.get("q_value")
        rows.append(_row(name, f"discovered {d.get('kind', '')}".strip(), status, "override_rate",
                         d.get("override_rate"), d.get("override_ci_low"), d.get("override_ci_high"),
                         "#shortcuts-found", note=f"q = {number(qv, 3)}" if qv is not None else "",
                         n=d.get("n_insert"), threshold=f"q ≤ {q:g}, effect > {min_effect:g}",
                         rule=f"used shortcut: inserting the word beats control words at q ≤ {q:g} and the "
                              f"override effect's whole interval lies above {min_effect:g}"))
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
                         note="the edit left every input unchanged" if vacuous else "", n=r.get("n"),
                         threshold=f"{threshold:g}",
                         rule=f"relies: whole interval above {threshold:g}; no reliance: wholly below; else "
                              "inconclusive"))
    return rows


def uninformative(probing: pd.DataFrame, prop: str) -> bool:
    """No probe of ``prop`` beats the majority rate anywhere: at every (model, layer) the probe accuracy's
    interval starts at or below the majority baseline (False when there are no such rows to judge)."""
    p = probing[probing["property"].astype(str) == prop]
    acc = p[p.metric == "accuracy"].set_index(["model", "layer"])["ci_low"].astype(float)
    base = p[p.metric == "majority_baseline"].set_index(["model", "layer"])["value"].astype(float)
    both = acc.index.intersection(base.index)
    return len(both) > 0 and not bool((acc.loc[both] > base.loc[both] + 1e-9).any())


CORRELATIONAL = "correlational only: probing shows what is decodable, not what the model uses"


def _natural(probing: pd.DataFrame | None, planted: set[str]) -> list[dict]:
    if probing is None or "metric" not in probing:
        return []
    rows = []
    for prop in dict.fromkeys(probing["property"].astype(str)):
        if prop == "task" or prop in planted or prop.startswith("token:"):
            continue
        amp = probing[(probing["property"].astype(str) == prop) & (probing.metric == "accuracy_difference")]
        amp = amp[amp["value"].astype(float).notna()]
        if uninformative(probing, prop):
            p = probing[probing["property"].astype(str) == prop]
            acc = p[p.metric == "accuracy"].dropna(subset=["value"])
            best = acc.loc[acc["value"].astype(float).idxmax()] if not acc.empty else {}
            base = p.loc[p.metric == "majority_baseline", "value"].astype(float)
            rows.append(_row(prop.replace("_", " "), "natural property", "uninformative", "accuracy",
                             best.get("value"), best.get("ci_low"), best.get("ci_high"), "#probing",
                             note=f"best probe; majority baseline {base.max():.2f}" if len(base) else "",
                             rule="uninformative: no probe's interval rises above the majority baseline"))
            continue
        if amp.empty:
            rows.append(_row(prop.replace("_", " "), "natural property", "correlational", "accuracy_difference",
                             None, None, None, "#probing", rule=CORRELATIONAL))
            continue
        r = amp.loc[amp["value"].astype(float).abs().idxmax()]
        rows.append(_row(prop.replace("_", " "), "natural property", "correlational", "accuracy_difference",
                         r["value"], r["ci_low"], r["ci_high"], "#probing", signed=True,
                         note=f"largest at layer {int(r['layer'])}" if r["layer"] == r["layer"] else "",
                         rule=CORRELATIONAL))
    return rows


def scorecard(summary: dict, tables: dict[str, pd.DataFrame], threshold: float = 0.05, q: float = 0.05,
              min_effect: float = 0.1) -> list[dict]:
    """The scorecard's rows (see the module docstring), most severe first; every string is plain text for
    Jinja to escape. ``q`` and ``min_effect``: the run's ``discover.q`` and ``discover.min_effect``."""
    planted = {str(f.get("name", "")) for f in summary.get("features", [])}
    rows = (_planted(summary, tables.get("behaviour"), threshold) + _discovered(summary, q, min_effect)
            + _invariance(tables.get("behaviour"), threshold) + _natural(tables.get("probing"), planted))
    return sorted(rows, key=lambda r: r["severity"])
