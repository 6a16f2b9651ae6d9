"""Percentile bootstrap intervals over test examples (Efron & Tibshirani 1993)."""

from __future__ import annotations

from typing import Callable

import numpy as np


def bootstrap_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n]`` resampling indices (with replacement)."""
    return rng.integers(0, n, size=(n_boot, n))


def bootstrap_mean(values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` (e.g. per-example correctness or a paired difference) and its interval.

    Returns ``(mean, ci_low, ci_high)``; an empty input gives NaNs.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    means = values[bootstrap_indices(values.size, n_boot, rng)].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(values.mean()), float(lo), float(hi)


def jackknife_statistic(
    n: int, statistic: Callable[[np.ndarray], float], level: float = 0.95
) -> tuple[float, float, float]:
    """``statistic(np.arange(n))`` with a normal interval from the leave-one-out jackknife (Efron 1981).

    For kernel statistics such as CKA the bootstrap is the wrong tool: a resample holds
    duplicated examples, whose self-similarity inflates the statistic (for independent noise
    the bootstrap interval can sit wholly above the estimate). Leaving one out never duplicates.
    """
    full = np.arange(n)
    loo = np.array([statistic(np.delete(full, i)) for i in range(n)])
    return jackknife_interval(statistic(full), loo, level)


def jackknife_interval(point: float, loo: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``point`` with the normal interval whose standard error is the jackknife's,
    ``sqrt((n - 1) / n · Σ (θ₍ᵢ₎ - θ̄)²)`` over the ``n`` leave-one-out values ``loo`` (Efron 1981)."""
    from scipy.stats import norm

    loo = np.asarray(loo, dtype=np.float64)
    n = len(loo)
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    z = float(norm.ppf(0.5 + level / 2))
    return float(point), float(point - z * se), float(point + z * se)


KEY_ORDER = ("model", "layer", "property", "metric")


def metric_row(value_ci: tuple[float, float, float], **keys) -> dict:
    """A tidy row: model, layer, property, metric, any other keys, then value and its interval."""
    value, lo, hi = value_ci
    ordered = {k: keys.pop(k) for k in KEY_ORDER if k in keys}
    return {**ordered, **keys, "value": value, "ci_low": lo, "ci_high": hi}
