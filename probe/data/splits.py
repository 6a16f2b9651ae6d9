"""Split sizes and stratified splits: how every kind cuts its examples into train / validation / test."""

from __future__ import annotations

import numpy as np


def resolve_size(value: int | float, n: int) -> int:
    """A split size as a count: a fraction of ``n`` (rounded) or the count itself."""
    return int(round(value * n)) if isinstance(value, float) else int(value)


def stratified_splits(
    labels: np.ndarray, sizes: tuple[int, int, int], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint train / validation / test indices, each stratified by label, from ``seed``.

    Each class gets its share of every split by largest-remainder rounding, so the
    proportions match the full data as closely as integers allow.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    out = []
    taken = {c: 0 for c in classes}
    for size in sizes:
        quota = counts * size / n
        alloc = np.floor(quota).astype(int)
        rest = size - alloc.sum()
        order = np.argsort(-(quota - alloc), kind="stable")
        alloc[order[:rest]] += 1
        idx = []
        for c, k in zip(classes, alloc):
            k = min(k, len(per_class[c]) - taken[c])
            idx.append(per_class[c][taken[c]: taken[c] + k])
            taken[c] += k
        out.append(np.sort(np.concatenate(idx)))
    return out[0], out[1], out[2]
