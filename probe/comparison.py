"""Compare finished runs that differ in their fine-tuning recipe: one row per run ("variant").

``probe.compare(["reports/full", "reports/lora"])`` reads each run directory (DESIGN.md §3)
and returns a DataFrame of the headline numbers with their intervals; :func:`write_comparison`
writes ``comparison.csv`` and a self-contained ``comparison.html`` (Pareto plot of clean vs
conflicting accuracy, a click-to-sort table). Reading only: nothing here recomputes an analysis.

The module is callable (``probe.compare(...)`` works whether ``probe.compare`` resolves to this
module or to :func:`compare`), because the public function and the module share a name.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe.errors import ProbeError
from probe.rundir import atomic_write_text

#: Behaviour metrics of the first planted feature, in column order; ``clean_accuracy`` is the task's.
BEHAVIOUR_METRICS = ("clean_accuracy", "conflicting_accuracy", "s_only_error", "flip_rate", "reliance_gap")
#: Metrics with intervals, in column order (each followed by ``<metric>_ci_low`` and ``<metric>_ci_high``).
METRICS = BEHAVIOUR_METRICS + ("spurious_attribution_share", "top_layer_cka_drift")
ID_COLUMNS = ("variant", "path", "strategy", "feature", "seeds", "collapsed_seeds")
COST_COLUMNS = ("trainable_parameters", "total_parameters", "training_seconds")
COLUMNS = (list(ID_COLUMNS) + [f"{m}{s}" for m in METRICS for s in ("", "_ci_low", "_ci_high")]
           + list(COST_COLUMNS))

LABELS = {"flip_to_target": "flips to the token's class",
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


def compare(paths: str | Path | Sequence[str | Path], names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per finished run directory in ``paths``, in the given order.

    ``names`` (optional, one per path) overrides the variant names; by default a variant is
    called by its ``summary["name"]`` or, failing that or when two runs share it, its folder.
    A path that is not a complete run (``summary.json`` with ``status == "complete"`` and
    ``tables/behaviour.csv``) raises :class:`~probe.errors.ProbeError` naming the path.

    Columns, in this order (``COLUMNS``):

    - ``variant``, ``path`` (as given), ``strategy`` (``finetune.strategy`` from ``config.yaml``;
      ``"full"`` for runs older than the setting), ``feature`` (the first planted feature, e.g.
      ``token:zebra``; ``""`` when none was configured),
    - ``seeds`` (how many fine-tuning seeds), ``collapsed_seeds`` (per-seed rows of
      ``summary["per_seed"]`` marked ``collapsed``),
    - for each of ``clean_accuracy``, ``conflicting_accuracy``, ``s_only_error``, ``flip_rate``,
      ``reliance_gap``, ``spurious_attribution_share``, ``top_layer_cka_drift``: the value, then
      ``<metric>_ci_low`` and ``<metric>_ci_high``,
    - ``trainable_parameters``, ``total_parameters``, ``training_seconds``.

    Behaviour numbers come from ``tables/behaviour.csv`` (``clean_accuracy`` of property
    ``task``, the rest of the first planted feature); attribution from ``tables/attribution.csv``
    (fine-tuned model, integrated gradients, conflicting partition); the CKA drift is
    ``1 - linear_cka`` of the largest layer in ``tables/cka.csv`` (interval flipped accordingly).
    Where a run has several seeds the ``seed == "all"`` rows (across-seed mean, t-interval) are
    used, else the single seed's rows. Costs come from ``summary["training"]`` (keys
    ``trainable_parameters``, ``total_parameters``, ``seconds``); for older runs the seconds
    fall back to the sum of ``models/finetuned*/training.json`` ``seconds``. Anything a run did
    not measure is NaN.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ProbeError("compare: give at least one run directory")
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(paths):
            raise ProbeError(f"compare: {len(names)} name{'s' if len(names) != 1 else ''} for {len(paths)} run "
                             f"director{'ies' if len(paths) != 1 else 'y'}; give one name per run")
    rows = [_variant_row(Path(p)) for p in paths]
    _assign_names(rows, [Path(p) for p in paths], names)
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("seeds", "collapsed_seeds"):
        df[col] = df[col].astype("Int64")
    for col in COLUMNS[len(ID_COLUMNS):]:
        df[col] = df[col].astype(float)
    return df


def _assign_names(rows: list[dict], paths: list[Path], names: list[str] | None) -> None:
    if names is not None:
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ProbeError(f"compare: variant name {dup[0]!r} is given twice; names must be unique")
        for row, n in zip(rows, names):
            row["variant"] = n
        return
    chosen = [row.pop("_summary_name") or p.resolve().name for row, p in zip(rows, paths)]
    clashing = {n for n in chosen if chosen.count(n) > 1}
    chosen = [p.resolve().name if n in clashing else n for n, p in zip(chosen, paths)]
    dup = sorted({n for n in chosen if chosen.count(n) > 1})
    if dup:
        raise ProbeError(f"compare: two runs would both be called {dup[0]!r}; name them with names=[...] "
                         "(probe compare --names a,b,...)")
    for row, n in zip(rows, chosen):
        row["variant"] = n


def _read_summary(path: Path) -> dict:
    if not path.exists():
        raise ProbeError(f"{str(path)!r} does not exist")
    if not path.is_dir():
        raise ProbeError(f"{str(path)!r} is not a directory; give a run directory")
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise ProbeError(f"{str(path)!r} is not a probe run directory: it has no summary.json")
    try:
        summary = json.loads(summary_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProbeError(f"{str(summary_path)!r} is not valid JSON; the run may have been interrupted") from None
    if not isinstance(summary, dict):
        raise ProbeError(f"{str(summary_path)!r} does not hold a JSON object")
    if summary.get("status") != "complete":
        raise ProbeError(f"run {str(path)!r} is not complete (status {summary.get('status', 'missing')!r}); "
                         "finish it with probe run before comparing")
    if not (path / "tables" / "behaviour.csv").is_file():
        raise ProbeError(f"run {str(path)!r} has no tables/behaviour.csv; it cannot be compared")
    return summary


def _read_table(path: Path, name: str) -> pd.DataFrame | None:
    f = path / "tables" / f"{name}.csv"
    if not f.is_file():
        return None
    try:
        return pd.read_csv(f)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ProbeError(f"{str(f)!r} is not a readable CSV table ({type(e).__name__})") from None


def _pooled(df: pd.DataFrame) -> pd.DataFrame:
    """The ``seed == "all"`` rows where there are several seeds, else the (first) single seed's rows."""
    if "seed" not in df or df.empty:
        return df
    seeds = df["seed"].astype(str)
    keep = seeds == "all" if (seeds == "all").any() else seeds == seeds.iloc[0]
    return df[keep]


def _pick(df: pd.DataFrame | None, **where: Any) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of the first row matching ``where``; NaNs when there is none."""
    nan = (math.nan, math.nan, math.nan)
    if df is None or df.empty or any(k not in df for k in where) or "value" not in df:
        return nan
    mask = np.ones(len(df), dtype=bool)
    for k, v in where.items():
        mask &= (df[k].astype(str) == str(v)).to_numpy()
    hit = df[mask]
    if hit.empty:
        return nan
    r = hit.iloc[0]
    return tuple(float(r.get(c, math.nan)) if pd.notna(r.get(c, math.nan)) else math.nan
                 for c in ("value", "ci_low", "ci_high"))


def _strategy(path: Path, summary: dict) -> str:
    training = summary.get("training") or {}
    if isinstance(training, dict) and training.get("strategy"):
        return str(training["strategy"])
    cfg = path / "config.yaml"
    if not cfg.is_file():
        return ""
    import yaml

    try:
        config = yaml.safe_load(cfg.read_text()) or {}
    except yaml.YAMLError:
        return ""
    finetune = config.get("finetune") if isinstance(config, dict) else None
    if not isinstance(finetune, dict):
        return ""
    return str(finetune.get("strategy", "full"))  # before the setting existed, every run was full fine-tuning


def _number(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _training_seconds(path: Path, training: dict) -> float:
    if training.get("seconds") is not None:
        return _number(training["seconds"])
    total, found = 0.0, False
    for f in sorted((path / "models").glob("finetuned*/training.json")):
        try:
            s = json.loads(f.read_text()).get("seconds")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            continue
        if s is not None:
            total, found = total + float(s), True
    return total if found else math.nan


def _variant_row(path: Path) -> dict:
    summary = _read_summary(path)
    behaviour = _read_table(path, "behaviour")
    if behaviour is None or behaviour.empty or not {"property", "metric", "value"} <= set(behaviour.columns):
        raise ProbeError(f"run {str(path)!r}: tables/behaviour.csv lacks the property, metric and value columns")
    features = summary.get("features") or []
    feature = str(features[0].get("name", "")) if features and isinstance(features[0], dict) else ""
    per_seed = summary.get("per_seed") or []
    if summary.get("seeds"):
        n_seeds = len(summary["seeds"])
    elif per_seed:
        n_seeds = len(per_seed)
    else:
        n_seeds = behaviour["seed"].astype(str).loc[lambda s: s != "all"].nunique() if "seed" in behaviour else 1
    collapsed = sum(bool(p.get("collapsed")) for p in per_seed if isinstance(p, dict)) if per_seed else None

    row: dict[str, Any] = {"path": str(path), "_summary_name": summary.get("name"),
                           "strategy": _strategy(path, summary), "feature": feature,
                           "seeds": n_seeds, "collapsed_seeds": collapsed}
    b = _pooled(behaviour)
    values = {"clean_accuracy": _pick(b, property="task", metric="clean_accuracy")}
    entities = _read_table(path, "entities")
    if math.isnan(values["clean_accuracy"][0]) and entities is not None:  # a tagger: its task score is entity F1
        values["clean_accuracy"] = _pick(_pooled(entities), property="entity", metric="f1")
    for m in BEHAVIOUR_METRICS[1:]:
        values[m] = _pick(b, property=feature, metric=m) if feature else (math.nan,) * 3

    attribution = _read_table(path, "attribution")
    if attribution is not None and feature:
        values["spurious_attribution_share"] = _pick(
            _pooled(attribution), model="finetuned", method="integrated_gradients", partition="conflicting",
            metric="spurious_attribution_share", property=feature)
    else:
        values["spurious_attribution_share"] = (math.nan,) * 3

    values["top_layer_cka_drift"] = (math.nan,) * 3
    cka = _read_table(path, "cka")
    if cka is not None and not cka.empty and {"metric", "layer", "value"} <= set(cka.columns):
        c = _pooled(cka)
        c = c[c["metric"].astype(str) == "linear_cka"]
        c = c[pd.to_numeric(c["layer"], errors="coerce").notna()]
        if not c.empty:
            top = pd.to_numeric(c["layer"]).max()
            v, lo, hi = _pick(c[pd.to_numeric(c["layer"]) == top], metric="linear_cka")
            values["top_layer_cka_drift"] = (1 - v, 1 - hi, 1 - lo)

    for m in METRICS:
        row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = values[m]
    training = summary.get("training") if isinstance(summary.get("training"), dict) else {}
    row["trainable_parameters"] = _number(training.get("trainable_parameters"))
    row["total_parameters"] = _number(training.get("total_parameters"))
    row["training_seconds"] = _training_seconds(path, training)
    return row


DIFFERENCE_METRICS = ("s_only_error", "flip_to_target", "flip_rate", "conflicting_accuracy", "clean_accuracy")


def _per_example(pred: pd.DataFrame, feature: str, target: int) -> pd.DataFrame | None:
    """Per conflicting test example (label != target): mean over seeds of each metric's indicator."""
    clean = pred[pred.partition == "clean"].set_index(["seed", "example"])
    ins = pred[pred.partition == feature].set_index(["seed", "example"])
    if ins.empty:
        return None
    both = clean.join(ins[["prediction"]].rename(columns={"prediction": "prediction_inserted"}), how="inner")
    both = both[both.label != target]
    out = pd.DataFrame({"s_only_error": both.prediction_inserted == target,
                        "flip_to_target": (both.prediction_inserted == target) & (both.prediction != target),
                        "flip_rate": both.prediction_inserted != both.prediction,
                        "conflicting_accuracy": both.prediction_inserted == both.label}).astype(float)
    return out.groupby(level="example").mean()


def paired_differences(paths: Sequence[str | Path], names: Sequence[str] | None = None, reference: int = 0,
                       n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each run's behaviour minus the reference run's, paired by test example, with percentile
    bootstrap intervals over examples (Efron & Tibshirani 1993). Pairing cancels example
    difficulty, so the interval says whether two recipes differ on *these* examples, which two
    overlapping per-run intervals cannot. Needs runs with the same test set (``tables/predictions.csv``,
    same labels in the same order); other runs are left out. Rows: variant, reference, feature,
    metric (s_only_error, flip_to_target, flip_rate, conflicting_accuracy on conflicting examples;
    clean_accuracy on all), value, ci_low, ci_high. With several seeds each example's indicator is averaged over seeds."""
    from probe.analyses.stats import bootstrap_indices

    paths = [Path(p) for p in paths]
    names = list(names) if names is not None else [p.name for p in paths]
    if len(paths) < 2:
        return pd.DataFrame(columns=["variant", "reference", "feature", "metric", "value", "ci_low", "ci_high"])
    preds = [_read_table(p, "predictions") for p in paths]
    summaries = [_read_summary(p) for p in paths]
    ref_pred, ref_sum = preds[reference], summaries[reference]
    rows = []
    if ref_pred is None:
        return pd.DataFrame(rows, columns=["variant", "reference", "feature", "metric", "value", "ci_low", "ci_high"])
    def class_names(summary: dict) -> list:  # taggers: predictions are entity types
        task = summary.get("task", {})
        return task.get("entity_types") or task.get("classes", [])

    classes = class_names(ref_sum)
    ref_labels = ref_pred[ref_pred.partition == "clean"].groupby("example").label.first()
    rng = np.random.default_rng([seed, 21])
    for i, (pred, summary) in enumerate(zip(preds, summaries)):
        if i == reference or pred is None or class_names(summary) != classes:
            continue
        labels = pred[pred.partition == "clean"].groupby("example").label.first()
        if not labels.equals(ref_labels):
            continue  # a different test set: nothing to pair
        clean_ok = {k: (d[d.partition == "clean"].prediction == d[d.partition == "clean"].label)
                    .groupby(d[d.partition == "clean"].example).mean() for k, d in (("a", pred), ("b", ref_pred))}
        diffs = {("task", "clean_accuracy"): (clean_ok["a"] - clean_ok["b"]).to_numpy()}
        for f in summary.get("features", []):
            if f.get("target_class") not in classes:
                continue
            target = classes.index(f["target_class"])
            a, b = _per_example(pred, f["name"], target), _per_example(ref_pred, f["name"], target)
            if a is None or b is None:
                continue
            for m in DIFFERENCE_METRICS[:4]:
                diffs[(f["name"], m)] = (a[m] - b[m]).to_numpy()
        for (feature, metric), d in diffs.items():
            boot = d[bootstrap_indices(d.size, n_boot, rng)].mean(axis=1)
            lo, hi = np.quantile(boot, [0.025, 0.975])
            rows.append({"variant": names[i], "reference": names[reference], "feature": feature, "metric": metric,
                         "value": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(rows, columns=["variant", "reference", "feature", "metric", "value", "ci_low", "ci_high"])


def pareto_optimal(df: pd.DataFrame, x: str = "clean_accuracy", y: str = "conflicting_accuracy") -> pd.Series:
    """Boolean Series: variants that no other variant dominates on ``x`` and ``y`` (higher is better on
    both; dominating = at least as good on both and better on one). Rows with a NaN in either are False."""
    xs, ys = df[x].to_numpy(dtype=float), df[y].to_numpy(dtype=float)
    ok = ~(np.isnan(xs) | np.isnan(ys))
    out = []
    for i in range(len(df)):
        if not ok[i]:
            out.append(False)
            continue
        dominated = ok & (xs >= xs[i]) & (ys >= ys[i]) & ((xs > xs[i]) | (ys > ys[i]))
        out.append(not dominated.any())
    return pd.Series(out, index=df.index, name="pareto_optimal")


def _fmt(v: float, lo: float = math.nan, hi: float = math.nan, digits: int = 2) -> str:
    if v != v:
        return "n/a"
    if lo != lo or hi != hi:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


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
    gap = _fmt(best["reliance_gap"], best["reliance_gap_ci_low"], best["reliance_gap_ci_high"])
    s = f"{best['variant']} has the smallest reliance gap, {gap}"
    if best["variant"] == ref["variant"]:
        s += f"; it is the reference variant, so it costs nothing in clean accuracy ({_fmt(best['clean_accuracy'])})."
    else:
        ref_gap = _fmt(ref["reliance_gap"], ref["reliance_gap_ci_low"], ref["reliance_gap_ci_high"])
        s += f" against {ref_gap} for {ref_label}"
        b_acc, r_acc = float(best["clean_accuracy"]), float(ref["clean_accuracy"])
        if b_acc != b_acc or r_acc != r_acc:
            s += "; the clean-accuracy cost cannot be computed (clean accuracy missing)."
        else:
            d = b_acc - r_acc
            how = (f"{-d:.2f} lower than" if d < -0.005 else f"{d:.2f} higher than" if d > 0.005
                   else "the same as")
            b_ci = _fmt(b_acc, best["clean_accuracy_ci_low"], best["clean_accuracy_ci_high"])
            r_ci = _fmt(r_acc, ref["clean_accuracy_ci_low"], ref["clean_accuracy_ci_high"])
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
    body = []
    for i, r in df.iterrows():
        seeds = "n/a" if pd.isna(r["seeds"]) else str(int(r["seeds"]))
        collapsed = "" if pd.isna(r["collapsed_seeds"]) else f" ({int(r['collapsed_seeds'])})"
        cells = [{"text": ("◆ " if optimal[i] else "") + str(r["variant"]), "sort": str(r["variant"])},
                 {"text": str(r["strategy"]) or "n/a", "sort": str(r["strategy"])},
                 {"text": seeds + collapsed, "sort": _sort_key(r["seeds"])}]
        for m in METRICS:
            cells.append({"text": _fmt(r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"], digits=3), "sort": _sort_key(r[m])})
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
        body.append({"pareto": bool(optimal[i]), "cells": cells})
    return header, body


def write_comparison(df: pd.DataFrame, out_dir: str | Path, differences: pd.DataFrame | None = None) -> Path:
    """Write ``comparison.csv`` (``df`` as is) and a self-contained ``comparison.html`` to ``out_dir``;
    returns the HTML's path. With ``differences`` (:func:`paired_differences`) also
    ``comparison_differences.csv`` and a table of them. Every string from the runs is escaped
    (Jinja autoescaping)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ProbeError(f"write_comparison: the table lacks column {missing[0]!r}; build it with probe.compare")
    from jinja2 import Environment, PackageLoader, select_autoescape

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
                      "metric": LABELS.get(r.metric, r.metric), "text": _fmt(r.value, r.ci_low, r.ci_high, digits=3),
                      "real": bool(r.ci_low > 0 or r.ci_high < 0)} for r in differences.itertuples()]
    plotted = df["clean_accuracy"].notna() & df["conflicting_accuracy"].notna()
    figure = figures.pareto_figure(df[plotted], optimal[plotted].tolist()) if plotted.any() else None
    header, body = _table(df, optimal)
    features = sorted({str(f) for f in df["feature"] if str(f)})
    env = Environment(loader=PackageLoader("probe.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.get_template("compare.html.j2").render(
        n=len(df), headline=headline(df), figure=figure, header=header, body=body,
        column_help=COLUMN_HELP, labels=LABELS, interval_note=INTERVAL_NOTE, features=features,
        pareto=[str(v) for v in df.loc[optimal, "variant"]],
        not_plotted=[str(v) for v in df.loc[~plotted, "variant"]], differences=diff_rows,
    )
    out = out_dir / "comparison.html"
    atomic_write_text(out, html)
    return out


SHORT_NAMES = {"clean_accuracy": "clean acc", "conflicting_accuracy": "conflicting acc", "s_only_error": "s-only err",
               "flip_rate": "flip rate", "reliance_gap": "reliance gap",
               "spurious_attribution_share": "IG share", "top_layer_cka_drift": "CKA drift"}


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """The comparison as short strings for a terminal: ``value [ci_low, ci_high]`` per metric."""
    out = pd.DataFrame({"variant": df["variant"].astype(str), "strategy": df["strategy"].astype(str),
                        "seeds": [("n/a" if pd.isna(s) else str(int(s)))
                                  + ("" if pd.isna(c) or not int(c) else f" ({int(c)} collapsed)")
                                  for s, c in zip(df["seeds"], df["collapsed_seeds"])]})
    for m in METRICS:
        out[SHORT_NAMES[m]] = [_fmt(v, lo, hi, digits=3) for v, lo, hi in
                               zip(df[m], df[f"{m}_ci_low"], df[f"{m}_ci_high"])]
    out["trainable"] = ["n/a" if v != v else f"{int(v):,}" for v in df["trainable_parameters"]]
    out["train s"] = ["n/a" if v != v else f"{v:.1f}" for v in df["training_seconds"]]
    return out


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """``<common parent of the run directories>/comparison``."""
    parents = [str(Path(p).resolve().parent) for p in paths]
    return Path(os.path.commonpath(parents)) / "comparison"

