"""The comparison page: ``comparison.csv``, ``comparison_differences.csv`` and a self-contained
``comparison.html`` (Pareto plot of clean vs conflicting accuracy, a one-sentence headline, a
click-to-sort table). Rendering only: the numbers come from :mod:`probe.comparison`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe.comparison import COLUMNS, METRICS, fmt_interval, pareto_optimal
from probe.errors import ProbeError
from probe.report import glossary
from probe.report.scorecard import CHIPS, SEVERITY, slug
from probe.report.tables import interval, number
from probe.rundir import atomic_write_text, read_summary

LABELS = {"flip_to_target": "flips to the token's class", "seeds": "seeds (collapsed)",
          "clean_accuracy": "clean accuracy", "conflicting_accuracy": "conflicting accuracy",
          "s_only_error": "s-only error", "flip_rate": "flip rate", "reliance_gap": "reliance gap",
          "spurious_attribution_share": "IG share on token", "top_layer_cka_drift": "top-layer CKA drift"}

#: One line per column (metric columns cover their ``_ci_low`` / ``_ci_high`` too), for the HTML page.
COLUMN_HELP = {
    "variant": "the run's name (its summary name or folder, or --names); ◆ marks a Pareto-optimal variant",
    "strategy": "finetune.strategy of the run (full, linear_probe, lp_ft, lora, bitfit)",
    "feature": "the planted feature the reliance numbers refer to (the run's first spurious feature)",
    "seeds": "fine-tuning seeds; in brackets how many collapsed (clean accuracy at or near the majority rate)",
    "clean_accuracy": "fine-tuned accuracy on the clean test set (taggers: entity-level F1)",
    "conflicting_accuracy": "accuracy on other-class test examples with the planted token inserted",
    "s_only_error": "fraction of those conflicting examples predicted as the token's class",
    "flip_rate": "fraction of conflicting examples whose prediction changes when the token is inserted",
    "flip_to_target": "conflicting examples not predicted as the token's class before insertion and predicted as it "
                      "after: the s-only error without the model's prior bias toward that class",
    "reliance_gap": "paired drop in accuracy of the conflicting examples when the token is inserted (0 = no reliance)",
    "spurious_attribution_share": "share of integrated-gradients attribution on the planted token, "
                                  "conflicting examples (n/a when attribution did not run)",
    "top_layer_cka_drift": "1 − linear CKA of the last layer, pretrained vs fine-tuned "
                           "(0 = representation unchanged; n/a when similarity did not run)",
    "trainable_parameters": "parameters that fine-tuning updated, and their share of all parameters",
    "training_seconds": "wall-clock seconds of fine-tuning, summed over seeds",
}

INTERVAL_NOTE = ("Intervals are 95 %: across-seed Student-t intervals when a run has several seeds, "
                 "else bootstrap (behaviour, attribution) or jackknife (CKA) intervals over test examples.")


def headline(df: pd.DataFrame) -> str:
    """One sentence: the variant with the smallest reliance gap and its clean-accuracy cost relative to
    the variant named ``full`` (else the first row). Variants whose every seed collapsed are passed
    over (a model that predicts one class relies on nothing), and partial collapse is flagged."""
    if df.empty:
        return "No variants to compare."
    gaps = df["reliance_gap"].astype(float)
    collapsed_all = (df["collapsed_seeds"].fillna(0).astype(int) >= df["seeds"].fillna(1).astype(int)) & \
        (df["collapsed_seeds"].fillna(0).astype(int) > 0)
    candidates = gaps[gaps.notna() & ~collapsed_all]
    skipped = [str(v) for v in df.loc[gaps.notna() & collapsed_all, "variant"]]
    skip_note = (f" ({', '.join(skipped)} left out: every seed collapsed to the majority class.)"
                 if skipped else "")
    if candidates.empty:
        if skipped:
            return "No variant has a usable reliance gap: every seed of every measured variant collapsed."
        return "No variant measured a reliance gap (no planted feature was configured)."
    # the smallest gap; among equal gaps, the higher clean accuracy
    ranked = pd.DataFrame({"gap": candidates,
                           "clean": df.loc[candidates.index, "clean_accuracy"].astype(float).fillna(-np.inf)})
    best = df.loc[ranked.sort_values(["gap", "clean"], ascending=[True, False], kind="stable").index[0]]
    ref_rows = df[df["variant"].astype(str) == "full"]
    ref = ref_rows.iloc[0] if not ref_rows.empty else df.iloc[0]
    ref_label = "full" if not ref_rows.empty else f"{ref['variant']} (the first variant)"
    gap = fmt_interval(best["reliance_gap"], best["reliance_gap_ci_low"], best["reliance_gap_ci_high"])
    s = f"{best['variant']} has the smallest reliance gap, {gap}"
    if best["variant"] == ref["variant"]:
        s += f"; it is the reference variant, so it costs nothing in clean accuracy ({fmt_interval(best['clean_accuracy'])})."
    else:
        ref_gap = fmt_interval(ref["reliance_gap"], ref["reliance_gap_ci_low"], ref["reliance_gap_ci_high"])
        s += f" against {ref_gap} for {ref_label}"
        b_acc, r_acc = float(best["clean_accuracy"]), float(ref["clean_accuracy"])
        if b_acc != b_acc or r_acc != r_acc:
            s += "; the clean-accuracy cost cannot be computed (clean accuracy missing)."
        else:
            d = b_acc - r_acc
            how = (f"{-d:.2f} lower than" if d < -0.005 else f"{d:.2f} higher than" if d > 0.005
                   else "the same as")
            b_ci = fmt_interval(b_acc, best["clean_accuracy_ci_low"], best["clean_accuracy_ci_high"])
            r_ci = fmt_interval(r_acc, ref["clean_accuracy_ci_low"], ref["clean_accuracy_ci_high"])
            s += f"; its clean accuracy, {b_ci}, is {how} that of {ref['variant']}, {r_ci}."
    n_col = best["collapsed_seeds"]
    if pd.notna(n_col) and int(n_col) > 0:
        s += f" Caution: {int(n_col)} of its {int(best['seeds'])} seeds collapsed."
    return s + skip_note


def _sort_key(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "" if f != f else repr(f)


def _table(df: pd.DataFrame, optimal: pd.Series) -> tuple[list[dict], list[dict]]:
    """Header cells, and body rows (``pareto``, ``cells`` of ``text`` and ``sort``) of the HTML table;
    all plain strings, escaped by Jinja."""
    header = [{"key": "variant", "label": "variant", "numeric": False},
              {"key": "strategy", "label": "strategy", "numeric": False},
              {"key": "seeds", "label": "seeds (collapsed)", "numeric": True}]
    header += [{"key": m, "label": LABELS[m], "numeric": True} for m in METRICS]
    header += [{"key": "trainable_parameters", "label": "trainable parameters", "numeric": True},
               {"key": "training_seconds", "label": "training seconds", "numeric": True},
               {"key": "path", "label": "run directory", "numeric": False}]
    for h in header:
        h["help"] = COLUMN_HELP.get(h["key"], "")
    body = []
    for i, r in df.iterrows():
        seeds = "n/a" if pd.isna(r["seeds"]) else str(int(r["seeds"]))
        collapsed = "" if pd.isna(r["collapsed_seeds"]) else f" ({int(r['collapsed_seeds'])})"
        cells = [{"text": ("◆ " if optimal[i] else "") + str(r["variant"]), "sort": str(r["variant"])},
                 {"text": str(r["strategy"]) or "n/a", "sort": str(r["strategy"])},
                 {"text": seeds + collapsed, "sort": _sort_key(r["seeds"])}]
        for m in METRICS:
            cells.append({"text": number(r[m]), "ci": interval(r[f"{m}_ci_low"], r[f"{m}_ci_high"]),
                          "sort": _sort_key(r[m])})
        tp, total = r["trainable_parameters"], r["total_parameters"]
        if tp != tp:
            tp_text = "n/a"
        elif total == total and total > 0:
            tp_text = f"{int(tp):,} ({100 * tp / total:.2g} %)"
        else:
            tp_text = f"{int(tp):,}"
        cells.append({"text": tp_text, "sort": _sort_key(tp)})
        sec = r["training_seconds"]
        cells.append({"text": "n/a" if sec != sec else f"{sec:.1f}", "sort": _sort_key(sec)})
        cells.append({"text": str(r["path"]), "sort": str(r["path"])})
        body.append({"pareto": bool(optimal[i]), "cells": cells, "id": "variant-" + slug(r["variant"])})
    return header, body


def _verdict_status(path: Any, feature: str) -> str:
    """The run's own verdict for ``feature`` (``summary.json``); ``inconclusive`` when it cannot be read."""
    try:
        features = read_summary(Path(str(path))).get("features", [])
    except (ProbeError, OSError):
        return "inconclusive"
    status = next((f.get("verdict_status") for f in features if f.get("name") == feature), None)
    return status if status in ("relies", "none", "inconclusive") else "inconclusive"


def scorecard(df: pd.DataFrame) -> list[dict]:
    """One row per variant: its run's verdict on the planted feature (relies / no reliance /
    inconclusive, read from the run's ``summary.json``), the reliance gap that decides it and the clean
    accuracy, with a link to the variant's row. Variants without a planted feature have no row."""
    rows = []
    for r in df.to_dict("records"):
        if not str(r["feature"]):
            continue
        status = _verdict_status(r["path"], str(r["feature"]))
        rows.append({"variant": str(r["variant"]), "strategy": str(r["strategy"]), "feature": str(r["feature"]),
                     "status": status, "chip": CHIPS[status],
                     "gap": number(r["reliance_gap"], 2), "gap_ci": interval(r["reliance_gap_ci_low"],
                                                                           r["reliance_gap_ci_high"], 2),
                     "clean": number(r["clean_accuracy"], 2),
                     "clean_ci": interval(r["clean_accuracy_ci_low"], r["clean_accuracy_ci_high"], 2),
                     "href": "#variant-" + slug(r["variant"])})
    return sorted(rows, key=lambda r: SEVERITY.index(r["status"]))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _overrides(ref_path: Any, path: Any) -> list[str] | None:
    """``key=value`` settings that turn the reference run's config.yaml into the variant's (name and output
    folder aside); None when either cannot be read."""
    import yaml

    try:
        ref, var = (_flat(yaml.safe_load((Path(str(p)) / "config.yaml").read_text(encoding="utf-8")))
                    for p in (ref_path, path))
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    skip = ("name", "output_dir", "compare")
    keys = [k for k in var if not k.startswith(skip) and ref.get(k) != var[k]]
    keys += [k for k in ref if k not in var and not k.startswith(skip)]
    return [f"{k}={yaml.safe_dump(var.get(k), default_flow_style=True).strip().removesuffix('...').strip()}"
            for k in keys]


def reference_index(df: pd.DataFrame) -> int:
    """The baseline row: the variant named ``full``, else the first."""
    full = df.index[df["variant"].astype(str) == "full"]
    return int(full[0]) if len(full) else int(df.index[0])


def next_step(df: pd.DataFrame, statuses: list[str]) -> dict:
    """The variant whose run found no reliance ("removed the shortcut") at the least cost to clean accuracy
    (the highest clean accuracy among them), with the command that applies its settings to the baseline's
    config; ``{}`` when no variant removed it or the baseline itself shows no reliance."""
    from probe.report.impact import command

    ref = reference_index(df)
    if statuses[ref] != "relies":
        return {}
    removed = [i for i in df.index if statuses[i] == "none" and i != ref]
    if not removed:
        return {"ref": ref, "sentence": "No variant removed the shortcut: every run still relies on it or is "
                "inconclusive.", "command": ""}
    best = max(removed, key=lambda i: float(df.loc[i, "clean_accuracy"]) if df.loc[i, "clean_accuracy"] ==
               df.loc[i, "clean_accuracy"] else -1.0)
    b, r = df.loc[best], df.loc[ref]
    cost = float(r["clean_accuracy"]) - float(b["clean_accuracy"])
    how = (f"costs {cost:.2f} of clean accuracy" if cost > 0.005 else f"raises clean accuracy by {-cost:.2f}"
           if cost < -0.005 else "keeps clean accuracy")
    sets = _overrides(r["path"], b["path"])
    cmd = command(f"{r['path']}/config.yaml", f"{r['variant']}-{b['variant']}", sets) if sets else ""
    return {"ref": ref, "best": best, "command": cmd,
            "sentence": f"Next step: {b['variant']} removed the shortcut (its run finds no reliance: reliance gap "
                        f"{fmt_interval(b['reliance_gap'], b['reliance_gap_ci_low'], b['reliance_gap_ci_high'])}) "
                        f"and {how} against {r['variant']} ({fmt_interval(b['clean_accuracy'])} vs "
                        f"{fmt_interval(r['clean_accuracy'])}); of the variants that removed it, it costs least."}


PANEL = ("clean_accuracy", "conflicting_accuracy", "reliance_gap", "s_only_error", "flip_rate")


def panel(df: pd.DataFrame, ref: int, other: int) -> dict:
    """Baseline against one variant, metric by metric: both values with intervals and the difference."""
    r, v = df.loc[ref], df.loc[other]
    rows = []
    for m in PANEL:
        d = float(v[m]) - float(r[m])
        rows.append({"metric": LABELS[m], "help": glossary.definition(m),
                     "ref": number(r[m], 2), "ref_ci": interval(r[f"{m}_ci_low"], r[f"{m}_ci_high"], 2),
                     "var": number(v[m], 2), "var_ci": interval(v[f"{m}_ci_low"], v[f"{m}_ci_high"], 2),
                     "diff": number(d, 2, signed=True)})
    return {"ref": str(r["variant"]), "var": str(v["variant"]), "rows": rows}


def write_comparison(df: pd.DataFrame, out_dir: str | Path, differences: pd.DataFrame | None = None) -> Path:
    """Write ``comparison.csv`` (``df`` as is) and a self-contained ``comparison.html`` to ``out_dir``;
    returns the HTML's path. With ``differences`` (:func:`paired_differences`) also
    ``comparison_differences.csv`` and a table of them. Every string from the runs is escaped
    (Jinja autoescaping)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ProbeError(f"write_comparison: the table lacks column {missing[0]!r}; build it with probe.compare")
    from probe.report import figures

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ProbeError(f"{str(out_dir)!r} exists and is not a directory")
    df = df.reset_index(drop=True)
    optimal = pareto_optimal(df)
    atomic_write_text(out_dir / "comparison.csv", df.to_csv(index=False, float_format="%.10g"))
    diff_rows = []
    if differences is not None and len(differences):
        atomic_write_text(out_dir / "comparison_differences.csv",
                          differences.to_csv(index=False, float_format="%.10g"))
        diff_rows = [{"variant": r.variant, "reference": r.reference, "feature": r.feature,
                      "metric": LABELS.get(r.metric, r.metric), "help": glossary.definition(r.metric),
                      "text": number(r.value, signed=True), "ci": interval(r.ci_low, r.ci_high, signed=True),
                      "sort": _sort_key(r.value),
                      "real": bool(r.ci_low > 0 or r.ci_high < 0)} for r in differences.itertuples()]
    plotted = df["clean_accuracy"].notna() & df["conflicting_accuracy"].notna()
    figure = None
    if plotted.any():
        from probe.report.takeaways import figure as fig

        front = ", ".join(str(v) for v in df.loc[optimal & plotted, "variant"])
        top = df.loc[df["conflicting_accuracy"].astype(float).idxmax()]
        figure = fig(figures.pareto_figure(df[plotted], optimal[plotted].tolist()),
                     "Clean against conflicting accuracy, one point per variant",
                     f"Pareto-optimal: {front}; the highest conflicting accuracy is {top['variant']}'s "
                     f"({number(top['conflicting_accuracy'], 2)}, clean {number(top['clean_accuracy'], 2)}).")
    header, body = _table(df, optimal)
    features = sorted({str(f) for f in df["feature"] if str(f)})
    from probe.report.render import environment

    statuses = [_verdict_status(p, str(f)) if str(f) else "" for p, f in zip(df["path"], df["feature"])]
    step = next_step(df, statuses) if len(df) else {}
    if step.get("best") is not None:
        shown = panel(df, step["ref"], step["best"])
    elif len(df) > 1:
        ref = reference_index(df)
        shown = panel(df, ref, next(i for i in df.index if i != ref))
    else:
        shown = None
    html = environment().get_template("compare.html.j2").render(
        step=step, panel=shown,
        scorecard=scorecard(df), has_differences=bool(diff_rows),
        n=len(df), headline=headline(df), figure=figure, header=header, body=body,
        column_help=COLUMN_HELP, labels=LABELS, interval_note=INTERVAL_NOTE, features=features,
        pareto=[str(v) for v in df.loc[optimal, "variant"]],
        not_plotted=[str(v) for v in df.loc[~plotted, "variant"]], differences=diff_rows,
    )
    out = out_dir / "comparison.html"
    atomic_write_text(out, html)
    return out
