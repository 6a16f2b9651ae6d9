"""Concept erasers on the last dimension of a tensor, and the check that they worked.

Every eraser here is one affine edit of low rank,

    x  ↦  x − ((x − b) Rᵀ) Lᵀ,        L, Rᵀ: [d, r],

so it applies to ``[batch, seq, d]`` hidden states through
:func:`probe.causal.hooks.edit_hidden_state` and its ``rank`` r is the number of directions
removed. Three ways to choose L, R, b:

- :func:`fit_leace`: LEACE (Belrose et al. 2023, "LEACE: Perfect linear concept erasure in
  closed form"), the least-squares edit after which no linear predictor of the concept does
  better than a constant one; rank <= classes − 1. Uses the ``concept-erasure`` package.
- :func:`fit_inlp`: INLP (Ravfogel et al. 2020, "Null It Out"), repeated linear probes whose
  directions are projected out until a fresh probe fails on held-out rows.
- :func:`random_eraser`: as many uniformly random directions (the amnesic control of Elazar
  et al. 2021, "Amnesic Probing"): if erasing the concept changes behaviour and erasing random
  directions of the same rank does not, the model used the concept.

:func:`concept_decodability` is the guarantee to verify (docs/design.md §5): a fresh logistic probe
on held-out rows, against the majority baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_PROBE_ROWS = 4000
LEACE_CHUNK = 65536  # rows per LeaceFitter.update: no float64 copy of a whole layer's activations


@dataclass(frozen=True, eq=False)
class Eraser:
    """``x ↦ x − ((x − bias) @ right.T) @ left.T`` on the last dimension.

    ``left`` ``[d, r]``, ``right`` ``[r, d]`` and ``bias`` ``[d]`` are float64 on the CPU; a call
    casts them to the input's device and computes in the input's dtype (float32 for half types),
    returning the input's dtype. NumPy arrays in, NumPy arrays out.
    """

    left: torch.Tensor
    right: torch.Tensor
    bias: torch.Tensor
    method: str

    @property
    def rank(self) -> int:
        """Rank of the edit: the number of directions removed."""
        return int(self.left.shape[1])

    @property
    def dim(self) -> int:
        return int(self.left.shape[0])

    @property
    def P(self) -> torch.Tensor:
        """The linear part ``I − L R`` as a ``[d, d]`` float64 matrix."""
        return torch.eye(self.dim, dtype=self.left.dtype) - self.left @ self.right

    def __call__(self, x):
        if isinstance(x, np.ndarray):
            return self(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        if not torch.is_floating_point(x):
            raise TypeError(f"{self.method} eraser: expected a floating-point tensor, got {x.dtype}")
        if x.shape[-1] != self.dim:
            raise ValueError(f"{self.method} eraser: last dimension is {x.shape[-1]}, fitted on {self.dim}")
        if self.rank == 0:
            return x.clone()
        work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        left, right, bias = (t.to(device=x.device, dtype=work) for t in (self.left, self.right, self.bias))
        xw = x.to(work)
        return (xw - ((xw - bias) @ right.T) @ left.T).to(x.dtype)


@dataclass(frozen=True, eq=False)
class InlpEraser(Eraser):
    """An INLP eraser with its fitting record.

    ``history``: held-out score of the probe trained at each iteration, the last one after the
    final projection; ``iterations``: probes whose directions were removed; ``baseline``:
    majority rate (or chance, for balanced accuracy) of the held-out rows; ``converged``: the
    last probe scored <= baseline + tolerance.
    """

    history: tuple[float, ...] = ()
    iterations: int = 0
    baseline: float = float("nan")
    converged: bool = False


def _as_float64(X) -> np.ndarray:
    if isinstance(X, torch.Tensor):  # any float dtype (bf16 has no numpy type): float64 holds each value exactly
        X = X.detach().cpu().to(torch.float64).numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a [rows, dim] matrix, got shape {X.shape}")
    return X


def _labels(z, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, codes)``: the sorted class values and each row's index into them."""
    if isinstance(z, torch.Tensor):
        z = z.detach().cpu().numpy()
    z = np.asarray(z)
    if z.shape != (n,):
        raise ValueError(f"expected {n} class labels, got shape {z.shape}")
    return np.unique(z, return_inverse=True)


def _orthonormal(Q: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(Q, dtype=np.float64))


def fit_leace(X, z, *, shrinkage: bool = True, svd_tol: float = 0.01, constrain_cov_trace: bool = True) -> Eraser:
    """LEACE eraser for the class labels ``z`` of the rows of ``X`` (Belrose et al. 2023).

    Fitted in float64 with ``concept_erasure.LeaceFitter`` on one-hot labels. After the edit the
    cross-covariance of the fitting rows with the one-hot concept is zero, so no linear
    predictor with a convex loss beats the constant one there. The package stores the edit as
    ``proj_left @ proj_right``; it is refactored here by SVD, dropping singular values below
    ``1e-10`` of the largest, so ``rank`` is its numerical rank (<= classes − 1; concept
    directions whose whitened cross-covariance is under ``svd_tol`` are not erased). The
    keyword arguments are the package's. The statistics are accumulated ``LEACE_CHUNK`` rows at a
    time (``LeaceFitter.update``), so ``X`` may stay in its own dtype (bf16 from an accelerator).
    """
    from concept_erasure import LeaceFitter

    n = len(X)
    if n <= LEACE_CHUNK:
        X = _as_float64(X)
    elif getattr(X, "ndim", 2) != 2:
        raise ValueError(f"expected a [rows, dim] matrix, got shape {tuple(X.shape)}")
    _, codes = _labels(z, n)
    k = int(codes.max()) + 1 if len(codes) else 1
    Z = np.eye(k)[codes]
    fitter = LeaceFitter(X.shape[1], k, dtype=torch.float64, shrinkage=shrinkage, svd_tol=svd_tol,
                         constrain_cov_trace=constrain_cov_trace)
    for start in range(0, max(n, 1), LEACE_CHUNK):  # statistics accumulated chunk by chunk, in float64
        chunk = slice(start, start + LEACE_CHUNK)
        fitter.update(torch.from_numpy(_as_float64(X[chunk])), torch.from_numpy(Z[chunk]))
    eraser = fitter.eraser
    U, S, Vh = torch.linalg.svd(eraser.proj_left @ eraser.proj_right)
    r = int((S > S[0] * 1e-10).sum()) if S.numel() and S[0] > 0 else 0
    bias = eraser.bias if eraser.bias is not None else torch.zeros(X.shape[1], dtype=torch.float64)
    return Eraser(U[:, :r] * S[:r], Vh[:r].contiguous(), bias.clone(), "leace")


def random_eraser(X, rank: int, seed: int = 0) -> Eraser:
    """Orthogonal projection removing ``rank`` uniformly random orthonormal directions about the
    mean of ``X`` (the amnesic control of Elazar et al. 2021)."""
    X = _as_float64(X)
    d = X.shape[1]
    if not 0 <= rank <= d:
        raise ValueError(f"random eraser: rank {rank} out of range 0..{d}")
    G = np.random.default_rng(seed).standard_normal((d, rank))
    Q = np.linalg.qr(G)[0] if rank else np.zeros((d, 0))
    Q = _orthonormal(Q)
    return Eraser(Q, Q.T.contiguous(), torch.from_numpy(X.mean(0)), "random")


def _probe_rows(codes: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_rows`` row indices, as class-balanced as the counts allow: each class keeps
    ``max_rows // K`` rows, or all of them if it has fewer."""
    if len(codes) <= max_rows:
        return np.arange(len(codes))
    classes = np.unique(codes)
    cap = max(1, max_rows // len(classes))
    keep = [
        rows if len(rows) <= cap else rng.choice(rows, cap, replace=False)
        for rows in (np.flatnonzero(codes == c) for c in classes)
    ]
    return np.sort(np.concatenate(keep))


class _Probe:
    """Standardised logistic regression with class-balanced weights
    (:class:`probe.analyses.logistic_probe.LogisticProbe`, ``class_weight="balanced"``).

    Trained with balanced class weights, its logits are those of a uniform class prior:
    their argmax is the prediction scored by balanced accuracy, and adding the log prior of the
    training labels gives the prediction scored by plain accuracy (the prior shift of
    Saerens et al. 2002), comparable with the majority rate even for a rare class.
    """

    def __init__(self, X: np.ndarray, codes: np.ndarray, k: int, *, seed: int, max_rows: int, C: float,
                 max_iter: int, device: str = "auto") -> None:
        from probe.analyses.logistic_probe import LogisticProbe

        rows = _probe_rows(codes, max_rows, np.random.default_rng(seed))
        self.k = k
        prior = np.bincount(codes, minlength=k) / len(codes)
        self.log_prior = np.log(np.maximum(prior, 1e-12))
        self.probe = LogisticProbe(C=C, max_iter=max_iter, class_weight="balanced", device=device).fit(
            X[rows], codes[rows])

    def logits(self, X: np.ndarray) -> np.ndarray:
        """``[n, k]`` logits under a uniform prior; classes missing from training get −inf."""
        scores = self.probe.decision_function(X)
        if scores.ndim == 1:
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        out = np.full((len(X), self.k), -np.inf)
        out[:, self.probe.classes_] = scores
        return out

    def scores(self, X: np.ndarray, codes: np.ndarray) -> dict[str, float]:
        logits = self.logits(X)
        balanced = logits.argmax(1)
        plain = (logits + self.log_prior).argmax(1)
        recalls = [np.mean(balanced[codes == c] == c) for c in np.unique(codes)]
        return {"accuracy": float(np.mean(plain == codes)), "balanced_accuracy": float(np.mean(recalls))}

    def directions(self) -> np.ndarray:
        """``[m, d]`` weight rows of the classifier in the raw (unstandardised) coordinates.

        A multinomial probe's rows sum to zero at the optimum (the softmax ignores a vector added
        to every row, the L2 penalty does not), so they span at most classes − 1 directions; they
        are centred in float64 so that the solver's float32 rounding does not add a spurious one.
        """
        W = np.atleast_2d(np.asarray(self.probe.raw_coef_, dtype=np.float64))
        return W - W.mean(0) if W.shape[0] > 1 else W


def concept_decodability(X_train, z_train, X_test, z_test, seed: int = 0, *, max_rows: int = MAX_PROBE_ROWS,
                         C: float = 1.0, max_iter: int = 1000, device: str = "auto") -> dict[str, float]:
    """How well a fresh linear probe decodes the concept on held-out rows.

    A standardised L2 logistic probe (:class:`probe.analyses.logistic_probe.LogisticProbe`,
    scikit-learn's ``StandardScaler`` + ``LogisticRegression`` objective, class-balanced weights)
    fitted on at most ``max_rows`` class-balanced training rows, on ``device``. ``accuracy``
    (prior-corrected predictions) is to be compared with ``majority``, the test rate of the
    training majority class; ``balanced_accuracy`` (mean per-class recall) with ``chance`` =
    1 / classes, the fairer pair when one class is rare. LEACE's guarantee: neither beats its
    baseline by more than noise.
    """
    X_train, X_test = _as_float64(X_train), _as_float64(X_test)
    classes, codes_train = _labels(z_train, len(X_train))
    if isinstance(z_test, torch.Tensor):
        z_test = z_test.detach().cpu().numpy()
    z_test = np.asarray(z_test)
    if z_test.shape != (len(X_test),):
        raise ValueError(f"expected {len(X_test)} test labels, got shape {z_test.shape}")
    index = {c: i for i, c in enumerate(classes.tolist())}
    codes_test = np.array([index.get(c, -1) for c in z_test.tolist()], dtype=np.int64)  # -1: unseen class
    majority_class = np.bincount(codes_train).argmax()
    result = {"majority": float(np.mean(codes_test == majority_class)), "chance": 1.0 / len(classes),
              "n_test": int(len(X_test)), "n_train": int(len(X_train))}
    if len(classes) < 2:  # nothing to learn: the constant prediction
        recalls = [float(c == majority_class) for c in np.unique(codes_test)]
        return {**result, "accuracy": result["majority"], "balanced_accuracy": float(np.mean(recalls))}
    probe = _Probe(X_train, codes_train, len(classes), seed=seed, max_rows=max_rows, C=C, max_iter=max_iter,
                   device=device)
    return {**probe.scores(X_test, codes_test), **result}


def fit_inlp(X, z, max_iterations: int = 10, tolerance: float = 0.02, seed: int = 0, held_out: float = 0.3, *,
             metric: str = "accuracy", max_rows: int = MAX_PROBE_ROWS, C: float = 1.0,
             max_iter: int = 1000, device: str = "auto") -> InlpEraser:
    """INLP eraser for the class labels ``z`` of the rows of ``X`` (Ravfogel et al. 2020).

    The rows are split once, stratified by class, into a training part and a held-out part
    (fraction ``held_out``). Each iteration fits a fresh L2 logistic probe (standardised,
    class-balanced, at most ``max_rows`` training rows, on ``device``) on the training part projected so far,
    scores it on the projected held-out part, and then:

    - **stops** if the held-out score is <= baseline + ``tolerance`` (``metric="accuracy"``:
      prior-corrected accuracy against the majority rate; ``"balanced_accuracy"``: against
      1 / classes, the better choice when a class is rare): that probe's directions are not
      removed and ``converged`` is set;
    - otherwise adds the probe's weight rows (in raw coordinates), orthonormalised against the
      directions so far, to the removed subspace Q; X is projected onto the nullspace of all of
      them about the mean μ of ``X``: x ↦ x − (x − μ) Q Qᵀ;

    and at most ``max_iterations`` probes are removed. ``history`` holds every probe's held-out
    score, the last one that of a fresh probe after the final projection (so a run that used
    its whole budget still says whether the concept is gone); ``iterations`` is how many probes
    were removed and ``rank`` the dimension of Q.
    """
    from sklearn.model_selection import train_test_split

    if metric not in ("accuracy", "balanced_accuracy"):
        raise ValueError(f"INLP metric {metric!r}: allowed 'accuracy', 'balanced_accuracy'")
    X = _as_float64(X)
    classes, codes = _labels(z, len(X))
    k = len(classes)
    n, d = X.shape
    mean = X.mean(0)
    Q = np.zeros((d, 0))
    history: list[float] = []
    iterations, converged, baseline = 0, False, float("nan")
    if k >= 2:
        train, dev = train_test_split(np.arange(n), test_size=held_out, random_state=seed, stratify=codes)
        majority = np.bincount(codes[train], minlength=k).argmax()
        baseline = float(np.mean(codes[dev] == majority)) if metric == "accuracy" else 1.0 / k
        Xc = X - mean
        for it in range(max_iterations + 1):
            Xp = Xc - (Xc @ Q) @ Q.T
            probe = _Probe(Xp[train], codes[train], k, seed=seed + it, max_rows=max_rows, C=C, max_iter=max_iter,
                           device=device)
            score = probe.scores(Xp[dev], codes[dev])[metric]
            history.append(score)
            if score <= baseline + tolerance:
                converged = True
                break
            if it == max_iterations:
                break
            W = probe.directions()
            W = W / np.linalg.norm(W, axis=1, keepdims=True).clip(1e-300)
            W = W.T - Q @ (Q.T @ W.T)
            U, S, _ = np.linalg.svd(W, full_matrices=False)
            new = U[:, S > 1e-8 * max(S.max(initial=0.0), 1e-300)]
            if new.shape[1] == 0:
                break
            Q = np.hstack([Q, new])
            iterations += 1
    Qt = _orthonormal(Q)
    return InlpEraser(Qt, Qt.T.contiguous(), torch.from_numpy(mean), "inlp", tuple(history), iterations,
                      baseline, converged)
