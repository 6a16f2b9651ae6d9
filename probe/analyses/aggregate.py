"""Across-seed aggregation: per-seed rows stay, and a ``seed = "all"`` row gives the mean with a t-interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

VALUE_COLUMNS = ("value", "ci_low", "ci_high")


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-seed values and its Student-t interval; a single seed gives its value with NaN bounds."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size == 1:
        return m, float("nan"), float("nan")
    half = float(t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``seed`` column -> the same rows plus one ``seed = "all"`` row per key.

    With one seed the table is returned unchanged: its bootstrap intervals over examples are
    the only uncertainty there is to report.
    """
    if df.empty or "seed" not in df or "value" not in df or df["seed"].nunique() < 2:
        return df
    keys = [c for c in df.columns if c not in VALUE_COLUMNS and c not in ("seed", "n", "rank")]
    rows = []
    for key, group in df.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        m, lo, hi = mean_interval(group["value"].to_numpy())
        rows.append({**dict(zip(keys, key)), "seed": "all", "value": m, "ci_low": lo, "ci_high": hi,
                     **({"rank": group["rank"].median()} if "rank" in group else {})})
    out = pd.concat([df.astype({"seed": object}), pd.DataFrame(rows)], ignore_index=True)
    return out[list(df.columns)]


def pooled_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows a headline reads: the across-seed ``seed == "all"`` rows where a table has them,
    else the (first) single seed's rows. Tables without a seed column are returned as they are."""
    if "seed" not in df or df.empty:
        return df
    seeds = df["seed"].astype(str)
    keep = seeds == "all" if (seeds == "all").any() else seeds == seeds.iloc[0]
    return df[keep]
