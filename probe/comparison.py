"""Compare finished runs that differ in their fine-tuning recipe: one row per run ("variant").

``probe.compare(["reports/full", "reports/lora"])`` reads each run directory (docs/design.md §3)
and returns a DataFrame of the headline numbers with their intervals; :func:`paired_differences`
pairs two runs' predictions example by example. Reading only: nothing here recomputes an analysis.
The comparison page (``comparison.html``) is :mod:`probe.report.comparison_page`.
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

from probe.analyses.aggregate import pooled_rows
from probe.errors import ProbeError
from probe.rundir import not_complete, read_summary, run_state

#: Behaviour metrics of the first planted feature, in column order; ``clean_accuracy`` is the task's.
BEHAVIOUR_METRICS = ("clean_accuracy", "conflicting_accuracy", "s_only_error", "flip_rate", "reliance_gap")
#: Metrics with intervals, in column order (each followed by ``<metric>_ci_low`` and ``<metric>_ci_high``).
METRICS = BEHAVIOUR_METRICS + ("spurious_attribution_share", "top_layer_cka_drift")
ID_COLUMNS = ("variant", "path", "strategy", "feature", "seeds", "collapsed_seeds")
COST_COLUMNS = ("trainable_parameters", "total_parameters", "training_seconds")
COLUMNS = (list(ID_COLUMNS) + [f"{m}{s}" for m in METRICS for s in ("", "_ci_low", "_ci_high")]
           + list(COST_COLUMNS))

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
    summary = read_summary(path)
    if run_state(summary) != "complete":
        raise ProbeError(f"{not_complete(path, summary)}; finish it with probe run before comparing")
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
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise ProbeError(f"{str(f)!r} is not a readable CSV table ({type(e).__name__})") from None


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
    b = pooled_rows(behaviour)
    values = {"clean_accuracy": _pick(b, property="task", metric="clean_accuracy")}
    entities = _read_table(path, "entities")
    if math.isnan(values["clean_accuracy"][0]) and entities is not None:  # a tagger: its task score is entity F1
        values["clean_accuracy"] = _pick(pooled_rows(entities), property="entity", metric="f1")
    for m in BEHAVIOUR_METRICS[1:]:
        values[m] = _pick(b, property=feature, metric=m) if feature else (math.nan,) * 3

    attribution = _read_table(path, "attribution")
    if attribution is not None and feature:
        values["spurious_attribution_share"] = _pick(
            pooled_rows(attribution), model="finetuned", method="integrated_gradients", partition="conflicting",
            metric="spurious_attribution_share", property=feature)
    else:
        values["spurious_attribution_share"] = (math.nan,) * 3

    values["top_layer_cka_drift"] = (math.nan,) * 3
    cka = _read_table(path, "cka")
    if cka is not None and not cka.empty and {"metric", "layer", "value"} <= set(cka.columns):
        c = pooled_rows(cka)
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


SHORT_NAMES = {"clean_accuracy": "clean acc", "conflicting_accuracy": "conflicting acc", "s_only_error": "s-only err",
               "flip_rate": "flip rate", "reliance_gap": "reliance gap",
               "spurious_attribution_share": "IG share", "top_layer_cka_drift": "CKA drift"}


def fmt_interval(v: float, lo: float = math.nan, hi: float = math.nan, digits: int = 2) -> str:
    """``value [ci_low, ci_high]`` with ``digits`` decimals (``n/a`` for NaN; no interval when it is missing)."""
    if v != v:
        return "n/a"
    if lo != lo or hi != hi:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """The comparison as short strings for a terminal: ``value [ci_low, ci_high]`` per metric."""
    out = pd.DataFrame({"variant": df["variant"].astype(str), "strategy": df["strategy"].astype(str),
                        "seeds": [("n/a" if pd.isna(s) else str(int(s)))
                                  + ("" if pd.isna(c) or not int(c) else f" ({int(c)} collapsed)")
                                  for s, c in zip(df["seeds"], df["collapsed_seeds"])]})
    for m in METRICS:
        out[SHORT_NAMES[m]] = [fmt_interval(v, lo, hi, digits=3) for v, lo, hi in
                               zip(df[m], df[f"{m}_ci_low"], df[f"{m}_ci_high"])]
    out["trainable"] = ["n/a" if v != v else f"{int(v):,}" for v in df["trainable_parameters"]]
    out["train s"] = ["n/a" if v != v else f"{v:.1f}" for v in df["training_seconds"]]
    return out


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """``<common parent of the run directories>/comparison``, or ``./comparison`` (in the current
    directory) when the runs share no parent below the filesystem root."""
    parents = [str(Path(p).resolve().parent) for p in paths]
    common = Path(os.path.commonpath(parents))
    if common == Path(common.anchor):
        return Path.cwd() / "comparison"
    return common / "comparison"
