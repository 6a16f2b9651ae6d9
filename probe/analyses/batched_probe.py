"""Batched probes in torch: many logistic-regression probes fitted at once, and an MLP probe.

A plain probing loop fits one probe per (model, layer, property); with scikit-learn that is one
L-BFGS run after another. Here every probe is a slice of one batched L-BFGS run: the
objective is a sum of independent problems, so each keeps its own curvature history, step
size and stopping test, while the linear algebra (one ``bmm`` per evaluation) is shared.
Probes that share a design matrix (the properties of one layer, the folds and C values of a
cross-validation) share it in memory too: their weights are stacked along the output axis.
On a small CPU this is about as fast as single-threaded scikit-learn, and much faster than
scikit-learn with its default BLAS threads when the cores are busy; the gains are larger for
CV grids and on a GPU (benchmarks/RESULTS_probes.md).

The objective of each problem is scikit-learn's ``LogisticRegression`` (lbfgs, l2) on
``StandardScaler`` features: ``Σ_i w_i CE_i + ||W||² / (2C)``, intercept unpenalised, a single
weight vector for binary problems and K vectors (softmax) for K > 2 classes. Probe accuracy
is shown next to the majority-class baseline, as recommended by Belinkov (2022, "Probing
Classifiers"); choose C by cross-validation on the training split only, and compare with a
control task (Hewitt & Liang 2019) before reading much into a high accuracy.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

__all__ = [
    "BatchedLogisticProbe",
    "MLPProbe",
    "ProbeOutcome",
    "choose_C_by_cv",
    "fit_probes_batched",
]


# --------------------------------------------------------------------------------------------
# devices, dtypes and label encoding


def _device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` / "auto": float32. Measured on minilm activations (benchmarks/RESULTS_probes.md):
    float32 reaches the float64 optimum to ~2e-6 relative with identical test predictions, and is
    ~1.7x faster on the CPU here. Standardisation statistics are always computed in float64."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


@contextmanager
def _cpu_threads(device: torch.device, n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads on the CPU, restoring the setting afterwards.

    The solver's kernels are small (a few MFLOP): extra intra-op threads gain little, and when
    the cores are shared with other processes every op waits for its slowest thread — measured
    3-30x slower with 2 threads than with 1 on a loaded 2-core machine.
    """
    if n is None or device.type != "cpu" or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _as_tensor(X, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        return X.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(X), dtype=dtype, device=device)


def _encode_labels(y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-problem class lists from the examples with positive weight.

    ``y`` and ``weight`` are ``[B, n]``; returns ``classes [B, K_max]`` (padded with the last
    class), ``n_classes [B]`` and the encoded labels ``[B, n]`` (0 where a label is not a
    training class; such examples must have weight 0).
    """
    B = y.shape[0]
    lists = [np.unique(y[b][weight[b] > 0]) for b in range(B)]
    n_classes = np.array([len(c) for c in lists], dtype=np.int64)
    if (n_classes == 0).any():
        raise ValueError("a problem has no training examples (all sample weights are zero)")
    K = int(n_classes.max())
    classes = np.stack([np.concatenate([c, np.repeat(c[-1:], K - len(c))]) for c in lists])
    enc = np.zeros(y.shape, dtype=np.int64)
    for b, c in enumerate(lists):
        pos = np.clip(np.searchsorted(c, y[b]), 0, len(c) - 1)
        enc[b] = np.where(c[pos] == y[b], pos, 0)
    return classes, n_classes, enc


# --------------------------------------------------------------------------------------------
# the batched solver
#
# Layout: G design matrices X [G, n, d]; S problems per design (same examples, own labels,
# sample weights, C and standardisation); K class rows. Parameters theta [G, S, K, d+1]
# (last column: intercept) live in standardised feature space, like scikit-learn's after a
# StandardScaler; the scaling is folded into the weights so X is never copied per problem:
#   logits = W ((x - mu) / sd) + b = (W / sd) x + (b - W (mu / sd)).
# Logits are laid out [G, S, K, n] (examples innermost), so the softmax over K vectorises.

_MASKED = -1e4  # logit of a padded class: exp() underflows to exactly 0 in float32 and float64


class _Problems:
    """Data of G × S logistic-regression problems and their loss and gradient."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, w: torch.Tensor, n_classes: torch.Tensor, C: torch.Tensor):
        G, n, d = X.shape
        S = Y.shape[1]
        K = int(n_classes.max())
        # binary problems keep one weight vector (class 1; class 0's logit is 0), like scikit-learn
        self.k0 = 1 if K == 2 else 0
        self.G, self.S, self.n, self.d, self.K, self.Kp = G, S, n, d, K, K - self.k0
        dt = X.dtype
        self.sw = w.sum(-1).clamp_min(torch.finfo(dt).tiny)  # [G, S]
        wn = w / self.sw[..., None]  # [G, S, n], sums to 1
        self.wn = wn.unsqueeze(2)  # [G, S, 1, n]
        # weighted standardisation (StandardScaler); statistics in float64, after shifting each
        # design by its mean so that E[x²] - E[x]² does not cancel (the solve sees shifted X too)
        X64, wn64 = X.double(), wn.double()
        shift = X64.mean(1, keepdim=True)  # [G, 1, d]
        X64 = X64 - shift
        self.shift = shift.to(dt)
        self.X = X64.to(dt)  # [G, n, d]
        self.Xt = self.X.transpose(1, 2).contiguous()  # [G, d, n]
        if S > 1 and bool((w == w[:, :1]).all()):  # same examples for every problem: one set of stats
            wn64 = wn64[:, :1]
        mu = torch.einsum("gsn,gnd->gsd", wn64, X64)
        var = (torch.einsum("gsn,gnd->gsd", wn64, X64 * X64) - mu * mu).clamp_min(0)
        mu, var = mu.expand(G, S, d), var.expand(G, S, d)
        # scikit-learn's constant-feature test (Chan, Golub & LeVeque bound); like StandardScaler,
        # a tiny but non-constant spread (e.g. 1e-33 in a dead unit) is still scaled to unit variance
        eps = torch.finfo(torch.float64).eps
        n_eff = (wn64 > 0).sum(-1, keepdim=True).double()
        mean_raw = mu + shift
        constant = var <= n_eff * eps * var + (n_eff * mean_raw.abs() * eps) ** 2
        sd = torch.where(constant, torch.ones_like(var), var.sqrt())
        self.mu, self.sd = mean_raw.to(dt), sd.to(dt)
        self.mu_sd = (mu / sd).to(dt).unsqueeze(2)  # [G, S, 1, d], relative to the shift
        self.inv_sd = (1 / sd).to(dt).unsqueeze(2)  # [G, S, 1, d]
        k = torch.arange(K, device=X.device)
        nc = n_classes[..., None]
        self.valid = k < nc  # [G, S, K]
        self.free = self.valid & (nc > 1) & ~((nc == 2) & (k == 0))  # binary: one weight vector
        self.logit_mask = torch.where(self.valid, 0.0, _MASKED).to(dt).unsqueeze(-1)  # [G, S, K, 1]
        self.onehot = torch.nn.functional.one_hot(Y, K).to(dt).transpose(2, 3).contiguous()  # [G, S, K, n]
        self.free_theta = self.free[..., self.k0:].unsqueeze(-1).to(dt)  # [G, S, Kp, 1]
        self.reg = (1 / (C * self.sw)).to(dt)  # [G, S]: l2 strength of the scaled objective

    def logits(self, theta: torch.Tensor, Xt: torch.Tensor | None = None) -> torch.Tensor:
        """Masked logits ``[G, S, K, m]``; ``Xt`` is ``[G, d, m]``, shifted (default: training X).

        ``theta`` is ``[G, S, Kp, d + 1]``: the free class rows only (Kp = 1 for binary problems).
        """
        Xt = self.Xt if Xt is None else Xt
        G, S, Kp, d = self.G, self.S, self.Kp, self.d
        W, b = theta[..., :d], theta[..., d]
        c = b - (W * self.mu_sd).sum(-1)  # [G, S, Kp]
        z = torch.bmm((W * self.inv_sd).reshape(G, S * Kp, d), Xt).view(G, S, Kp, -1) + c.unsqueeze(-1)
        if self.k0:
            z = torch.cat([torch.zeros_like(z[:, :, :1]), z], 2)
        return z + self.logit_mask

    def new_logits(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Logits ``[G, S, K, m]`` of raw features ``X [G, m, d]``."""
        return self.logits(theta, (X - self.shift).transpose(1, 2))

    def loss_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled objective ``[G, S]`` (mean CE + ||W||²/(2 C n)) and its gradient (masked)."""
        G, S, Kp, d = self.G, self.S, self.Kp, self.d
        z = self.logits(theta)
        z = z - z.amax(2, keepdim=True)
        e = z.exp()
        tot = e.sum(2, keepdim=True)
        # weighted CE: Σ_i w_i (log Σ_k e_ik - z_i,y_i)
        ce = (self.wn * (tot.log() - (self.onehot * z).sum(2, keepdim=True))).sum((-2, -1))
        W = theta[..., :d]
        f = ce + 0.5 * self.reg * (W * W).sum((-2, -1))
        E = (self.wn * (e / tot - self.onehot))[:, :, self.k0:]  # [G, S, Kp, n]
        dVt = torch.bmm(E.reshape(G, S * Kp, self.n), self.X).view(G, S, Kp, d)
        dc = E.sum(-1)  # [G, S, K]
        dW = dVt * self.inv_sd - dc.unsqueeze(-1) * self.mu_sd + self.reg[..., None, None] * W
        g = torch.cat([dW, dc.unsqueeze(-1)], dim=-1) * self.free_theta
        return f, g


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vecdot(a, b)


def _lbfgs_direction(g: torch.Tensor, S: torch.Tensor, Y: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``-H g`` from the compact L-BFGS form (Byrd, Nocedal & Schnabel 1994), batched.

    ``S``, ``Y`` ``[B, m, P]`` hold the curvature pairs oldest first; all-zero rows are empty
    slots (their ``R`` diagonal is set to 1, which makes them drop out). With ``H0 = γI``:
    ``H g = γ g + S p - γ Y u``, ``u = R⁻¹ Sᵀg``, ``p = R⁻ᵀ((D + γ YᵀY) u - γ Yᵀg)``, where
    ``R`` is the upper triangle of ``SᵀY`` and ``D`` its diagonal. A few ``bmm`` and two small
    triangular solves replace the 4m vector operations of the two-loop recursion.
    """
    SY = torch.cat([S, Y], 1)  # [B, 2m, P]
    m = S.shape[1]
    ab = torch.bmm(SY, g.unsqueeze(-1))  # [B, 2m, 1]: Sᵀg, Yᵀg
    a, b = ab[:, :m], ab[:, m:]
    gram = torch.bmm(SY, Y.transpose(1, 2))  # [B, 2m, m]: SᵀY over YᵀY
    StY, YtY = gram[:, :m], gram[:, m:]
    D = torch.diagonal(StY, dim1=1, dim2=2)  # [B, m]
    R = torch.triu(StY) + torch.diag_embed((D <= 0).to(g.dtype))
    u = torch.linalg.solve_triangular(R, a, upper=True)
    gam = gamma[:, None, None]
    v = D.unsqueeze(-1) * u + gam * (torch.bmm(YtY, u) - b)
    p = torch.linalg.solve_triangular(R.transpose(1, 2), v, upper=False)
    corr = torch.bmm(SY.transpose(1, 2), torch.cat([p, -gam * u], 1)).squeeze(-1)  # S p - γ Y u
    return -(gamma[:, None] * g + corr)


def _batched_lbfgs(
    prob: _Problems, max_iter: int, tol: float, history: int = 10, max_backtrack: int = 30,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Independent L-BFGS runs for all problems, stepping together.

    Each problem has its own curvature history, step size and stopping test (max |gradient|
    <= tol, as scipy's ``pgtol`` that scikit-learn passes its ``tol`` to; a problem whose
    line search finds no decrease at the dtype's resolution stops too, and is reported as
    not converged unless its gradient passes). The objective is strongly convex (l2), so
    curvature pairs have s·y > 0 and a backtracking line search suffices. Returns theta,
    objective, iterations and a converged flag, per problem.
    """
    G, S_, d, K = prob.G, prob.S, prob.d, prob.Kp
    B, P = G * S_, (d + 1) * K
    dt, dev = prob.X.dtype, prob.X.device
    theta = torch.zeros(G, S_, K, d + 1, dtype=dt, device=dev)
    f, g = prob.loss_grad(theta)
    f, g, x = f.reshape(B), g.reshape(B, P), theta.reshape(B, P)
    S = torch.zeros(B, 0, P, dtype=dt, device=dev)
    Y = torch.zeros(B, 0, P, dtype=dt, device=dev)
    gamma = torch.ones(B, dtype=dt, device=dev)
    has_hist = torch.zeros(B, dtype=torch.bool, device=dev)
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    done = g.abs().amax(-1) <= tol
    converged = done.clone()
    f_eps = 100 * torch.finfo(dt).eps
    tiny = torch.finfo(dt).tiny
    for _ in range(max_iter):
        if bool(done.all()):
            break
        active = ~done
        r = _lbfgs_direction(g, S, Y, gamma) if S.shape[1] else -g
        gd = _dot(g, r)
        bad = gd >= 0  # not a descent direction: restart from steepest descent
        if bool((bad & active).any()):
            r = torch.where(bad[:, None], -g, r)
            gd = torch.where(bad, -_dot(g, g), gd)
        # first step of a problem without history: scipy's min(1, 1/||g||)
        t = torch.where(has_hist & ~bad, torch.ones_like(f), (1 / g.norm(dim=-1)).clamp(max=1.0))
        t = t * active
        need = active.clone()
        f_new, g_new = f, g
        for _ in range(max_backtrack):
            x_try = x + t[:, None] * r
            f_try, g_try = prob.loss_grad(x_try.view(G, S_, K, d + 1))
            f_try, g_try = f_try.reshape(B), g_try.reshape(B, P)
            # Armijo with a strict decrease, or - near the optimum, where in float32 the decrease
            # falls below f's resolution - Hager & Zhang's (2005) approximate Wolfe conditions
            gtd = _dot(g_try, r)
            armijo = (f_try <= f + 1e-4 * t * gd) & (f_try < f)
            approx = (f_try <= f + f_eps * f.abs()) & (gtd >= 0.9 * gd) & (gtd <= -0.8 * gd)
            ok = need & (armijo | approx) & torch.isfinite(f_try)
            f_new = torch.where(ok, f_try, f_new)
            g_new = torch.where(ok[:, None], g_try, g_new)
            need = need & ~ok
            if not bool(need.any()):
                break
            t = torch.where(need, t * 0.5, t)
        accepted = active & ~need
        stalled = active & need  # no decrease found: as far as this precision goes
        s_vec = (t * accepted)[:, None] * r
        y_vec = g_new - g  # zero where not accepted
        sy = _dot(s_vec, y_vec)
        yy = _dot(y_vec, y_vec)
        use = accepted & (sy > 1e-10 * yy.sqrt() * s_vec.norm(dim=-1))
        um = use.to(dt)[:, None, None]
        S = torch.cat([S[:, -(history - 1):] if history > 1 else S[:, :0], s_vec[:, None] * um], 1)
        Y = torch.cat([Y[:, -(history - 1):] if history > 1 else Y[:, :0], y_vec[:, None] * um], 1)
        gamma = torch.where(use, sy / yy.clamp_min(tiny), gamma)
        has_hist = has_hist | use
        x = x + s_vec
        f, g = f_new, g_new
        n_iter = n_iter + accepted.long()
        gconv = accepted & (g.abs().amax(-1) <= tol)
        converged = converged | gconv
        done = done | gconv | stalled
    return x.view(G, S_, K, d + 1), f.view(G, S_), n_iter.view(G, S_), converged.view(G, S_)


class _Fit:
    """Fitted G × S problems, solved in groups of equal class count (``_solve``)."""

    def __init__(self, G: int, S: int, d: int, K: int, classes: np.ndarray, n_classes: np.ndarray, dev, dt):
        self.G, self.S, self.d, self.K = G, S, d, K
        self.classes, self.n_classes = classes, n_classes  # [G, S, K], [G, S]
        self.parts: list[tuple[torch.Tensor, torch.Tensor, _Problems, torch.Tensor]] = []
        self.theta = torch.zeros(G, S, K, d + 1, dtype=dt, device=dev)  # all class rows
        self.mu = torch.zeros(G, S, d, dtype=dt, device=dev)
        self.sd = torch.ones(G, S, d, dtype=dt, device=dev)
        self.f = torch.zeros(G, S, dtype=dt, device=dev)
        self.n_iter = torch.zeros(G, S, dtype=torch.long, device=dev)
        self.converged = torch.zeros(G, S, dtype=torch.bool, device=dev)

    def add(self, gi: torch.Tensor, si: torch.Tensor, prob: _Problems, theta: torch.Tensor, f, n_iter, conv) -> None:
        """Store the solution of the problems ``[gi] × [si]``."""
        self.parts.append((gi, si, prob, theta))
        ix = (gi[:, None], si[None, :])
        self.theta[ix + (slice(prob.k0, prob.K),)] = theta
        self.mu[ix], self.sd[ix] = prob.mu, prob.sd
        self.f[ix], self.n_iter[ix], self.converged[ix] = f, n_iter, conv

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """Masked logits ``[G, S, K, m]`` of raw features ``X [G, m, d]``."""
        out = torch.full((self.G, self.S, self.K, X.shape[1]), _MASKED, dtype=X.dtype, device=X.device)
        for gi, si, prob, theta in self.parts:
            out[gi[:, None], si[None, :], :prob.K] = prob.new_logits(theta, X[gi])
        return out


def _solve(
    X: torch.Tensor, y: np.ndarray, weight: np.ndarray, C: np.ndarray, max_iter: int, tol: float,
    num_threads: int | None = None,
) -> _Fit:
    """Fit G × S problems; ``X [G, n, d]`` tensor, ``y``/``weight`` ``[G, S, n]``, ``C [G, S]``.

    Problems are solved in groups by their class count (over G), so binary problems carry one
    weight vector and a 2-class probe does not pay for a 5-class one's rows or iterations.
    """
    G, S, n = y.shape
    classes, n_classes, enc = _encode_labels(y.reshape(G * S, n), weight.reshape(G * S, n))
    classes, n_classes = classes.reshape(G, S, -1), n_classes.reshape(G, S)
    dev, dt = X.device, X.dtype
    fit = _Fit(G, S, X.shape[2], classes.shape[-1], classes, n_classes, dev, dt)
    enc = torch.as_tensor(enc.reshape(G, S, n), device=dev)
    w = torch.as_tensor(np.array(weight, dtype=float), dtype=dt, device=dev)
    nc = torch.as_tensor(n_classes, device=dev)
    Ct = torch.as_tensor(np.array(C, dtype=float), dtype=dt, device=dev)
    # group along S (problems sharing a design), or along G when each problem has its own
    along_g = S == 1 and G > 1
    k_of = n_classes[:, 0] if along_g else n_classes.max(0)
    every = torch.arange(G if not along_g else S, device=dev)
    with _cpu_threads(dev, num_threads):
        for k in np.unique(k_of):
            idx = torch.as_tensor(np.flatnonzero(k_of == k), device=dev)
            gi, si = (idx, every) if along_g else (every, idx)
            ix = (gi[:, None], si[None, :])
            prob = _Problems(X[gi], enc[ix], w[ix], nc[ix], Ct[ix])
            theta, f, n_iter, conv = _batched_lbfgs(prob, max_iter, tol)
            fit.add(gi, si, prob, theta, f, n_iter, conv)
    return fit


def _predict_index(fit: _Fit, X: torch.Tensor) -> torch.Tensor:
    """Class index ``[G, S, m]`` of the rows of ``X [G, m, d]``."""
    return fit.logits(X).argmax(2)


# --------------------------------------------------------------------------------------------
# public estimator


class BatchedLogisticProbe:
    """B independent multinomial logistic-regression probes, fitted together (L-BFGS, torch).

    Equivalent to B fits of ``make_pipeline(StandardScaler(), LogisticRegression(C=C))``
    (lbfgs, l2; binary problems use one weight vector, like scikit-learn), but one batched
    solve. ``fit(X, y)`` takes ``X [B, n, d]`` and ``y [B, n]`` — or ``X [n, d]`` shared by
    all B label sets ``y [B, n]`` — and problems may have different numbers of classes.
    ``C`` may be a scalar or one value per problem. Linear probes after Belinkov (2022).

    Learned state: ``classes_`` (list of B arrays), ``n_iter_`` and ``converged_`` ``[B]``,
    ``objective_`` ``[B]`` (scaled: mean CE + ||W||²/(2·C·n)), ``coef_`` ``[B, K_max, d]`` and
    ``intercept_`` ``[B, K_max]`` in standardised space, ``mean_`` and ``scale_`` ``[B, d]``.
    """

    def __init__(
        self, C: float | Sequence[float] = 1.0, max_iter: int = 1000, tol: float = 1e-5,
        device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
        num_threads: int | None = None,
    ):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.num_threads = num_threads

    def _X(self, X) -> torch.Tensor:
        X = _as_tensor(X, self.device_, self.dtype_)
        if X.dim() == 2:
            return X.unsqueeze(0)
        if X.dim() != 3:
            raise ValueError(f"X must be [B, n, d] or [n, d]; got shape {tuple(X.shape)}")
        return X

    def fit(self, X, y, sample_weight=None) -> "BatchedLogisticProbe":
        """Fit all problems; ``sample_weight [B, n]`` (optional) weights each example's loss."""
        self.device_ = _device(self.device)
        self.dtype_ = _dtype(self.dtype, self.device_)
        Xt = self._X(X)
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        if y.ndim == 1:
            y = y[None]
        B, n = y.shape
        if Xt.shape[1] != n or Xt.shape[0] not in (1, B):
            raise ValueError(f"X {tuple(Xt.shape)} does not match y {y.shape}")
        w = np.ones((B, n)) if sample_weight is None else np.broadcast_to(np.asarray(sample_weight, float), (B, n))
        C = np.array(np.broadcast_to(np.asarray(self.C, dtype=float), (B,)))
        if (C <= 0).any():
            raise ValueError(f"C must be positive; got {self.C!r}")
        self.shared_X_ = Xt.shape[0] == 1 and B > 1
        G, S = (1, B) if self.shared_X_ else (B, 1)
        fit = _solve(Xt, y.reshape(G, S, n), w.reshape(G, S, n), C.reshape(G, S), self.max_iter, self.tol,
                     self.num_threads)
        self._fit = fit
        d = Xt.shape[2]
        nc = fit.n_classes.reshape(B)
        self.n_classes_ = nc
        self._classes = fit.classes.reshape(B, -1)
        self.classes_ = [self._classes[b, : nc[b]] for b in range(B)]
        self.n_iter_ = fit.n_iter.reshape(B).cpu().numpy()
        self.converged_ = fit.converged.reshape(B).cpu().numpy()
        self.objective_ = fit.f.reshape(B).cpu().numpy()
        th = fit.theta.reshape(B, -1, d + 1).cpu().numpy()
        self.coef_ = th[:, :, :d]
        self.intercept_ = th[:, :, d]
        self.mean_ = fit.mu.reshape(B, d).cpu().numpy()
        self.scale_ = fit.sd.reshape(B, d).cpu().numpy()
        self.n_features_in_ = d
        return self

    def _logits(self, X) -> torch.Tensor:
        Xt = self._X(X)
        G = self._fit.G
        if Xt.shape[0] != G:
            if Xt.shape[0] == 1:
                Xt = Xt.expand(G, -1, -1)
            else:
                raise ValueError(f"X has {Xt.shape[0]} problems; the probe was fitted on {G} design matrices")
        with _cpu_threads(self.device_, self.num_threads):
            z = self._fit.logits(Xt)  # [G, S, K, m]
        return z.transpose(2, 3).reshape(-1, Xt.shape[1], z.shape[2])  # [B, m, K]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[B, m, K_max]``; padded classes get 0."""
        return torch.softmax(self._logits(X), -1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Predicted labels ``[B, m]`` (in each problem's own label values)."""
        idx = self._logits(X).argmax(-1).cpu().numpy()
        return np.take_along_axis(self._classes, idx, axis=1)

    def score(self, X, y) -> np.ndarray:
        """Accuracy per problem ``[B]``."""
        y = np.asarray(y)
        return (self.predict(X) == (y if y.ndim == 2 else y[None])).mean(-1)


# --------------------------------------------------------------------------------------------
# cross-validated C


def _stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id ``[n]`` per example; each class dealt round-robin over folds after shuffling."""
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return fold


def _cv_C(
    X: torch.Tensor, Y: np.ndarray, grid: Sequence[float], folds: int, seed: int, max_iter: int, tol: float,
    num_threads: int | None = None, scoring: str = "log_loss",
) -> np.ndarray:
    """Best C ``[G, S]`` for problems ``Y [G, S, n]`` on designs ``X [G, n, d]``.

    All G × S × len(grid) × folds fits are one batched solve sharing each design matrix;
    each fold standardises with its own training part. Ties go to the smaller C.
    """
    if scoring not in ("log_loss", "accuracy"):
        raise ValueError(f"scoring must be 'log_loss' or 'accuracy'; got {scoring!r}")
    G, S, n = Y.shape
    grid = np.asarray(grid, dtype=float)
    if grid.ndim != 1 or len(grid) == 0 or (grid <= 0).any():
        raise ValueError(f"grid must be a non-empty list of positive C values; got {grid.tolist()}")
    nG = len(grid)
    rng = np.random.default_rng([seed, 11])
    fold = np.stack([np.stack([_stratified_folds(Y[g, s], folds, rng) for s in range(S)]) for g in range(G)])
    # sub-problem axis: (s, c, f)
    Ys = np.repeat(Y, nG * folds, axis=1)  # [G, S*nG*F, n]
    f_id = np.tile(np.arange(folds), S * nG)
    held = fold.repeat(nG * folds, axis=1) == f_id[None, :, None]
    Cs = np.tile(np.repeat(grid, folds), S)[None].repeat(G, 0)
    out = _solve(X, Ys, (~held).astype(float), Cs, max_iter, tol, num_threads)
    with _cpu_threads(X.device, num_threads):
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
    total = (score * held).sum(-1).reshape(G, S, nG, folds).sum(-1)  # summed over held-out examples
    order = np.argsort(grid, kind="stable")
    best = np.argmax(total[..., order], axis=-1)  # first maximum: the smallest C
    return grid[order][best]


def choose_C_by_cv(
    X, y, grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0), folds: int = 3, seed: int = 0,
    scoring: str = "log_loss", max_iter: int = 1000, tol: float = 1e-4, device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None, num_threads: int | None = None,
) -> np.ndarray:
    """Regularisation strength per problem by stratified k-fold cross-validation.

    ``X [B, n, d]`` (or ``[n, d]`` shared by all problems) and ``y [B, n]`` (or ``[n]``) must be
    the *training* split only; every (problem, C, fold) fit runs in one batched solve, each fold
    standardised on its own training part. ``scoring``: held-out ``"log_loss"`` (default; smoother
    than accuracy on small folds) or ``"accuracy"``. Returns ``C [B]``; ties go to the smallest C
    (the most restricted probe, cf. Hewitt & Liang 2019). Folds are drawn from ``seed``.
    """
    dev = _device(device)
    Xt = _as_tensor(X, dev, _dtype(dtype, dev))
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[None]
    if Xt.dim() == 2:
        Xt = Xt.unsqueeze(0)
    if Xt.shape[1] != y.shape[1] or Xt.shape[0] not in (1, y.shape[0]):
        raise ValueError(f"X {tuple(Xt.shape)} does not match y {y.shape}")
    if Xt.shape[0] == 1:
        return _cv_C(Xt, y[None], grid, folds, seed, max_iter, tol, num_threads, scoring)[0]
    return _cv_C(Xt, y[:, None], grid, folds, seed, max_iter, tol, num_threads, scoring)[:, 0]


# --------------------------------------------------------------------------------------------
# convenience: every (model, layer, property)


class ProbeOutcome(NamedTuple):
    """Per-example correctness of a probe and of the majority baseline on the test split."""

    correct: np.ndarray
    baseline: np.ndarray
    C: float
    converged: bool


def fit_probes_batched(
    activations: dict[str, np.ndarray], properties: dict[str, np.ndarray],
    train_idx: np.ndarray, test_idx: np.ndarray, C: float = 1.0, max_iter: int = 1000,
    tol: float = 1e-5, cv_grid: Sequence[float] | None = None, cv_folds: int = 3, cv_scoring: str = "log_loss",
    seed: int = 0, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
    max_designs_per_batch: int = 64, num_threads: int | None = None, C_from: dict[str, str] | None = None,
) -> dict[tuple[str, int, str], ProbeOutcome]:
    """Probe every (model, layer, property) in a few batched solves; same semantics as
    ``probe_accuracy`` in :mod:`probe.analyses.probing` (Belinkov 2022).

    ``activations`` maps a model to ``[L, n, d]``; ``properties`` maps a name to ``[n]``
    labels. Layers of equal width are batched together (at most ``max_designs_per_batch``
    layers per solve); the properties of one layer share its design matrix. With
    ``cv_grid``, C is chosen per probe by ``cv_folds``-fold CV on ``train_idx`` only (see
    :func:`choose_C_by_cv`). ``C_from`` maps a property to another whose cross-validated C it
    reuses on the same layer: a control task must use the very probe of its property
    (Hewitt & Liang 2019), and skipping its own CV halves the work.
    Returns ``{(model, layer, property): ProbeOutcome(correct, baseline, C, converged)}``
    with per-example 0/1 floats on ``test_idx``.
    """
    dev = _device(device)
    dt = _dtype(dtype, dev)
    train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
    names = list(properties)
    Y = np.stack([np.asarray(properties[p]) for p in names])  # [S, n]
    Ytr, Yte = Y[:, train_idx], Y[:, test_idx]
    baseline = {}
    for p, ytr, yte in zip(names, Ytr, Yte):
        values, counts = np.unique(ytr, return_counts=True)
        baseline[p] = (yte == values[np.argmax(counts)]).astype(float)
    designs = [(m, l) for m, A in activations.items() for l in range(A.shape[0])]
    by_width: dict[int, list[tuple[str, int]]] = {}
    for m, l in designs:
        by_width.setdefault(activations[m].shape[2], []).append((m, l))
    results: dict[tuple[str, int, str], ProbeOutcome] = {}
    S, n = Ytr.shape
    for group in by_width.values():
        for start in range(0, len(group), max_designs_per_batch):
            chunk = group[start:start + max_designs_per_batch]
            G = len(chunk)
            Xtr = _as_tensor(np.stack([np.asarray(activations[m][l])[train_idx] for m, l in chunk]), dev, dt)
            Xte = _as_tensor(np.stack([np.asarray(activations[m][l])[test_idx] for m, l in chunk]), dev, dt)
            Yg = np.broadcast_to(Ytr, (G, S, n))
            if cv_grid is not None:
                C_from = C_from or {}
                own = [si for si, p in enumerate(names) if p not in C_from]
                Cg = np.empty((G, S))
                Cg[:, own] = _cv_C(Xtr, np.ascontiguousarray(Yg[:, own]), cv_grid, cv_folds, seed, max_iter,
                                   max(tol, 1e-4), num_threads, cv_scoring)
                for si, p in enumerate(names):
                    if p in C_from:
                        Cg[:, si] = Cg[:, names.index(C_from[p])]
            else:
                Cg = np.full((G, S), float(C))
            out = _solve(Xtr, Yg, np.ones((G, S, n)), Cg, max_iter, tol, num_threads)
            with _cpu_threads(dev, num_threads):
                pred = _predict_index(out, Xte).cpu().numpy()
            pred = np.take_along_axis(out.classes, pred, axis=2)
            conv = out.converged.cpu().numpy()
            for gi, (m, l) in enumerate(chunk):
                for si, p in enumerate(names):
                    results[(m, l, p)] = ProbeOutcome(
                        (pred[gi, si] == Yte[si]).astype(float), baseline[p], float(Cg[gi, si]), bool(conv[gi, si]))
    return {(m, l, p): results[(m, l, p)] for m, l in designs for p in names}


# --------------------------------------------------------------------------------------------
# MLP probe


class MLPProbe:
    """A one-hidden-layer ReLU probe on standardised features (full-batch Adam, fixed epochs).

    More expressive than a linear probe, so compare it with a control task (Hewitt & Liang
    2019): its accuracy alone says little about what the representation encodes. Weight
    decay ``alpha`` is l2 on the weights (not biases), as in scikit-learn's MLPClassifier.
    Initialisation is drawn from ``seed`` (a private ``torch.Generator``; no global seeding).
    """

    def __init__(
        self, hidden: int = 256, alpha: float = 1e-3, lr: float = 1e-2, epochs: int = 300,
        seed: int = 0, device: str | torch.device = "auto", dtype: str | torch.dtype | None = "float32",
        num_threads: int | None = None,
    ):
        self.hidden = hidden
        self.alpha = alpha
        self.lr = lr
        self.epochs = epochs
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.num_threads = num_threads

    def fit(self, X, y) -> "MLPProbe":
        """Fit on ``X [n, d]``, labels ``y [n]``."""
        self.device_ = dev = _device(self.device)
        self.dtype_ = dt = _dtype(self.dtype, dev)
        Xt = _as_tensor(X, dev, dt)
        y = np.asarray(y)
        self.classes_, enc = np.unique(y, return_inverse=True)
        yt = torch.as_tensor(enc, device=dev)
        n, d = Xt.shape
        K = len(self.classes_)
        self.mean_ = Xt.mean(0)
        sd = Xt.std(0, unbiased=False)
        self.scale_ = torch.where(sd <= 1e-7 * (self.mean_.abs() + 1), torch.ones_like(sd), sd)
        Z = (Xt - self.mean_) / self.scale_
        gen = torch.Generator(device="cpu").manual_seed(int(self.seed))

        def _uniform(*shape, fan_in):  # nn.Linear's default init
            bound = 1 / np.sqrt(fan_in)
            return ((torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound).to(dev, dt)

        params = [_uniform(d, self.hidden, fan_in=d), _uniform(self.hidden, fan_in=d),
                  _uniform(self.hidden, K, fan_in=self.hidden), _uniform(K, fan_in=self.hidden)]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=self.lr)
        with _cpu_threads(dev, self.num_threads):
            for _ in range(self.epochs):
                opt.zero_grad()
                W1, b1, W2, b2 = params
                out = torch.relu(Z @ W1 + b1) @ W2 + b2
                loss = torch.nn.functional.cross_entropy(out, yt)
                loss = loss + 0.5 * self.alpha / n * ((W1 * W1).sum() + (W2 * W2).sum())
                loss.backward()
                opt.step()
        self.params_ = [p.detach() for p in params]
        self.loss_ = float(loss.detach())
        return self

    def _logits(self, X) -> torch.Tensor:
        Z = (_as_tensor(X, self.device_, self.dtype_) - self.mean_) / self.scale_
        W1, b1, W2, b2 = self.params_
        return torch.relu(Z @ W1 + b1) @ W2 + b2

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[m, K]``."""
        return torch.softmax(self._logits(X), -1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Predicted labels ``[m]``."""
        return self.classes_[self._logits(X).argmax(-1).cpu().numpy()]

    def score(self, X, y) -> float:
        """Accuracy."""
        return float((self.predict(X) == np.asarray(y)).mean())
