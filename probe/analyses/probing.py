"""Probing classifiers: logistic regression on standardised pooled activations (DESIGN.md §5).

A probe's accuracy says how linearly decodable a property is from a layer; it is always
shown next to the majority-class baseline (Belinkov 2022, "Probing Classifiers").
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from probe.analyses.stats import bootstrap_mean, metric_row


def probe_split(y: np.ndarray, seed: int, test_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train / held-out split of probe examples, from ``seed``."""
    rng = np.random.default_rng([seed, 3])
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def fit_probe(X_train: np.ndarray, y_train: np.ndarray, C: float = 1.0, max_iter: int = 2000, seed: int = 0):
    """Multinomial logistic regression on standardised features (scikit-learn)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return probe.fit(X_train, y_train)


def probe_accuracy(
    X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
    C: float = 1.0, max_iter: int = 2000, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness of a probe on ``test`` and of the majority-class baseline."""
    probe = fit_probe(X[train], y[train], C, max_iter, seed)
    correct = probe.predict(X[test]) == y[test]
    values, counts = np.unique(y[train], return_counts=True)
    majority = values[np.argmax(counts)]
    return correct.astype(float), (y[test] == majority).astype(float)


def probe_layers(
    activations: dict[str, np.ndarray], properties: dict[str, np.ndarray], train: np.ndarray, test: np.ndarray,
    C: float, max_iter: int, n_boot: int, seed: int, progress: bool = True,
) -> pd.DataFrame:
    """Probe every (model, layer, property); tidy rows with accuracy and majority baseline.

    ``activations`` maps a model name to ``[n_layers + 1, n, hidden]``; ``properties`` maps a
    property name to ``[n]`` labels of the same examples.
    """
    from tqdm.auto import tqdm

    jobs = [(m, l, p) for m, A in activations.items() for l in range(A.shape[0]) for p in properties]
    rows = []
    for model, layer, prop in tqdm(jobs, desc="probing", disable=not progress, leave=False, unit="probe"):
        y = properties[prop]
        correct, baseline = probe_accuracy(activations[model][layer], y, train, test, C, max_iter, seed)
        key = dict(model=model, layer=layer, property=prop)
        rng = np.random.default_rng([seed, 4, layer, len(rows)])
        rows.append(metric_row(bootstrap_mean(correct, n_boot, rng), metric="accuracy", **key))
        rows.append(metric_row(bootstrap_mean(baseline, n_boot, rng), metric="majority_baseline", **key))
    return pd.DataFrame(rows)
