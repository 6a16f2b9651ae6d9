"""Per-class precision, recall and F1 with bootstrap intervals, and confusion matrices, from a run's
per-example predictions (``tables/predictions.csv``): scikit-learn's ``classification_report`` and
``confusion_matrix`` with the 95 % intervals and counts the report prints next to every number.

Definitions (as scikit-learn's, per class c): precision = TP / (TP + FP), recall = TP / (TP + FN),
F1 = 2 TP / (2 TP + FP + FN); a ratio with nothing to divide (no example predicted c, for precision)
is missing rather than 0. Intervals: percentile bootstrap over the examples (Efron & Tibshirani 1993).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix as sk_confusion

from probe.analyses.stats import bootstrap_indices

#: prediction codes below 0 in tables/predictions.csv (taggers): the column names they get
SPECIAL = {-1: "no entity", -2: "cut off"}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _scores(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> dict[str, np.ndarray]:
    return {"precision": _ratio(tp, n_pred), "recall": _ratio(tp, n_true), "f1": _ratio(2 * tp, n_pred + n_true)}


def class_report(labels, predictions, classes: list[str], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> pd.DataFrame:
    """One row per class: ``class``, ``support`` (examples of it), ``predicted`` (examples predicted
    as it), ``correct`` (TP), then ``precision``, ``recall`` and ``f1``, each with ``_ci_low`` /
    ``_ci_high``. ``labels`` and ``predictions`` are class indices into ``classes`` (predictions may
    hold the negative codes of :data:`SPECIAL`, which count as wrong for every class)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    k = len(classes)
    onehot_y = (y[:, None] == np.arange(k)).astype(np.int32)
    onehot_p = (p[:, None] == np.arange(k)).astype(np.int32)
    hit = onehot_y * onehot_p
    point = _scores(hit.sum(0), onehot_p.sum(0), onehot_y.sum(0))
    out = pd.DataFrame({"class": list(classes), "support": onehot_y.sum(0), "predicted": onehot_p.sum(0),
                        "correct": hit.sum(0)})
    if len(y):
        idx = bootstrap_indices(len(y), n_boot, np.random.default_rng(seed))
        boot = _scores(hit[idx].sum(1), onehot_p[idx].sum(1), onehot_y[idx].sum(1))
    alpha = (1 - level) / 2
    for name, value in point.items():
        out[name] = value
        if len(y):
            with np.errstate(invalid="ignore"), _quiet():
                out[f"{name}_ci_low"] = np.nanquantile(boot[name], alpha, axis=0)
                out[f"{name}_ci_high"] = np.nanquantile(boot[name], 1 - alpha, axis=0)
        else:
            out[f"{name}_ci_low"] = out[f"{name}_ci_high"] = np.nan
    return out


class _quiet:
    """Silence numpy's all-NaN-slice warning (a class never predicted in any resample: no interval)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def confusion(labels, predictions, classes: list[str]) -> pd.DataFrame:
    """Counts: rows are the true class, columns the predicted one (scikit-learn's convention), with a
    column per negative prediction code that occurs (:data:`SPECIAL`)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    extra = sorted({int(v) for v in p if v < 0}, reverse=True)
    codes = list(range(len(classes))) + extra
    m = sk_confusion(y, p, labels=codes)[: len(classes)] if len(y) else np.zeros((len(classes), len(codes)), int)
    names = list(classes) + [SPECIAL.get(c, str(c)) for c in extra]
    return pd.DataFrame(m, index=pd.Index(list(classes), name="true"), columns=pd.Index(names, name="predicted"))


def partitions(predictions: pd.DataFrame, features: list[dict], classes: list[str]) -> dict[str, pd.DataFrame]:
    """The examples each view reads, from ``tables/predictions.csv`` (its first seed): ``clean`` (the
    test split as it is) and, per planted feature, ``conflicting: <name>`` (examples of other classes
    than the feature's target, with the token inserted). Each frame keeps ``label`` and ``prediction``."""
    if predictions is None or predictions.empty:
        return {}
    if "seed" in predictions:
        first = predictions["seed"].astype(str).iloc[0]
        predictions = predictions[predictions["seed"].astype(str) == first]
    parts = predictions["partition"].astype(str)
    out = {}
    if (parts == "clean").any():
        out["clean"] = predictions[parts == "clean"]
    for f in features:
        name, target = str(f.get("name", "")), f.get("target_class")
        if target not in classes or not (parts == name).any():
            continue
        g = predictions[parts == name]
        out[f"conflicting: {name}"] = g[g["label"].astype(int) != classes.index(target)]
    return out
