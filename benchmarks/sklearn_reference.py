"""scikit-learn versions of the project's probes, the reference the benchmarks compare against.

These are the fitters the project used before every probe became
:class:`probe.analyses.logistic_probe.LogisticProbe`: ``make_pipeline(StandardScaler(),
LogisticRegression(lbfgs))`` fitted one probe at a time.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def sklearn_pipeline(C: float = 1.0, max_iter: int = 2000, class_weight=None, seed: int = 0):
    """An unfitted ``make_pipeline(StandardScaler(), LogisticRegression(C))``."""
    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=C, max_iter=max_iter, class_weight=class_weight, random_state=seed))


def sklearn_probe(X: np.ndarray, y: np.ndarray, C: float = 1.0, max_iter: int = 2000, class_weight=None, seed: int = 0):
    """:func:`sklearn_pipeline` fitted on ``X``, ``y`` (convergence warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return sklearn_pipeline(C, max_iter, class_weight, seed).fit(X, y)


def sklearn_probe_accuracy(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, C: float = 1.0,
                           max_iter: int = 2000) -> np.ndarray:
    """Per-example correctness on ``test`` of a probe fitted on ``train`` (``probing.probe_accuracy``)."""
    return (sklearn_probe(X[train], y[train], C, max_iter).predict(X[test]) == y[test]).astype(float)


def sklearn_concept_decodability(X_train, z_train, X_test, z_test, seed: int = 0, C: float = 1.0,
                                 max_iter: int = 1000) -> dict:
    """``probe.causal.erasure.concept_decodability`` (all training rows: at most its ``max_rows``)
    with its probe fitted by scikit-learn: class-balanced weights, prior-corrected accuracy, balanced
    accuracy; also returns the probe's test probabilities."""
    classes, codes = np.unique(z_train, return_inverse=True)
    codes_test = np.searchsorted(classes, z_test)
    pipe = sklearn_probe(X_train, codes, C, max_iter, class_weight="balanced", seed=seed)
    proba = pipe.predict_proba(X_test)
    log_prior = np.log(np.maximum(np.bincount(codes, minlength=len(classes)) / len(codes), 1e-12))
    logits = np.log(np.maximum(proba, 1e-300))
    plain = (logits + log_prior).argmax(1)
    balanced = logits.argmax(1)
    recalls = [np.mean(balanced[codes_test == c] == c) for c in np.unique(codes_test)]
    return {"accuracy": float(np.mean(plain == codes_test)), "balanced_accuracy": float(np.mean(recalls)),
            "proba": proba}


def sklearn_mdl_fit(seed: int = 0, grid=(0.01, 0.1, 1.0), folds: int = 3, small_prefix_C: float = 0.01):
    """A ``fit=`` hook for ``online_codelength``: per prefix, C by ``folds``-fold stratified CV
    log-loss over ``grid`` with scikit-learn fits (C = ``small_prefix_C`` on prefixes too small to
    split), then a scikit-learn probe refitted on the whole prefix: the batched code's recipe."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    def fit(X, y):
        C = small_prefix_C
        if len(y) >= 4 * folds and np.bincount(y).max() >= folds:
            cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores = [cross_val_score(sklearn_pipeline(c, 200), X, y, cv=cv, scoring="neg_log_loss").mean()
                          for c in grid]
            C = grid[int(np.argmax(scores))]
        return sklearn_probe(X, y, C, 500)

    return fit
