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


#: L2 strengths the default probe chooses from, on its own training prefix.
_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: L2 strength for prefixes too small to hold out a validation part.
_SMALL_PREFIX_C = 1e-2
#: lbfgs iterations while choosing C and for the final probe: nearly separable prefixes at
#: large C otherwise run to thousands of iterations for a negligible change in codelength.
_SEARCH_MAX_ITER = 100
_FINAL_MAX_ITER = 500


def _holdout_log_loss(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    p = np.full(len(y), _EPS)
    cols = {c: j for j, c in enumerate(model.classes_)}
    proba = model.predict_proba(X)
    for i, c in enumerate(y):
        if c in cols:
            p[i] = max(proba[i, cols[c]], _EPS)
    return float(-np.log(p).mean())


def _choose_c(X: np.ndarray, y: np.ndarray, Cs: Sequence[float], rng: np.random.Generator) -> float:
    """The L2 strength with the lowest log-loss on a stratified third of the prefix, fitted on the rest."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    val = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: int(np.sum(y == c)) // 3] for c in np.unique(y)])
    train = np.setdiff1d(np.arange(len(y)), val)
    if len(val) < 4 or np.unique(y[train]).size < 2:
        return _SMALL_PREFIX_C
    scaler = StandardScaler().fit(X[train])
    Xt, Xv = scaler.transform(X[train]), scaler.transform(X[val])
    model = LogisticRegression(max_iter=_SEARCH_MAX_ITER, warm_start=True)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in sorted(Cs):  # warm-started along the path, weakest regularisation last
            model.set_params(C=C).fit(Xt, y[train])
            losses.append((_holdout_log_loss(model, Xv, y[val]), C))
    return min(losses)[1]


def _default_fit(seed: int, Cs: Sequence[float] = _CS) -> FitFn:
    """The report's probe (``fit_probe``: StandardScaler + LogisticRegression) with its C chosen per prefix.

    Voita & Titov's probes stop early on held-out data; a fixed C=1 instead overfits small
    prefixes, and at width 384 even random labels then cost about twice the uniform code.
    So C is chosen by log-loss on a stratified third of the training prefix (from ``seed``),
    and the probe is refitted on the whole prefix: only past examples are used, so the code
    stays a valid prequential code. Prefixes too small to split use C = 0.01.
    """
    from probe.analyses.probing import fit_probe

    def fit(X_train: np.ndarray, y_train: np.ndarray) -> Any:
        C = _choose_c(X_train, y_train, Cs, np.random.default_rng([seed, len(y_train)]))
        return fit_probe(X_train, y_train, C=C, max_iter=_FINAL_MAX_ITER, seed=seed)

    return fit


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

    ``fit(X_train, y_train)`` returns an object with ``predict_proba`` and ``classes_``;
    the default is the report's linear probe (``StandardScaler`` + L2 ``LogisticRegression``)
    with C chosen on each training prefix (see ``_default_fit``), standing in for Voita &
    Titov's early-stopped probe; it is deterministic in ``seed``. Classes absent
    from a training prefix get a Laplace escape probability (see ``_full_proba``); a prefix
    with one class is coded by that escape rule alone.

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
    fit = fit if fit is not None else _default_fit(seed)
    order = np.random.default_rng(seed).permutation(n)
    X, codes = X[order], codes[order]
    bounds = block_boundaries(n, fractions)
    log2k = float(np.log2(K))
    blocks = [{"start": 0, "end": bounds[0], "train_size": 0, "bits": bounds[0] * log2k}]
    for start, end in zip(bounds[:-1], bounds[1:]):
        y_train = codes[:start]
        model = fit(X[:start], y_train) if np.unique(y_train).size > 1 else None
        p = _full_proba(model, X[start:end], y_train, K)
        nats = -np.log(p[np.arange(end - start), codes[start:end]]).sum()
        blocks.append({"start": start, "end": end, "train_size": start, "bits": float(nats / np.log(2))})
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


#: The L2 grid for the batched online code (a subset of ``_CS``: the extremes were never chosen
#: on the default run's prefixes, and every grid value multiplies the batched solve).
_BATCHED_CS: tuple[float, ...] = (1e-2, 1e-1, 1.0)


def online_codelength_layers(
    designs: np.ndarray, labels: dict[str, np.ndarray], seed: int = 0,
    fractions: Sequence[float] = VOITA_FRACTIONS, grid: Sequence[float] = _BATCHED_CS, folds: int = 3,
    device: str = "auto",
) -> dict[str, np.ndarray]:
    """Online codelengths of several labellings on several representations, in batched solves.

    ``designs`` is ``[G, n, d]`` (e.g. every layer of both models) and ``labels`` maps a name
    to ``[n]`` labels of the same examples. Same code as :func:`online_codelength`: one
    shuffle from ``seed``, uniform code for the first block, then a probe fitted from scratch
    on all earlier examples for each later block, its L2 strength chosen by ``folds``-fold
    cross-validated log-loss on that prefix only (C = 0.01 where a prefix is too small to
    split); classes unseen in a prefix get the Laplace escape of :func:`_full_proba`.
    All designs × labellings × grid × folds of one block are a single batched L-BFGS solve
    (:mod:`probe.analyses.batched_probe`).

    Returns ``{name: bits [G, n]}``: the cost of every example (in the original order), whose
    sum over examples is the codelength; summing resampled rows gives bootstrap intervals.
    """
    import torch

    from probe.analyses.batched_probe import _as_tensor, _cv_C, _device, _dtype, _solve

    names = list(labels)
    codes, Ks = [], []
    for nm in names:
        c, K = _encode_labels(labels[nm], None)
        if K < 2:
            raise ValueError(f"online codelength of {nm!r} needs at least 2 classes")
        codes.append(c)
        Ks.append(K)
    Y = np.stack(codes)  # [S, n]
    S, n = Y.shape
    G = designs.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    dev = _device(device)
    X = _as_tensor(np.asarray(designs)[:, order], dev, _dtype(None, dev))
    Y = Y[:, order]
    bounds = block_boundaries(n, fractions)
    bits = np.zeros((G, S, n))
    bits[:, :, : bounds[0]] = np.log2(Ks)[None, :, None]
    for start, end in zip(bounds[:-1], bounds[1:]):
        Ytr = Y[:, :start]
        fit_sets = [s for s in range(S) if np.unique(Ytr[s]).size > 1]
        p = np.zeros((G, S, end - start, max(Ks)))
        for s in range(S):
            if s not in fit_sets:  # one class seen so far: the escape rule alone
                p[:, s, :, : Ks[s]] = _full_proba(None, np.zeros((end - start, 1)), Ytr[s], Ks[s])[None]
        if fit_sets:
            Yg = np.broadcast_to(Ytr[fit_sets], (G, len(fit_sets), start))
            counts = [np.bincount(Ytr[s]).max(initial=0) for s in fit_sets]
            if start >= 4 * folds and min(counts) >= folds:
                C = _cv_C(X[:, :start], np.ascontiguousarray(Yg), grid, folds, seed, 200, 1e-4)
            else:
                C = np.full((G, len(fit_sets)), _SMALL_PREFIX_C)
            fitted = _solve(X[:, :start], np.ascontiguousarray(Yg), np.ones(Yg.shape), C, 500, 1e-5)
            with torch.no_grad():
                probs = torch.softmax(fitted.logits(X[:, start:end]), dim=2).cpu().numpy()  # [G, S', K, m]
            for j, s in enumerate(fit_sets):
                for g in range(G):
                    nc = fitted.n_classes[g, j]
                    model = _FixedProba(fitted.classes[g, j, :nc], probs[g, j, :nc].T)
                    p[g, s, :, : Ks[s]] = _full_proba(model, np.zeros((end - start, 1)), Ytr[s], Ks[s])
        true = Y[:, start:end]  # [S, m]
        pt = np.take_along_axis(p, true[None, :, :, None].repeat(G, 0), axis=3)[..., 0]
        bits[:, :, start:end] = -np.log2(pt)
    out_bits = np.empty_like(bits)
    out_bits[:, :, order] = bits
    return {nm: out_bits[:, s] for s, nm in enumerate(names)}


class _FixedProba:
    """Precomputed probabilities behind the ``predict_proba`` / ``classes_`` interface."""

    def __init__(self, classes: np.ndarray, proba: np.ndarray):
        self.classes_ = np.asarray(classes)
        self._proba = proba

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._proba
