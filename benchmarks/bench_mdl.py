"""Online codelength: the batched solver for many (layer, labelling) pairs vs the scikit-learn reference.

Synthetic data shaped like the default run's probing set (n = 400, d = 384, 14 designs = 7 layers
× 2 models, 4 labellings). Both implementations use the blocks of Voita & Titov (2020) and the
same recipe (C by 3-fold CV log-loss per prefix); the batched one fits all designs × labellings ×
C-grid × folds of a block in one L-BFGS solve, the reference one scikit-learn pipeline at a time
(``benchmarks/sklearn_reference.py``, through ``online_codelength``'s ``fit=`` hook).

    python benchmarks/bench_mdl.py
"""

from __future__ import annotations

import os
import time

import numpy as np

from probe.analyses.mdl import online_codelength, online_codelength_layers
from sklearn_reference import sklearn_mdl_fit


def main() -> None:
    rng = np.random.default_rng(0)
    n, d, G = 400, 384, 14
    X = rng.normal(size=(n, d))
    signal = (X[:, 0] + X[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(int)
    labels = {"signal": signal, "five_classes": rng.integers(0, 5, n), "binary_noise": rng.integers(0, 2, n),
              "three_classes": rng.integers(0, 3, n)}
    designs = np.stack([X] * G)
    t0 = time.perf_counter()
    bits = online_codelength_layers(designs, labels, seed=0)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = online_codelength(X, signal, seed=0, fit=sklearn_mdl_fit(seed=0))
    t_ref = time.perf_counter() - t0
    count = G * len(labels)
    print(f"machine: {os.cpu_count()} cores; n={n}, d={d}")
    print(f"batched: {count} codelengths in {t_batched:.1f} s ({t_batched / count:.2f} s each)")
    print(f"scikit-learn reference: 1 codelength in {t_ref:.1f} s")
    print(f"speed-up per codelength: {t_ref / (t_batched / count):.1f}x")
    print(f"signal codelength: batched {bits['signal'][0].sum():.1f} bits, reference {ref['codelength_bits']:.1f} bits")


if __name__ == "__main__":
    main()
