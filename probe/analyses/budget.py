"""Precision budgets: measure a quantity in batches until its interval is as narrow as the verdict
needs, and no further (docs/design.md §5, "Precision budgets").

Two stopping rules, each a pure function of what has been measured so far, so a test can predict
where they stop:

- :func:`mean_half_width`: the normal 95 % interval of a mean, ``1.96 · s / √n`` (``s`` the sample
  standard deviation); attributions stop once the headline share's half-width is at most the target.
  Known answer: values with standard deviation σ stop at the first batch boundary past
  ``n = (1.96 σ / h)²``.
- :func:`wilson_width`: the full width of the Wilson 95 % interval of a proportion (Wilson 1927), which
  stays honest at accuracies near 0 or 1; causal conditions stop once their conflicting accuracy's
  interval is at most the target wide.

:class:`Stop` records what a budgeted measurement used and why it stopped; :func:`budget_rows` turns
them into the ``budgets`` table the report shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

Z95 = 1.959964


def mean_half_width(values: Sequence[float]) -> float:
    """Half-width of the normal 95 % interval of the mean of ``values`` (NaNs dropped); inf below two values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("inf")
    return float(Z95 * v.std(ddof=1) / np.sqrt(v.size))


def wilson_width(successes: float, n: int) -> float:
    """Full width of the Wilson 95 % interval of ``successes / n``; 1 when ``n == 0``."""
    if n <= 0:
        return 1.0
    p, z2 = successes / n, Z95 * Z95
    return float(2 * Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n))


def batches(n: int, size: int) -> list[np.ndarray]:
    """``range(n)`` cut into consecutive batches of ``size`` (the last one may be shorter)."""
    size = max(1, int(size))
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]


@dataclass
class Stop:
    """What one budgeted measurement used and why it stopped (one row of the ``budgets`` table)."""

    analysis: str
    used: int
    cap: int
    reason: str
    keys: dict = field(default_factory=dict)
    steps: str = ""
    width: float = float("nan")
    target: float = float("nan")

    def row(self) -> dict:
        return {"analysis": self.analysis, **self.keys, "examples": int(self.used), "cap": int(self.cap),
                "steps": self.steps, "width": self.width, "target": self.target, "stopped": self.reason}


def stop_reason(width: float, target: float, used: int, cap: int, what: str = "interval") -> str | None:
    """Why to stop after ``used`` of ``cap`` (None: go on): the interval met its target, or the cap."""
    if width <= target:
        return f"{what} {width:.3f} <= {target:g}"
    if used >= cap:
        return f"cap of {cap} reached ({what} {width:.3f} > {target:g})"
    return None


def sequential_mean(values_of_batch, n_total: int, batch: int, target: float) -> tuple[np.ndarray, Stop]:
    """Measure batches of ``range(n_total)`` with ``values_of_batch(indices) -> per-example values`` until
    the 95 % half-width of their mean is at most ``target`` (:func:`mean_half_width`), or all are used.
    Returns the values so far (in index order) and the :class:`Stop`."""
    values: list[float] = []
    reason, width, used = "nothing to measure", float("nan"), 0
    for idx in batches(n_total, batch):
        values += list(values_of_batch(idx))
        used = int(idx[-1]) + 1
        width = mean_half_width(values)
        reason = stop_reason(width, target, used, n_total, "half-width")
        if reason is not None:
            break
    return np.asarray(values, dtype=np.float64), Stop("", used, n_total, reason or "", width=width, target=target)


def budget_rows(stops: Iterable[Stop]) -> pd.DataFrame:
    """The ``budgets`` table: per budgeted measurement, examples used, cap, steps and why it stopped."""
    return pd.DataFrame([s.row() for s in stops])
