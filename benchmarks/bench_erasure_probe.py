"""The erasure guarantee check: ``concept_decodability`` with the torch probe vs scikit-learn.

Synthetic activations of a realistic size for the check (``--n`` training and as many held-out
rows, ``--d`` dims, correlated and badly scaled features, a binary concept whose positive class is
rare, ``--positive`` of the rows, planted along one direction with strength ``--shift``; the
default gives a balanced accuracy of ~0.76): what the run checks at one layer before and after
LEACE / INLP. Both sides fit the same class-balanced probe on the
same rows (``max_rows`` = 4000, so all of them at the default size): scikit-learn's
``make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))``
(``benchmarks/sklearn_reference.py``) vs :func:`probe.causal.erasure.concept_decodability`
(:class:`probe.analyses.logistic_probe.LogisticProbe` on ``--device``). Timings are medians of
``--repeats`` alternating runs; scikit-learn is also timed with its BLAS / OpenMP pools held to
one thread, and the torch probe with 1 intra-op thread. Printed: the ratio, and how far the
numbers move (accuracy, balanced accuracy, probe probabilities).

    python benchmarks/bench_erasure_probe.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from probe.analyses.logistic_probe import LogisticProbe
from probe.causal.erasure import concept_decodability
from sklearn_reference import sklearn_concept_decodability


def make_data(n: int, d: int, positive: float, shift: float, seed: int = 0):
    """``2n`` rows: correlated Gaussian features with spreads from 0.1 to 10, a rare binary concept."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    X = rng.standard_normal((2 * n, d)) @ mix * np.geomspace(0.1, 10, d) + rng.normal(size=d)
    z = (rng.random(2 * n) < positive).astype(int)
    direction = rng.standard_normal(d)
    X += shift * np.outer(z, direction / np.linalg.norm(direction)) * X.std()
    return X[:n], z[:n], X[n:], z[n:]


def timed(fn, repeats_out: list[float]):
    t0 = time.perf_counter()
    out = fn()
    repeats_out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--positive", type=float, default=0.05)
    ap.add_argument("--shift", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu / cuda / auto")
    args = ap.parse_args()
    Xtr, ztr, Xte, zte = make_data(args.n, args.d, args.positive, args.shift)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), device {args.device}, load average {os.getloadavg()[0]:.2f}")
    print(f"data: train {Xtr.shape}, test {Xte.shape}, positive rate {ztr.mean():.3f} / {zte.mean():.3f}")

    def ours():
        return concept_decodability(Xtr, ztr, Xte, zte, seed=0, device=args.device)

    def ours_one_thread():
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return ours()
        finally:
            torch.set_num_threads(old)

    ours()  # warm-up: torch kernels, CUDA context
    t_sk, t_sk1, t_ours, t_ours1 = [], [], [], []
    for _ in range(args.repeats):  # alternate, so background load hits all sides alike
        ref = timed(lambda: sklearn_concept_decodability(Xtr, ztr, Xte, zte, seed=0), t_sk)
        with threadpool_limits(1):
            timed(lambda: sklearn_concept_decodability(Xtr, ztr, Xte, zte, seed=0), t_sk1)
        new = timed(ours, t_ours)
        timed(ours_one_thread, t_ours1)
    med = {k: float(np.median(v)) for k, v in
           {"sk": t_sk, "sk1": t_sk1, "ours": t_ours, "ours1": t_ours1}.items()}
    print(f"scikit-learn (default threads):   median {med['sk']:.3f} s  runs {np.round(t_sk, 3).tolist()}")
    print(f"scikit-learn (threadpool 1):      median {med['sk1']:.3f} s  runs {np.round(t_sk1, 3).tolist()}")
    print(f"LogisticProbe (torch threads):    median {med['ours']:.3f} s  runs {np.round(t_ours, 3).tolist()}")
    print(f"LogisticProbe (1 torch thread):   median {med['ours1']:.3f} s  runs {np.round(t_ours1, 3).tolist()}")
    print(f"speed-up: {med['sk'] / med['ours']:.1f}x vs scikit-learn as configured, "
          f"{med['sk1'] / med['ours1']:.1f}x single-threaded vs single-threaded")
    print(f"accuracy: sklearn {ref['accuracy']:.4f}, probe {new['accuracy']:.4f} (majority {new['majority']:.4f}); "
          f"balanced accuracy: sklearn {ref['balanced_accuracy']:.4f}, probe {new['balanced_accuracy']:.4f}")
    t_loose = []
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    for _ in range(args.repeats):  # the probe alone at scikit-learn's stopping tolerance, 1 thread
        loose = timed(lambda: LogisticProbe(C=1.0, max_iter=1000, tol=1e-4, class_weight="balanced",
                                            device=args.device).fit(Xtr, ztr), t_loose)
    torch.set_num_threads(old)
    print(f"probe fit alone at scikit-learn's tol 1e-4 (1 torch thread): median {np.median(t_loose):.3f} s, "
          f"{loose.n_iter_} iterations")
    probe = LogisticProbe(C=1.0, max_iter=1000, class_weight="balanced", device=args.device).fit(Xtr, ztr)
    dp = np.abs(probe.predict_proba(Xte) - ref["proba"])
    print(f"probe probabilities vs scikit-learn's on the test rows: max |diff| {dp.max():.2e}, "
          f"mean {dp.mean():.2e}; converged {probe.converged_} in {probe.n_iter_} iterations")


if __name__ == "__main__":
    main()
