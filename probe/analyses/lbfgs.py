"""The batched L-BFGS solver behind :class:`probe.analyses.logistic_probe.LogisticProbe`.

Many L2 logistic-regression problems are solved as one: the objective is a sum of independent
problems, so each keeps its own curvature history, step size and stopping test, while the
linear algebra (one ``bmm`` per evaluation) is shared. Problems that share a design matrix
(the properties of one layer, the folds and C values of a cross-validation) share it in memory
too: their weights are stacked along the output axis.

The objective of each problem is scikit-learn's ``LogisticRegression`` (lbfgs, l2) on
``StandardScaler`` features: ``Σ_i w_i CE_i + ||W||² / (2C)``, intercept unpenalised, a single
weight vector for binary problems and K vectors (softmax) for K > 2 classes; ``w_i`` is the
sample weight times scikit-learn's ``class_weight="balanced"`` factor when asked for.

Layout: G design matrices X ``[G, n, d]``; S problems per design (same examples, own labels,
sample weights, C and standardisation); K class rows. Parameters theta ``[G, S, K, d+1]``
(last column: intercept) live in standardised feature space, like scikit-learn's after a
StandardScaler; the scaling is folded into the weights so X is never copied per problem:
``logits = W ((x - mu) / sd) + b = (W / sd) x + (b - W (mu / sd))``. Logits are laid out
``[G, S, K, n]`` (examples innermost), so the softmax over K vectorises.
"""

from __future__ import annotations

import numpy as np
import torch

from probe.analyses.tensors import cpu_threads

__all__ = ["MASKED", "BatchedFit", "balanced_weights", "encode_labels", "solve"]

MASKED = -1e4  # logit of a padded class: exp() underflows to exactly 0 in float32 and float64


def encode_labels(y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def balanced_weights(enc: np.ndarray, weight: np.ndarray, n_classes: np.ndarray) -> np.ndarray:
    """scikit-learn's ``class_weight="balanced"`` factor of every example ``[B, n]``.

    ``n / (K · count(class))`` with counts over the examples of positive weight (what
    scikit-learn sees when fitted on those rows; like scikit-learn, sample weights do not
    enter the counts).
    """
    present = weight > 0
    K = int(n_classes.max())
    counts = np.stack([((enc == k) & present).sum(1) for k in range(K)], 1)  # [B, K]
    factor = present.sum(1, keepdims=True) / (n_classes[:, None] * np.maximum(counts, 1))
    return np.take_along_axis(factor, enc, 1)


class _Problems:
    """Data of G × S logistic-regression problems and their loss and gradient.

    ``w`` ``[G, S, n]`` weights the standardisation statistics (and the loss); ``loss_w``, when
    given, replaces it in the loss (sample weight × class weight).
    """

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, w: torch.Tensor, n_classes: torch.Tensor, C: torch.Tensor,
                 loss_w: torch.Tensor | None = None):
        G, n, d = X.shape
        S = Y.shape[1]
        K = int(n_classes.max())
        # binary problems keep one weight vector (class 1; class 0's logit is 0), like scikit-learn
        self.k0 = 1 if K == 2 else 0
        self.G, self.S, self.n, self.d, self.K, self.Kp = G, S, n, d, K, K - self.k0
        dt = X.dtype
        tiny = torch.finfo(dt).tiny
        lw = w if loss_w is None else loss_w
        self.sw = lw.sum(-1).clamp_min(tiny)  # [G, S]
        self.wn = (lw / self.sw[..., None]).unsqueeze(2)  # [G, S, 1, n], sums to 1
        self._standardise(X, w / w.sum(-1, keepdim=True).clamp_min(tiny))
        k = torch.arange(K, device=X.device)
        nc = n_classes[..., None]
        self.valid = k < nc  # [G, S, K]
        self.free = self.valid & (nc > 1) & ~((nc == 2) & (k == 0))  # binary: one weight vector
        self.logit_mask = torch.where(self.valid, 0.0, MASKED).to(dt).unsqueeze(-1)  # [G, S, K, 1]
        self.onehot = torch.nn.functional.one_hot(Y, K).to(dt).transpose(2, 3).contiguous()  # [G, S, K, n]
        self.free_theta = self.free[..., self.k0:].unsqueeze(-1).to(dt)  # [G, S, Kp, 1]
        self.reg = (1 / (C * self.sw)).to(dt)  # [G, S]: l2 strength of the scaled objective

    def _standardise(self, X: torch.Tensor, wn: torch.Tensor) -> None:
        """Weighted standardisation (StandardScaler); statistics in float64, after shifting each
        design by its mean so that E[x²] - E[x]² does not cancel (the solve sees shifted X too)."""
        G, S, d, dt = self.G, self.S, self.d, X.dtype
        X64, wn64 = X.double(), wn.double()
        shift = X64.mean(1, keepdim=True)  # [G, 1, d]
        X64 = X64 - shift
        self.shift = shift.to(dt)
        self.X = X64.to(dt)  # [G, n, d]
        self.Xt = self.X.transpose(1, 2).contiguous()  # [G, d, n]
        if S > 1 and bool((wn64 == wn64[:, :1]).all()):  # same examples for every problem: one set of stats
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
        """Scaled objective ``[G, S]`` (weighted mean CE + ||W||²/(2 C Σw)) and its gradient (masked)."""
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


def _line_search(prob: _Problems, x, f, g, r, gd, t, need, max_backtrack: int):
    """Backtracking from step ``t`` along ``r`` for the problems in ``need``.

    Armijo with a strict decrease, or - near the optimum, where in float32 the decrease falls
    below f's resolution - Hager & Zhang's (2005) approximate Wolfe conditions. Returns the
    step, the problems still without an acceptable step, and the new objective and gradient
    (unchanged where no step was accepted).
    """
    G, S_, K, d1 = prob.G, prob.S, prob.Kp, prob.d + 1
    B, P = x.shape
    f_eps = 100 * torch.finfo(x.dtype).eps
    f_new, g_new = f, g
    for _ in range(max_backtrack):
        x_try = x + t[:, None] * r
        f_try, g_try = prob.loss_grad(x_try.view(G, S_, K, d1))
        f_try, g_try = f_try.reshape(B), g_try.reshape(B, P)
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
    return t, need, f_new, g_new


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
    f, g = prob.loss_grad(torch.zeros(G, S_, K, d + 1, dtype=dt, device=dev))
    f, g, x = f.reshape(B), g.reshape(B, P), torch.zeros(B, P, dtype=dt, device=dev)
    S = torch.zeros(B, 0, P, dtype=dt, device=dev)
    Y = torch.zeros(B, 0, P, dtype=dt, device=dev)
    gamma = torch.ones(B, dtype=dt, device=dev)
    has_hist = torch.zeros(B, dtype=torch.bool, device=dev)
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    done = g.abs().amax(-1) <= tol
    converged = done.clone()
    tiny = torch.finfo(dt).tiny
    keep = max(history - 1, 0)
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
        t, need, f_new, g_new = _line_search(prob, x, f, g, r, gd, t * active, active.clone(), max_backtrack)
        accepted = active & ~need
        stalled = active & need  # no decrease found: as far as this precision goes
        s_vec = (t * accepted)[:, None] * r
        y_vec = g_new - g  # zero where not accepted
        sy, yy = _dot(s_vec, y_vec), _dot(y_vec, y_vec)
        use = accepted & (sy > 1e-10 * yy.sqrt() * s_vec.norm(dim=-1))
        um = use.to(dt)[:, None, None]
        S = torch.cat([S[:, -keep:] if keep else S[:, :0], s_vec[:, None] * um], 1)
        Y = torch.cat([Y[:, -keep:] if keep else Y[:, :0], y_vec[:, None] * um], 1)
        gamma = torch.where(use, sy / yy.clamp_min(tiny), gamma)
        has_hist = has_hist | use
        x = x + s_vec
        f, g = f_new, g_new
        n_iter = n_iter + accepted.long()
        gconv = accepted & (g.abs().amax(-1) <= tol)
        converged = converged | gconv
        done = done | gconv | stalled
    return x.view(G, S_, K, d + 1), f.view(G, S_), n_iter.view(G, S_), converged.view(G, S_)


class BatchedFit:
    """Fitted G × S problems (from :func:`solve`), solved in groups of equal class count.

    ``classes [G, S, K]`` (padded), ``n_classes [G, S]``, ``theta [G, S, K, d+1]`` (every class
    row, standardised space; binary problems: row 0 is zero), ``mu``/``sd [G, S, d]``, and per
    problem the scaled objective ``f``, ``n_iter`` and ``converged`` (tensors).
    """

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
        """Masked logits ``[G, S, K, m]`` of raw features ``X [G, m, d]`` (padded classes: ``MASKED``)."""
        out = torch.full((self.G, self.S, self.K, X.shape[1]), MASKED, dtype=X.dtype, device=X.device)
        for gi, si, prob, theta in self.parts:
            out[gi[:, None], si[None, :], :prob.K] = prob.new_logits(theta, X[gi])
        return out


def solve(
    X: torch.Tensor, y: np.ndarray, weight: np.ndarray, C: np.ndarray, max_iter: int, tol: float,
    num_threads: int | None = None, class_weight: str | None = None,
) -> BatchedFit:
    """Fit G × S problems; ``X [G, n, d]`` tensor, ``y``/``weight`` ``[G, S, n]``, ``C [G, S]``.

    ``class_weight="balanced"`` multiplies each example's loss weight by scikit-learn's balanced
    class weight (:func:`balanced_weights`); the standardisation keeps ``weight``. Problems are
    solved in groups by their class count (over G), so binary problems carry one weight vector
    and a 2-class probe does not pay for a 5-class one's rows or iterations.
    """
    if class_weight not in (None, "balanced"):
        raise ValueError(f"class_weight must be None or 'balanced'; got {class_weight!r}")
    G, S, n = y.shape
    classes, n_classes, enc = encode_labels(y.reshape(G * S, n), weight.reshape(G * S, n))
    loss_w = None
    if class_weight == "balanced":
        loss_w = weight.reshape(G * S, n) * balanced_weights(enc, weight.reshape(G * S, n), n_classes)
    classes, n_classes = classes.reshape(G, S, -1), n_classes.reshape(G, S)
    dev, dt = X.device, X.dtype
    fit = BatchedFit(G, S, X.shape[2], classes.shape[-1], classes, n_classes, dev, dt)
    enc = torch.as_tensor(enc.reshape(G, S, n), device=dev)
    w = torch.as_tensor(np.array(weight, dtype=float), dtype=dt, device=dev)
    lw = None if loss_w is None else torch.as_tensor(loss_w.reshape(G, S, n), dtype=dt, device=dev)
    nc = torch.as_tensor(n_classes, device=dev)
    Ct = torch.as_tensor(np.array(C, dtype=float), dtype=dt, device=dev)
    # group along S (problems sharing a design), or along G when each problem has its own
    along_g = S == 1 and G > 1
    k_of = n_classes[:, 0] if along_g else n_classes.max(0)
    every = torch.arange(G if not along_g else S, device=dev)
    with cpu_threads(dev, num_threads):
        for k in np.unique(k_of):
            idx = torch.as_tensor(np.flatnonzero(k_of == k), device=dev)
            gi, si = (idx, every) if along_g else (every, idx)
            ix = (gi[:, None], si[None, :])
            prob = _Problems(X[gi], enc[ix], w[ix], nc[ix], Ct[ix], None if lw is None else lw[ix])
            theta, f, n_iter, conv = _batched_lbfgs(prob, max_iter, tol)
            fit.add(gi, si, prob, theta, f, n_iter, conv)
    return fit
