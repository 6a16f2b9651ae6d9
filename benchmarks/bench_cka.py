"""Per-layer CKA with jackknife intervals: the closed-form leave-one-out vs recomputing on each subset.

Shaped like the default run's similarity stage (n = 400 test examples, 7 layers, width 384, linear
and debiased CKA). Both give the same numbers (tests/test_similarity.py checks 1e-6); the explicit
jackknife recomputes a centred n × n product per left-out example (O(n³) per layer), the closed
form reads every leave-one-out value off the full matrices' sums (O(n²)).

    python benchmarks/bench_cka.py
"""

from __future__ import annotations

import os
import time

import numpy as np

from probe.analyses.similarity import _cka_from_grams, cka_by_layer
from probe.analyses.stats import jackknife_statistic, metric_row


def explicit(pre: np.ndarray, fine: np.ndarray) -> list[dict]:
    rows = []
    for layer in range(pre.shape[0]):
        K, L = pre[layer] @ pre[layer].T, fine[layer] @ fine[layer].T
        for metric, debiased in (("linear_cka", False), ("debiased_linear_cka", True)):
            rows.append(metric_row(jackknife_statistic(pre.shape[1], lambda idx, u=debiased: _cka_from_grams(
                K[np.ix_(idx, idx)], L[np.ix_(idx, idx)], debiased=u)), layer=layer, metric=metric))
    return rows


def main() -> None:
    rng = np.random.default_rng(0)
    n, layers, d = 400, 7, 384
    pre = rng.normal(size=(layers, n, d))
    fine = pre + rng.normal(size=pre.shape)
    t0 = time.perf_counter()
    closed = cka_by_layer(pre, fine, debiased=True)
    t_closed = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = explicit(pre, fine)
    t_ref = time.perf_counter() - t0
    diff = max(abs(r[k] - c) for r, (_, row) in zip(ref, closed.iterrows())
               for k, c in (("value", row.value), ("ci_low", row.ci_low), ("ci_high", row.ci_high)))
    print(f"machine: {os.cpu_count()} cores; n={n}, {layers} layers, width {d}, linear + debiased CKA")
    print(f"explicit jackknife: {t_ref:.1f} s; closed form: {t_closed:.2f} s; ratio {t_ref / t_closed:.0f}x; "
          f"largest difference {diff:.1e}")


if __name__ == "__main__":
    main()
