"""Minimum description length probing: online codelength (Voita & Titov 2020) and relative
extractability (Lovering et al. 2021).

Online (prequential) code: shuffle the examples once, cut them at the fractions
``0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50, 100 %``; the first block is sent with the
uniform code (``t1 · log2 K`` bits) and every later block with a probe trained from scratch on
all examples before it, costing ``Σ −log2 p(y | x)``. A label that is easy to extract from a
representation compresses well (``compression = n log2 K / codelength`` well above 1); a
label the representation says nothing about costs about the uniform code (compression ≈ 1).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

#: Block boundaries as fractions of the data (Voita & Titov 2020, §3.2).
VOITA_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)

_EPS = 1e-12

FitFn = Callable[[np.ndarray, np.ndarray], Any]


def block_boundaries(n: int, fractions: Sequence[float] = VOITA_FRACTIONS) -> list[int]:
    """End indices of the online-code blocks: ``floor(f · n)`` as in Voita & Titov's code.

    For small ``n`` several fractions floor to the same index or to 0; every boundary is
    raised to at least 1 and repeats are dropped, so boundaries are strictly increasing,
    the first block holds at least one example and the last boundary is ``n``.
    """
    if n < 1:
        raise ValueError(f"need at least one example, got n={n}")
    fr = sorted(float(f) for f in fractions)
    if not fr or fr[0] <= 0 or fr[-1] != 1.0:
        raise ValueError(f"fractions must be positive, increasing and end at 1.0; got {tuple(fractions)}")
    out: list[int] = []
    for f in fr:
        b = max(1, min(n, int(np.floor(f * n + 1e-9))))
        if not out or b > out[-1]:
            out.append(b)
    return out


#: L2 strengths the default probe chooses from, by cross-validation on its own training prefix
#: (the extremes 1e-3 and 10 were never chosen on the default run's prefixes, and every grid
#: value multiplies the batched solve).
_CS: tuple[float, ...] = (1e-2, 1e-1, 1.0)
#: L2 strength for prefixes too small to cross-validate.
_SMALL_PREFIX_C = 1e-2


def _full_proba(model: Any, X: np.ndarray, y_train: np.ndarray, K: int) -> np.ndarray:
    """``[m, K]`` probabilities of all K classes, including classes the probe never saw.

    The probe's columns (``model.classes_``) are mapped into the K classes. A class the probe
    has no column for (absent from the ``t`` training examples) gets the Laplace (add-one)
    probability ``1 / (t + K)`` and the probe's distribution is scaled into the remaining
    mass, so no label is ever impossible; probabilities are then clipped at 1e-12 and
    renormalised. ``model=None`` stands for a one-class prefix: that class with certainty,
    which the escape turns into the Laplace estimate.
    """
    t = len(y_train)
    p = np.zeros((X.shape[0], K))
    if model is None:
        cols = np.unique(y_train)
        p[:, cols[0]] = 1.0
    else:
        cols = np.asarray(model.classes_).astype(int)
        p[:, cols] = np.asarray(model.predict_proba(X), dtype=np.float64)
    unseen = np.setdiff1d(np.arange(K), cols)
    if unseen.size:
        escape = 1.0 / (t + K)
        p *= 1.0 - escape * unseen.size
        p[:, unseen] = escape
    p = np.clip(p, _EPS, None)
    return p / p.sum(axis=1, keepdims=True)


def _encode_labels(y: np.ndarray, n_classes: int | None) -> tuple[np.ndarray, int]:
    y = np.asarray(y)
    if n_classes is None:
        classes, codes = np.unique(y, return_inverse=True)
        return codes.astype(int), len(classes)
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"with n_classes={n_classes}, labels must be integers in [0, {n_classes})")
    return y.astype(int), int(n_classes)


def online_codelength(
    X: np.ndarray, y: np.ndarray, n_classes: int | None = None,
    fractions: Sequence[float] = VOITA_FRACTIONS, fit: FitFn | None = None, seed: int = 0,
) -> dict:
    """Online codelength of labels ``y`` given representations ``X`` (Voita & Titov 2020).

    The ``n`` examples are shuffled once with ``seed`` and cut at :func:`block_boundaries`.
    Block 1 (``t1`` examples) costs ``t1 · log2 K`` bits; block ``i`` is encoded by a probe
    fitted from scratch on blocks ``1..i-1``: ``Σ −ln p(y|x) / ln 2`` bits. ``K`` is
    ``n_classes`` (labels then must be ``0..K-1``) or the number of distinct labels.

    The default probe is the report's linear probe, standing in for Voita & Titov's
    early-stopped probe: the code of :func:`online_codelength_layers` on this one design (C
    chosen per prefix by 3-fold cross-validated log-loss over ``_CS``); it is deterministic in
    ``seed``. ``fit(X_train, y_train)``, if given, replaces it: called on every prefix, it
    returns an object with ``predict_proba`` and ``classes_``. Classes absent from a training
    prefix get a Laplace escape probability (see ``_full_proba``); a prefix with one class is
    coded by that escape rule alone.

    Returns ``codelength_bits``, ``uniform_bits`` (``n log2 K``), ``compression``
    (``uniform_bits / codelength_bits``), ``n``, ``n_classes``, ``boundaries`` and ``blocks``:
    one dict per block with ``start``, ``end``, ``train_size`` and ``bits``.
    """
    X = np.asarray(X, dtype=np.float64)
    codes, K = _encode_labels(y, n_classes)
    n = len(codes)
    if X.shape[0] != n:
        raise ValueError(f"X has {X.shape[0]} rows but y has {n} labels")
    if K < 2:
        raise ValueError(f"online codelength needs at least 2 classes, got {K}")
    order = np.random.default_rng(seed).permutation(n)
    bounds = block_boundaries(n, fractions)
    log2k = float(np.log2(K))
    starts = [0] + bounds[:-1]
    if fit is None:
        bits = _codelength_bits(X[None], codes[None], [K], seed, fractions, _CS, 3, "auto")[0, 0][order]
        block_bits = [float(bits[a:b].sum()) for a, b in zip(starts[1:], bounds[1:])]
    else:
        block_bits = _fitted_block_bits(X[order], codes[order], K, bounds, fit)
    blocks = [{"start": a, "end": b, "train_size": a, "bits": bb}
              for a, b, bb in zip(starts, bounds, [bounds[0] * log2k] + block_bits)]
    total = float(sum(b["bits"] for b in blocks))
    uniform = n * log2k
    return {
        "codelength_bits": total,
        "uniform_bits": uniform,
        "compression": uniform / total if total > 0 else float("inf"),
        "n": n,
        "n_classes": K,
        "boundaries": bounds,
        "blocks": blocks,
    }


def _fitted_block_bits(X: np.ndarray, codes: np.ndarray, K: int, bounds: list[int], fit: FitFn) -> list[float]:
    """Bits of every block after the first, each coded by ``fit`` on the (shuffled) prefix before it."""
    out = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        y_train = codes[:start]
        model = fit(X[:start], y_train) if np.unique(y_train).size > 1 else None
        p = _full_proba(model, X[start:end], y_train, K)
        out.append(float(-np.log(p[np.arange(end - start), codes[start:end]]).sum() / np.log(2)))
    return out


def _binarise(y: np.ndarray, positive: Any | None) -> tuple[np.ndarray, Any]:
    """Binary labels: as they are for two classes, else ``y == positive`` (one-vs-rest).

    The default positive class is the one that allows the largest balanced sample
    (``min(count, n - count)`` largest; ties go to the smallest label).
    """
    y = np.asarray(y)
    values, counts = np.unique(y, return_counts=True)
    if values.size < 2:
        raise ValueError("relative extractability needs at least 2 classes in each labelling")
    if positive is None:
        if values.size == 2:
            positive = values[1]
        else:
            positive = values[int(np.argmax(np.minimum(counts, len(y) - counts)))]
    elif positive not in values:
        raise ValueError(f"class {positive!r} does not occur; present: {values.tolist()}")
    return (y == positive).astype(int), positive


def _balanced_subsample(yb: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    idx = [rng.choice(np.flatnonzero(yb == c), size=per_class, replace=False) for c in (0, 1)]
    return np.sort(np.concatenate(idx))


def relative_extractability(
    X: np.ndarray, y_spurious: np.ndarray, y_target: np.ndarray, seed: int = 0,
    spurious_class: Any | None = None, target_class: Any | None = None,
    fractions: Sequence[float] = VOITA_FRACTIONS, fit: FitFn | None = None,
) -> dict:
    """Relative extractability ``codelength(s) / codelength(t)`` (Lovering et al. 2021).

    Each feature becomes a balanced binary problem: a multi-class labelling is binarised as
    ``class vs rest`` (``spurious_class`` / ``target_class``, default: the class that allows
    the largest balanced sample), then both problems are subsampled, independently, to the
    same ``n`` with ``n/2`` examples per class, where ``n`` is twice the smallest minority
    count. Both codelengths are online codes (:func:`online_codelength`) with the same seed
    and probe. Above 1: the target is easier to extract than the spurious feature.
    """
    X = np.asarray(X, dtype=np.float64)
    ys, s_pos = _binarise(y_spurious, spurious_class)
    yt, t_pos = _binarise(y_target, target_class)
    per_class = int(min(ys.sum(), len(ys) - ys.sum(), yt.sum(), len(yt) - yt.sum()))
    rng = np.random.default_rng([seed, 7])
    idx_s = _balanced_subsample(ys, per_class, rng)
    idx_t = _balanced_subsample(yt, per_class, rng)
    mdl_s = online_codelength(X[idx_s], ys[idx_s], n_classes=2, fractions=fractions, fit=fit, seed=seed)
    mdl_t = online_codelength(X[idx_t], yt[idx_t], n_classes=2, fractions=fractions, fit=fit, seed=seed)
    return {
        "relative_extractability": mdl_s["codelength_bits"] / mdl_t["codelength_bits"],
        "codelength_spurious_bits": mdl_s["codelength_bits"],
        "codelength_target_bits": mdl_t["codelength_bits"],
        "n": 2 * per_class,
        "spurious_class": s_pos,
        "target_class": t_pos,
        "spurious": mdl_s,
        "target": mdl_t,
    }


def online_codelength_layers(
    designs: np.ndarray, labels: dict[str, np.ndarray], seed: int = 0,
    fractions: Sequence[float] = VOITA_FRACTIONS, grid: Sequence[float] = _CS, folds: int = 3,
    device: str = "auto",
) -> dict[str, np.ndarray]:
    """Online codelengths of several labellings on several representations, in batched solves.

    ``designs`` is ``[G, n, d]`` (e.g. every layer of both models) and ``labels`` maps a name
    to ``[n]`` labels of the same examples. The code of :func:`online_codelength`: one shuffle
    from ``seed``, uniform code for the first block, then for each later block a probe
    (:class:`probe.analyses.logistic_probe.LogisticProbe`) fitted from scratch on all earlier
    examples, its L2 strength chosen by ``folds``-fold cross-validated log-loss on that prefix
    only (C = 0.01 where a prefix is too small to split); classes unseen in a prefix get the
    Laplace escape of :func:`_full_proba`. All designs × labellings × grid × folds of one block
    are a single batched L-BFGS solve, on ``device``.

    Returns ``{name: bits [G, n]}``: the cost of every example (in the original order), whose
    sum over examples is the codelength; summing resampled rows gives bootstrap intervals.
    """
    names = list(labels)
    codes, Ks = [], []
    for nm in names:
        c, K = _encode_labels(labels[nm], None)
        if K < 2:
            raise ValueError(f"online codelength of {nm!r} needs at least 2 classes")
        codes.append(c)
        Ks.append(K)
    bits = _codelength_bits(np.asarray(designs), np.stack(codes), Ks, seed, fractions, grid, folds, device)
    return {nm: bits[:, s] for s, nm in enumerate(names)}


def _codelength_bits(
    designs: np.ndarray, Y: np.ndarray, Ks: Sequence[int], seed: int, fractions: Sequence[float],
    grid: Sequence[float], folds: int, device: str,
) -> np.ndarray:
    """Bits ``[G, S, n]`` of every example (original order) for codes ``Y [S, n]`` in ``0..Ks[s]-1``."""
    from probe.analyses.tensors import as_tensor, resolve_device, resolve_dtype

    S, n = Y.shape
    G = designs.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    dev = resolve_device(device)
    X = as_tensor(designs[:, order], dev, resolve_dtype(None))
    Y = Y[:, order]
    bounds = block_boundaries(n, fractions)
    bits = np.zeros((G, S, n))
    bits[:, :, : bounds[0]] = np.log2(Ks)[None, :, None]
    for start, end in zip(bounds[:-1], bounds[1:]):
        p = _block_proba(X, Y[:, :start], Ks, end - start, seed, grid, folds)  # [G, S, m, K_max]
        true = Y[:, start:end]  # [S, m]
        pt = np.take_along_axis(p, true[None, :, :, None].repeat(G, 0), axis=3)[..., 0]
        bits[:, :, start:end] = -np.log2(pt)
    out = np.empty_like(bits)
    out[:, :, order] = bits
    return out


def _block_proba(X, Ytr: np.ndarray, Ks: Sequence[int], m: int, seed: int, grid: Sequence[float],
                 folds: int) -> np.ndarray:
    """``[G, S, m, K_max]`` probabilities of the ``m`` examples after the prefix ``Ytr [S, t]``
    (of shuffled designs ``X [G, n, d]``), from probes fitted on the prefix, with escapes."""
    from probe.analyses.logistic_probe import LogisticProbe, choose_C_by_cv

    S, start = Ytr.shape
    G = X.shape[0]
    fit_sets = [s for s in range(S) if np.unique(Ytr[s]).size > 1]
    p = np.zeros((G, S, m, max(Ks)))
    for s in range(S):
        if s not in fit_sets:  # one class seen so far: the escape rule alone
            p[:, s, :, : Ks[s]] = _full_proba(None, np.zeros((m, 1)), Ytr[s], Ks[s])[None]
    if not fit_sets:
        return p
    Yg = np.ascontiguousarray(np.broadcast_to(Ytr[fit_sets], (G, len(fit_sets), start)))
    counts = [np.bincount(Ytr[s]).max(initial=0) for s in fit_sets]
    if start >= 4 * folds and min(counts) >= folds:
        C = choose_C_by_cv(X[:, :start], Yg, grid, folds, seed, max_iter=200, tol=1e-4, device=X.device)
    else:
        C = np.full((G, len(fit_sets)), _SMALL_PREFIX_C)
    probe = LogisticProbe(C=C, max_iter=500, tol=1e-5, device=X.device).fit(X[:, :start], Yg)
    probs = probe.predict_proba(X[:, start:start + m])  # [G, S', m, K_max]
    for j, s in enumerate(fit_sets):
        for g in range(G):
            model = _FixedProba(probe.classes_[g][j], probs[g, j, :, : probe.n_classes_[g, j]])
            p[g, s, :, : Ks[s]] = _full_proba(model, np.zeros((m, 1)), Ytr[s], Ks[s])
    return p


class _FixedProba:
    """Precomputed probabilities behind the ``predict_proba`` / ``classes_`` interface."""

    def __init__(self, classes: np.ndarray, proba: np.ndarray):
        self.classes_ = np.asarray(classes)
        self._proba = proba

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._proba
