"""The probe estimator: L2 logistic regression on standardised features, one problem or many at once.

:class:`LogisticProbe` is what every linear probe of a run uses (probing and control tasks,
MDL, the erasure guarantee check and INLP, the pretrained model's probe head). It equals
``make_pipeline(StandardScaler(), LogisticRegression(C=C))`` (lbfgs, l2) — the same objective,
solved by the batched L-BFGS of :mod:`probe.analyses.lbfgs` in torch, on the CPU or a GPU — and
fits B problems in one solve as cheaply as one: the probes of every layer and property, or every
(C, fold) of a cross-validation. Probe accuracy is to be shown next to the majority-class
baseline (Belinkov 2022, "Probing Classifiers"); choose C by cross-validation on the training
split only, and compare with a control task (Hewitt & Liang 2019) before reading much into a
high accuracy.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedKFold

from probe.analyses.lbfgs import BatchedFit, solve
from probe.analyses.tensors import as_tensor, cpu_threads, resolve_device, resolve_dtype

__all__ = ["LogisticProbe", "choose_C_by_cv"]


def _layout(X: torch.Tensor, y: np.ndarray) -> tuple[torch.Tensor, tuple[int, ...], int, int]:
    """Designs ``[G, n, d]`` and the problem grid ``(G, S)`` for labels ``y [*P, n]``.

    ``y [n]`` with ``X [n, d]``: one problem. ``y [B, n]`` with ``X [n, d]`` (one design shared by
    B label sets) or ``X [B, n, d]`` (one design each). ``y [G, S, n]`` with ``X [G, n, d]``: S
    label sets on each of G designs (``X [n, d]`` is shared by all).
    """
    if y.ndim not in (1, 2, 3):
        raise ValueError(f"y must be [n], [B, n] or [G, S, n]; got shape {y.shape}")
    if X.dim() == 2:
        X = X.unsqueeze(0)
    elif X.dim() != 3:
        raise ValueError(f"X must be [n, d] or [B, n, d]; got shape {tuple(X.shape)}")
    P, n, nx = tuple(y.shape[:-1]), y.shape[-1], X.shape[0]
    if y.ndim == 3:
        G, S = P
        ok = nx in (1, G)
        X = X.expand(G, -1, -1) if ok and nx == 1 else X
    else:
        B = P[0] if P else 1
        ok = nx in (1, B)
        G, S = (1, B) if nx == 1 else (B, 1)
    if not ok or X.shape[1] != n:
        raise ValueError(f"X {tuple(X.shape)} does not match y {y.shape}")
    return X, P, G, S


def _labels(y) -> np.ndarray:
    return np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)


class LogisticProbe(BaseEstimator):
    """L2 logistic regression on standardised features; scikit-learn's estimator contract.

    Equivalent to ``make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight=...))``
    (lbfgs; binary problems have one weight vector, K > 2 classes a softmax), solved in torch on
    ``device`` (``"auto"``: CUDA when available) in ``dtype`` (default float32; statistics in
    float64). ``fit(X, y)`` takes one problem — ``X [n, d]``, ``y [n]`` — or many at once:
    ``y [B, n]`` with ``X [n, d]`` shared or ``X [B, n, d]``, or ``y [G, S, n]`` with
    ``X [G, n, d]`` (S label sets per design). Problems may have different classes. ``C`` is a
    scalar or one value per problem (shape of ``y`` without its last axis); with ``cv_grid``, C is
    chosen per problem by ``cv_folds``-fold stratified cross-validation on the data given to
    ``fit`` (:func:`choose_C_by_cv`; fits at tol ``max(tol, 1e-4)``). ``sample_weight`` weights
    each example's loss and the standardisation statistics (``StandardScaler().fit(X,
    sample_weight=w)``); ``class_weight="balanced"`` is scikit-learn's, loss only.

    Learned state (one problem; with many, each gains the leading problem axes): ``classes_``
    (many: nested lists of arrays), ``n_classes_``, ``C_``, ``coef_`` ``[1 or K, d]`` and
    ``intercept_`` in standardised space (many: ``[K_max, d]``, every class row, binary row 0 zero),
    ``raw_coef_`` / ``raw_intercept_`` the same map on raw features (``coef_ / scale_``),
    ``mean_`` / ``scale_`` ``[d]``, ``n_iter_``, ``converged_``, ``objective_`` (mean CE +
    ||W||²/(2·C·Σw)), ``n_features_in_``.
    """

    def __init__(
        self, C: float | Sequence[float] | np.ndarray = 1.0, max_iter: int = 1000, tol: float = 1e-5,
        device: str | torch.device = "auto", dtype: str | torch.dtype | None = None, num_threads: int | None = None,
        class_weight: str | None = None, cv_grid: Sequence[float] | None = None, cv_folds: int = 3,
        cv_scoring: str = "log_loss", random_state: int = 0,
    ):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.num_threads = num_threads
        self.class_weight = class_weight
        self.cv_grid = cv_grid
        self.cv_folds = cv_folds
        self.cv_scoring = cv_scoring
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None) -> "LogisticProbe":
        """Fit every problem in ``y`` (see the class docstring for shapes); returns ``self``."""
        self.device_ = resolve_device(self.device)
        self.dtype_ = resolve_dtype(self.dtype)
        y = _labels(y)
        Xt, P, G, S = _layout(as_tensor(X, self.device_, self.dtype_), y)
        n = y.shape[-1]
        w = np.ones(y.shape) if sample_weight is None else np.broadcast_to(np.asarray(sample_weight, float), y.shape)
        Y, W = y.reshape(G, S, n), np.ascontiguousarray(w).reshape(G, S, n)
        if self.cv_grid is not None:
            C = _cv_C(Xt, Y, W, self.cv_grid, self.cv_folds, self.random_state, self.max_iter, max(self.tol, 1e-4),
                      self.num_threads, self.cv_scoring, self.class_weight)
        else:
            C = np.array(np.broadcast_to(np.asarray(self.C, dtype=float), P)).reshape(G, S)
        if (C <= 0).any():
            raise ValueError(f"C must be positive; got {self.C!r}")
        fit = solve(Xt, Y, W, C, self.max_iter, self.tol, self.num_threads, self.class_weight)
        self._fit, self._shape = fit, P
        self._store(fit, C)
        return self

    def _store(self, fit: BatchedFit, C: np.ndarray) -> None:
        P, d = self._shape, fit.d
        nc = fit.n_classes
        cls = [[fit.classes[g, s, : nc[g, s]] for s in range(fit.S)] for g in range(fit.G)]
        theta = fit.theta.cpu().numpy()  # [G, S, K, d+1]
        if not P:  # one problem: scikit-learn's shapes
            k = int(nc[0, 0])
            rows = theta[0, 0, (1 if k == 2 else 0): k]
            self.classes_, self.n_classes_ = cls[0][0], k
            self.coef_, self.intercept_ = rows[:, :d], rows[:, d]
        else:
            self.classes_ = cls if len(P) == 2 else [c for row in cls for c in row]
            self.n_classes_ = nc.reshape(P)
            K = theta.shape[2]
            self.coef_, self.intercept_ = theta[..., :d].reshape(P + (K, d)), theta[..., d].reshape(P + (K,))

        def per_problem(values, cast):
            a = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values).reshape(P)
            return cast(a) if not P else a

        self.C_ = per_problem(C, float)
        self.n_iter_ = per_problem(fit.n_iter, int)
        self.converged_ = per_problem(fit.converged, bool)
        self.objective_ = per_problem(fit.f, float)
        self.mean_ = fit.mu.cpu().numpy().reshape(P + (d,))
        self.scale_ = fit.sd.cpu().numpy().reshape(P + (d,))
        self.raw_coef_ = self.coef_ / self.scale_[..., None, :]
        self.raw_intercept_ = self.intercept_ - (self.raw_coef_ * self.mean_[..., None, :]).sum(-1)
        self.n_features_in_ = d

    def _logits(self, X) -> torch.Tensor:
        """Logits ``[*P, m, K_max]`` (padded classes: a large negative number)."""
        Xt = as_tensor(X, self.device_, self.dtype_)
        Xt = Xt.unsqueeze(0) if Xt.dim() == 2 else Xt
        G = self._fit.G
        if Xt.dim() != 3 or Xt.shape[2] != self._fit.d or Xt.shape[0] not in (1, G):
            raise ValueError(f"X {tuple(Xt.shape)}: expected [m, {self._fit.d}] or [{G}, m, {self._fit.d}]")
        with cpu_threads(self.device_, self.num_threads):
            z = self._fit.logits(Xt.expand(G, -1, -1))  # [G, S, K, m]
        return z.transpose(2, 3).reshape(self._shape + (Xt.shape[1], z.shape[2]))

    def decision_function(self, X) -> np.ndarray:
        """scikit-learn's decision function for one problem (binary ``[m]``: the class-1 logit;
        else ``[m, K]``); for many, every class's logit ``[*P, m, K_max]`` (padded classes -inf)."""
        z = self._logits(X).double().cpu().numpy()
        if not self._shape:
            return z[:, 1] if self.n_classes_ == 2 else z
        valid = np.arange(z.shape[-1]) < np.asarray(self.n_classes_)[..., None, None]
        return np.where(valid, z, -np.inf)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[*P, m, K_max]``, columns in ``classes_`` order; padded classes get 0."""
        return torch.softmax(self._logits(X), -1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Predicted labels ``[*P, m]``, in each problem's own label values."""
        idx = self._logits(X).argmax(-1).cpu().numpy()
        classes = self._fit.classes.reshape(self._shape + self._fit.classes.shape[2:])  # [*P, K_max]
        return np.take_along_axis(classes, idx, axis=-1)

    def score(self, X, y, sample_weight=None):
        """Accuracy (weighted by ``sample_weight``): a float for one problem, else ``[*P]``."""
        y = _labels(y)
        hit = (self.predict(X) == y).astype(float)
        weights = None if sample_weight is None else np.broadcast_to(sample_weight, hit.shape)
        acc = np.average(hit, axis=-1, weights=weights)
        return float(acc) if not self._shape else acc


# --------------------------------------------------------------------------------------------
# cross-validated C


def _fold_ids(Y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id ``[G, S, n]`` of every example: ``StratifiedKFold(folds, shuffle=True, random_state=seed)``
    of each problem's labels (the same labels get the same folds)."""
    out = np.empty(Y.shape, dtype=np.int64)
    done: dict[bytes, np.ndarray] = {}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class with fewer members than folds is dealt as far as it goes
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for g, s in np.ndindex(*Y.shape[:2]):
            key = Y[g, s].tobytes()
            if key not in done:
                fold = np.empty(Y.shape[2], dtype=np.int64)
                for k, (_, held) in enumerate(splitter.split(np.zeros((Y.shape[2], 1)), Y[g, s])):
                    fold[held] = k
                done[key] = fold
            out[g, s] = done[key]
    return out


def _cv_C(
    X: torch.Tensor, Y: np.ndarray, W: np.ndarray, grid: Sequence[float], folds: int, seed: int, max_iter: int,
    tol: float, num_threads: int | None = None, scoring: str = "log_loss", class_weight: str | None = None,
) -> np.ndarray:
    """Best C ``[G, S]`` for problems ``Y [G, S, n]`` (sample weights ``W``) on designs ``X [G, n, d]``.

    All G × S × len(grid) × folds fits are one batched solve sharing each design matrix; each
    fold standardises with its own training part. Held-out scores are summed over examples
    (weighted by ``W``). Ties go to the smaller C.
    """
    if scoring not in ("log_loss", "accuracy"):
        raise ValueError(f"scoring must be 'log_loss' or 'accuracy'; got {scoring!r}")
    G, S, n = Y.shape
    grid = np.asarray(grid, dtype=float)
    if grid.ndim != 1 or len(grid) == 0 or (grid <= 0).any():
        raise ValueError(f"grid must be a non-empty list of positive C values; got {grid.tolist()}")
    nG = len(grid)
    # sub-problem axis: (s, c, f)
    Ys = np.repeat(Y, nG * folds, axis=1)  # [G, S*nG*F, n]
    Ws = np.repeat(W, nG * folds, axis=1)
    f_id = np.tile(np.arange(folds), S * nG)
    held = _fold_ids(Y, folds, seed).repeat(nG * folds, axis=1) == f_id[None, :, None]
    Cs = np.tile(np.repeat(grid, folds), S)[None].repeat(G, 0)
    out = solve(X, Ys, Ws * ~held, Cs, max_iter, tol, num_threads, class_weight)
    with cpu_threads(X.device, num_threads):
        logp = torch.log_softmax(out.logits(X), dim=2).cpu().numpy()  # [G, SS, K, n]
    classes = out.classes  # [G, SS, K], padded
    valid = np.arange(classes.shape[-1]) < out.n_classes[..., None]
    match = (Ys[:, :, None, :] == classes[..., None]) & valid[..., None]  # [G, SS, K, n]
    if scoring == "accuracy":
        pred = np.take_along_axis(classes, logp.argmax(2), axis=2)
        score = (pred == Ys).astype(float)
    else:  # held-out log-likelihood, probabilities clipped at 1e-15 like sklearn's log_loss
        score = np.where(match, np.maximum(logp, np.log(1e-15)), 0.0).sum(2)
        score = np.where(match.any(2), score, np.log(1e-15))
    total = (score * held * Ws).sum(-1).reshape(G, S, nG, folds).sum(-1)  # summed over held-out examples
    order = np.argsort(grid, kind="stable")
    best = np.argmax(total[..., order], axis=-1)  # first maximum: the smallest C
    return grid[order][best]


def choose_C_by_cv(
    X, y, grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0), folds: int = 3, seed: int = 0,
    scoring: str = "log_loss", max_iter: int = 1000, tol: float = 1e-4, device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None, num_threads: int | None = None, class_weight: str | None = None,
    sample_weight=None,
):
    """Regularisation strength per problem by stratified k-fold cross-validation.

    ``X`` and ``y`` as for :meth:`LogisticProbe.fit` (one problem, ``[B]`` or ``[G, S]``
    problems), the *training* split only; every (problem, C, fold) fit runs in one batched solve,
    each fold standardised on its own training part. Folds: ``StratifiedKFold(folds,
    shuffle=True, random_state=seed)`` of each problem's labels. ``scoring``: held-out
    ``"log_loss"`` (default; smoother than accuracy on small folds) or ``"accuracy"``. Returns C
    (a float for one problem, else shaped like ``y`` without its last axis); ties go to the
    smallest C (the most restricted probe, cf. Hewitt & Liang 2019).
    """
    dev = resolve_device(device)
    y = _labels(y)
    Xt, P, G, S = _layout(as_tensor(X, dev, resolve_dtype(dtype)), y)
    w = np.ones(y.shape) if sample_weight is None else np.broadcast_to(np.asarray(sample_weight, float), y.shape)
    C = _cv_C(Xt, y.reshape(G, S, -1), np.ascontiguousarray(w).reshape(G, S, -1), grid, folds, seed, max_iter, tol,
              num_threads, scoring, class_weight)
    return float(C[0, 0]) if not P else C.reshape(P)
