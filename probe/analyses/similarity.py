"""Linear CKA between representations of the same examples (Kornblith et al. 2019).

The debiased variant replaces the biased HSIC estimator by the unbiased one of Song et al.
(2012), as used for CKA by Nguyen, Raghu & Kornblith (2021, "Do Wide and Deep Networks
Learn the Same Things?"). The biased estimator is pushed towards 1 when the number of
examples ``n`` is small relative to the width (for independent noise with ``n = 50`` and
width 500 it is about 0.9); the debiased one stays near 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probe.analyses.stats import jackknife_interval, metric_row


def _centre(G: np.ndarray) -> np.ndarray:
    """H G H with H = I - 11ᵀ/n (double centring)."""
    return G - G.mean(0, keepdims=True) - G.mean(1, keepdims=True) + G.mean()


def _u_centre(G: np.ndarray) -> np.ndarray:
    """U-centring (Székely & Rizzo 2014): ``<U(K), U(L)> / (n (n - 3))`` is the unbiased HSIC of Song et al. (2012).

    The diagonal is zeroed and ``K_ij - r_i/(n-2) - r_j/(n-2) + S/((n-1)(n-2))`` is kept off
    the diagonal (``r`` row sums, ``S`` total of the zero-diagonal Gram); this is the form
    of ``center_gram(unbiased=True)`` in Kornblith's CKA code. Needs ``n >= 4``.
    """
    n = G.shape[0]
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 examples, got {n}")
    G = np.array(G, dtype=np.float64, copy=True)
    np.fill_diagonal(G, 0.0)
    means = G.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    G -= means[:, None]
    G -= means[None, :]
    np.fill_diagonal(G, 0.0)
    return G


def _cka_from_grams(K: np.ndarray, L: np.ndarray, debiased: bool = False) -> float:
    """CKA of two uncentred linear Gram matrices: centre both, then <Kc, Lc> / (|Kc| |Lc|).

    With ``debiased=True`` both are U-centred instead, which gives the CKA built from the
    unbiased HSIC estimator (the ``1 / (n (n - 3))`` factors cancel). The debiased
    self-similarities can be ≤ 0 for degenerate inputs; the result is then NaN.
    """
    if debiased:
        Kc, Lc = _u_centre(K), _u_centre(L)
        kk, ll = float((Kc * Kc).sum()), float((Lc * Lc).sum())
        denom = np.sqrt(kk * ll) if kk > 0 and ll > 0 else 0.0
    else:
        Kc, Lc = _centre(K), _centre(L)
        denom = np.linalg.norm(Kc) * np.linalg.norm(Lc)
    return float((Kc * Lc).sum() / denom) if denom > 0 else float("nan")


def _debiased_dot(xty: float, rows_x: np.ndarray, rows_y: np.ndarray, norm_x: float, norm_y: float, n: int) -> float:
    """Unbiased linear HSIC times ``n (n - 3)``, from feature-space quantities (Nguyen et al. 2021).

    ``xty = ‖YᵀX‖²_F`` of centred features, ``rows_*`` the squared row norms, ``norm_*``
    their sums: ``xty - n/(n-2) · rows_x·rows_y + norm_x · norm_y / ((n-1)(n-2))``.
    """
    return float(xty - n / (n - 2.0) * rows_x.dot(rows_y) + norm_x * norm_y / ((n - 1) * (n - 2)))


def linear_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) with columns centred.

    ``X`` is ``[n, p]`` and ``Y`` is ``[n, q]`` over the same ``n`` examples. It is 1 for
    ``Y = c·X·Q`` with ``Q`` orthogonal and ``c > 0``, and near 0 for independent noise.
    ``debiased=True`` uses the unbiased HSIC estimator (Song et al. 2012; Nguyen, Raghu &
    Kornblith 2021): prefer it when ``n`` is small relative to the width. It can be slightly
    negative, and is NaN when a debiased self-similarity is not positive.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y need the same examples (rows): {X.shape[0]} != {Y.shape[0]}")
    X = X - X.mean(axis=0, keepdims=True)
    Y = Y - Y.mean(axis=0, keepdims=True)
    if X.shape[0] < max(X.shape[1], Y.shape[1]):
        return _cka_from_grams(X @ X.T, Y @ Y.T, debiased=debiased)
    cross = np.linalg.norm(Y.T @ X) ** 2
    norm_x = np.linalg.norm(X.T @ X)
    norm_y = np.linalg.norm(Y.T @ Y)
    if debiased:
        return _debiased_feature_cka(cross, norm_x ** 2, norm_y ** 2, _row_norms(X), _row_norms(Y), X.shape[0])
    denom = norm_x * norm_y
    return float(cross / denom) if denom > 0 else float("nan")


def _row_norms(X: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", X, X)


def _debiased_feature_cka(cross: float, xx: float, yy: float, rows_x: np.ndarray, rows_y: np.ndarray, n: int) -> float:
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 examples, got {n}")
    sx, sy = float(rows_x.sum()), float(rows_y.sum())
    hxy = _debiased_dot(cross, rows_x, rows_y, sx, sy, n)
    hxx = _debiased_dot(xx, rows_x, rows_x, sx, sx, n)
    hyy = _debiased_dot(yy, rows_y, rows_y, sy, sy, n)
    return float(hxy / np.sqrt(hxx * hyy)) if hxx > 0 and hyy > 0 else float("nan")


def cka_matrix(pre: np.ndarray, fine: np.ndarray, debiased: bool = False) -> np.ndarray:
    """CKA of every pretrained layer i against every fine-tuned layer j: ``[L1, L2]``.

    ``pre`` is ``[L1, n, d1]`` and ``fine`` ``[L2, n, d2]`` on the same examples. Each layer
    is centred (and its Gram matrix centred or U-centred) once; a pair then costs one inner
    product. When ``n`` exceeds the widths the feature-space form is used instead, which
    never builds an ``n × n`` matrix. ``cka_matrix(A, B)[l, l] == linear_cka(A[l], B[l])``.
    """
    pre = np.asarray(pre, dtype=np.float64)
    fine = np.asarray(fine, dtype=np.float64)
    if pre.ndim != 3 or fine.ndim != 3 or pre.shape[1] != fine.shape[1]:
        raise ValueError(f"need [layers, n, hidden] arrays on the same n examples, got {pre.shape} and {fine.shape}")
    n = pre.shape[1]
    A = pre - pre.mean(axis=1, keepdims=True)
    B = fine - fine.mean(axis=1, keepdims=True)
    if n < max(pre.shape[2], fine.shape[2]):
        centre = _u_centre if debiased else _centre
        GA = np.stack([centre(a @ a.T).ravel() for a in A])
        GB = np.stack([centre(b @ b.T).ravel() for b in B])
        na, nb = np.einsum("ij,ij->i", GA, GA), np.einsum("ij,ij->i", GB, GB)
        denom = np.sqrt(np.clip(na, 0, None))[:, None] * np.sqrt(np.clip(nb, 0, None))[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (GA @ GB.T) / denom
        out[(na <= 0)[:, None] | (nb <= 0)[None, :]] = np.nan
        return out
    self_a = [np.linalg.norm(a.T @ a) for a in A]
    self_b = [np.linalg.norm(b.T @ b) for b in B]
    rows_a = [_row_norms(a) for a in A]
    rows_b = [_row_norms(b) for b in B]
    out = np.empty((len(A), len(B)))
    for i, a in enumerate(A):
        for j, b in enumerate(B):
            cross = np.linalg.norm(b.T @ a) ** 2
            if debiased:
                out[i, j] = _debiased_feature_cka(cross, self_a[i] ** 2, self_b[j] ** 2, rows_a[i], rows_b[j], n)
            else:
                denom = self_a[i] * self_b[j]
                out[i, j] = cross / denom if denom > 0 else np.nan
    return out


def cka_matrix_table(
    matrix: np.ndarray, model: str = "pretrained-vs-finetuned", metric: str = "linear_cka"
) -> pd.DataFrame:
    """Tidy rows of a :func:`cka_matrix`: model (the pair), layer_pre, layer_fine, metric, value."""
    matrix = np.asarray(matrix)
    i, j = np.meshgrid(np.arange(matrix.shape[0]), np.arange(matrix.shape[1]), indexing="ij")
    return pd.DataFrame({
        "model": model, "layer_pre": i.ravel(), "layer_fine": j.ravel(),
        "metric": metric, "value": matrix.ravel().astype(float),
    })


def _centred_dots_loo(A: np.ndarray, B: np.ndarray, debiased: bool) -> tuple[float, np.ndarray]:
    """``<C(A), C(B)>`` of two symmetric Gram matrices on all ``n`` examples and on each leave-one-out
    subset, with C the double centring (or U-centring) of that subset: ``(full, loo[n])`` in O(n²).

    Centring expands into sums of the Gram matrices. Biased: ``<HAH, HBH> = Σ A∘B − (2/m) aᵀb +
    S_A S_B / m²`` (``a``, ``b`` row sums, ``S`` totals, ``m`` examples). U-centred, on zero-diagonal
    matrices: ``Σ A∘B + S_A S_B / ((m−1)(m−2)) − 2/(m−2) aᵀb``, which is ``m (m − 3)`` times the
    unbiased HSIC (Song et al. 2012). Leaving example i out removes its row and column from each sum;
    the other rows' sums lose ``A_ji``, so ``Σ_{j≠i} (a_j − A_ji)(b_j − B_ji)`` expands into the
    full ``aᵀb`` and per-i corrections from ``Ab``, ``Ba`` and the rows of ``A∘B``.
    """
    if debiased:
        A, B = A.copy(), B.copy()
        np.fill_diagonal(A, 0.0)
        np.fill_diagonal(B, 0.0)
    n = A.shape[0]
    a, b = A.sum(1), B.sum(1)
    dA, dB = np.diag(A), np.diag(B)
    prod_rows = np.einsum("ij,ij->i", A, B)
    total, ab, sa, sb = float(prod_rows.sum()), float(a @ b), float(a.sum()), float(b.sum())
    # the same sums without example i
    total_i = total - 2 * prod_rows + dA * dB
    sa_i, sb_i = sa - 2 * a + dA, sb - 2 * b + dB
    ab_i = ab - a * b - (B @ a - dB * a) - (A @ b - dA * b) + (prod_rows - dA * dB)

    def centred(tot, cross, s_a, s_b, m):
        if debiased:
            return tot + s_a * s_b / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * cross
        return tot - 2.0 / m * cross + s_a * s_b / m ** 2

    return float(centred(total, ab, sa, sb, n)), centred(total_i, ab_i, sa_i, sb_i, n - 1)


def cka_jackknife(K: np.ndarray, L: np.ndarray, debiased: bool = False,
                  level: float = 0.95) -> tuple[float, float, float]:
    """CKA of two linear Gram matrices with its leave-one-out jackknife interval, in closed form.

    Equal to ``jackknife_statistic(n, lambda idx: _cka_from_grams(K[idx][:, idx], L[idx][:, idx]))``
    but O(n²) instead of O(n³): every leave-one-out centred inner product comes from the full
    matrices' sums (:func:`_centred_dots_loo`). A subset whose debiased self-similarity is not
    positive gives NaN, as the explicit recomputation does.
    """
    K = np.asarray(K, dtype=np.float64)
    L = np.asarray(L, dtype=np.float64)
    if debiased and K.shape[0] < 5:
        raise ValueError(f"the debiased CKA jackknife needs at least 5 examples, got {K.shape[0]}")
    kl, kl_i = _centred_dots_loo(K, L, debiased)
    kk, kk_i = _centred_dots_loo(K, K, debiased)
    ll, ll_i = _centred_dots_loo(L, L, debiased)

    def ratio(num, x, y):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        ok = (x > 0) & (y > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok, num / np.sqrt(np.where(ok, x * y, 1.0)), np.nan)

    return jackknife_interval(float(ratio(kl, kk, ll)), ratio(kl_i, kk_i, ll_i), level)


def cka_by_layer(pre: np.ndarray, fine: np.ndarray, debiased: bool = False) -> pd.DataFrame:
    """Linear CKA of pretrained layer l vs fine-tuned layer l, with 95 % jackknife intervals over examples.

    ``pre`` and ``fine`` are ``[n_layers + 1, n, hidden]`` on the same examples. Leaving an
    example out is done on the Gram matrices, in closed form (:func:`cka_jackknife`), which
    equals dropping rows of the activations and recomputing.
    (Bootstrap resamples duplicate examples and bias CKA upwards; see ``jackknife_statistic``.)
    With ``debiased=True`` each layer also gets a ``debiased_linear_cka`` row (unbiased HSIC,
    Nguyen et al. 2021), with its own jackknife interval.
    """
    rows = []
    for layer in range(pre.shape[0]):
        X, Y = _centred_or_none(pre[layer]), _centred_or_none(fine[layer])
        variants = [("linear_cka", False)] + ([("debiased_linear_cka", True)] if debiased else [])
        for metric, unbiased in variants:
            value = (float("nan"),) * 3 if X is None or Y is None else cka_jackknife(X @ X.T, Y @ Y.T, unbiased)
            rows.append(metric_row(value, model="pretrained-vs-finetuned", layer=layer, property="representation",
                                   metric=metric))
    return pd.DataFrame(rows)


def _centred_or_none(X: np.ndarray, tolerance: float = 1e-6) -> np.ndarray | None:
    """``X`` with its column means removed, or None when nothing is left: every example has (up to
    rounding, ``tolerance`` of the uncentred norm) the same representation, e.g. a decoder's
    embedding output at a last token that is always the same special token. CKA is undefined there.

    Centring first changes no CKA (the centred and U-centred Grams ignore a constant shift of all
    rows, also on every leave-one-out subset) but keeps a large common offset from cancelling
    catastrophically inside the closed-form sums.
    """
    X = np.asarray(X, dtype=np.float64)
    centred = X - X.mean(axis=0, keepdims=True)
    if np.linalg.norm(centred) <= tolerance * max(np.linalg.norm(X), np.finfo(float).tiny):
        return None
    return centred
