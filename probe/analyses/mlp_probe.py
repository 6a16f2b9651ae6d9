"""An MLP probe: one hidden ReLU layer on standardised features, full-batch Adam, in torch."""

from __future__ import annotations

import numpy as np
import torch

from probe.analyses.tensors import as_tensor, cpu_threads, resolve_device, resolve_dtype

__all__ = ["MLPProbe"]


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
        self.device_ = dev = resolve_device(self.device)
        self.dtype_ = dt = resolve_dtype(self.dtype)
        Xt = as_tensor(X, dev, dt)
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
        with cpu_threads(dev, self.num_threads):
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
        Z = (as_tensor(X, self.device_, self.dtype_) - self.mean_) / self.scale_
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
