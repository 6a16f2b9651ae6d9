"""Linear CKA between representations of the same examples (Kornblith et al. 2019)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from probe.analyses.stats import jackknife_statistic, metric_row


def _centered_gram(X: np.ndarray) -> np.ndarray:
    X = X - X.mean(axis=0, keepdims=True)
    return X @ X.T


def _cka_from_grams(K: np.ndarray, L: np.ndarray) -> float:
    """CKA of two uncentred linear Gram matrices: centre both, then <Kc, Lc> / (|Kc| |Lc|)."""
    def centre(G):
        return G - G.mean(0, keepdims=True) - G.mean(1, keepdims=True) + G.mean()

    Kc, Lc = centre(K), centre(L)
    denom = np.linalg.norm(Kc) * np.linalg.norm(Lc)
    return float((Kc * Lc).sum() / denom) if denom > 0 else float("nan")


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) with columns centred.

    ``X`` is ``[n, p]`` and ``Y`` is ``[n, q]`` over the same ``n`` examples. It is 1 for
    ``Y = c·X·Q`` with ``Q`` orthogonal and ``c > 0``, and near 0 for independent noise.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y need the same examples (rows): {X.shape[0]} != {Y.shape[0]}")
    X = X - X.mean(axis=0, keepdims=True)
    Y = Y - Y.mean(axis=0, keepdims=True)
    if X.shape[0] < max(X.shape[1], Y.shape[1]):
        return _cka_from_grams(X @ X.T, Y @ Y.T)
    cross = np.linalg.norm(Y.T @ X) ** 2
    denom = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
    return float(cross / denom) if denom > 0 else float("nan")


def cka_by_layer(pre: np.ndarray, fine: np.ndarray) -> pd.DataFrame:
    """Linear CKA of pretrained layer l vs fine-tuned layer l, with 95 % jackknife intervals over examples.

    ``pre`` and ``fine`` are ``[n_layers + 1, n, hidden]`` on the same examples. Leaving
    examples out is done on the Gram matrices, which equals dropping rows of the activations.
    (Bootstrap resamples duplicate examples and bias CKA upwards; see ``jackknife_statistic``.)
    """
    rows = []
    for layer in range(pre.shape[0]):
        K = pre[layer].astype(np.float64) @ pre[layer].astype(np.float64).T
        L = fine[layer].astype(np.float64) @ fine[layer].astype(np.float64).T
        stat = lambda idx: _cka_from_grams(K[np.ix_(idx, idx)], L[np.ix_(idx, idx)])  # noqa: E731
        rows.append(metric_row(
            jackknife_statistic(pre.shape[1], stat),
            model="pretrained-vs-finetuned", layer=layer, property="representation", metric="linear_cka",
        ))
    return pd.DataFrame(rows)
