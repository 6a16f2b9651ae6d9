"""ERASER faithfulness of word attributions: comprehensiveness, sufficiency, AOPC (DeYoung et al. 2020).

For an example x with predicted class ŷ and its words ranked by attribution:

- comprehensiveness@k = p(ŷ | x) − p(ŷ | x without its top-k % words): high when the words the
  attribution ranks first are the ones the prediction needs;
- sufficiency@k = p(ŷ | x) − p(ŷ | only the top-k % words, in their original order): low when
  those words alone carry the prediction;
- AOPC (area over the perturbation curve) = the mean over k ∈ {1, 5, 10, 20, 50} %.

The top-k % of an n-word text is ``ceil(k · n / 100)`` words (at least one). Words are ranked
by their signed score, largest first (evidence *for* ŷ; saliency is unsigned anyway), ties
broken by position. Every number is reported next to a **random-order baseline**: the same
computation with a uniformly random word order (a seeded ``numpy`` Generator), and the paired
per-example difference method − random, each with a 95 % bootstrap interval over examples.

The perturbed texts of several methods overlap: the full texts and the random-order variants are
the same for every method of a model and partition, and two methods often rank the same top words.
A :class:`TextProbabilities` shared across the calls computes each distinct text once.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from probe.analyses.attribution import WordAttributions
from probe.analyses.stats import bootstrap_mean, metric_row

PERCENTS = (1, 5, 10, 20, 50)


def top_k_count(n_words: int, percent: float) -> int:
    """How many words make the top ``percent`` % of an ``n_words``-word text (at least one)."""
    return max(1, math.ceil(percent * n_words / 100 - 1e-9)) if n_words else 0


def _ranking(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def _variants(words: list[str], order: np.ndarray, percents: Sequence[float]) -> tuple[list[str], list[str]]:
    """Texts without the top-k % words and with only them, one per percent."""
    without, only = [], []
    for k in percents:
        top = set(order[: top_k_count(len(words), k)].tolist())
        without.append(" ".join(w for j, w in enumerate(words) if j not in top))
        only.append(" ".join(w for j, w in enumerate(words) if j in top))
    return without, only


class TextProbabilities:
    """``probabilities(texts) -> [n, K]``: the classifier's class probabilities, each distinct text
    computed once over the object's life (one object per model; the model must not change meanwhile)."""

    def __init__(self, model, tokenizer, max_length: int, batch_size: int = 64) -> None:
        self.model, self.tokenizer, self.max_length, self.batch_size = model, tokenizer, max_length, batch_size
        self.known: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from probe.models.batching import predict_logits

        new = list(dict.fromkeys(t for t in texts if t not in self.known))
        if new:
            device = next(self.model.parameters()).device
            logits = predict_logits(self.model, self.tokenizer, new, self.max_length, self.batch_size,
                                    device).astype(np.float64)
            logits -= logits.max(1, keepdims=True)
            p = np.exp(logits)
            self.known.update(zip(new, p / p.sum(1, keepdims=True)))
        return np.stack([self.known[t] for t in texts])


def faithfulness_scores(
    model, tokenizer, attributions: Sequence[WordAttributions], *, percents: Sequence[float] = PERCENTS,
    max_length: int = 128, batch_size: int = 64, seed: int = 0, probabilities: TextProbabilities | None = None,
) -> dict[str, np.ndarray]:
    """Per-example curves ``[n, len(percents)]``: ``comprehensiveness``, ``sufficiency`` and
    their ``random_`` counterparts (DeYoung et al. 2020).

    The texts are rebuilt from ``attributions[i].words`` (the words the attribution saw, i.e.
    after truncation), so the full-input probability and the perturbed ones are comparable.
    ``probabilities``: a :class:`TextProbabilities` of ``model`` to share with other calls (default:
    a fresh one).
    """
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    n_k = len(percents)
    for a in attributions:
        words = list(a.words)
        texts.append(" ".join(words))
        for order in (_ranking(a.scores), rng.permutation(len(words))):
            without, only = _variants(words, order, percents)
            texts.extend(without + only)
    probabilities = probabilities or TextProbabilities(model, tokenizer, max_length, batch_size)
    probs = probabilities(texts)
    block = 1 + 4 * n_k
    out = {k: np.zeros((len(attributions), n_k)) for k in
           ("comprehensiveness", "sufficiency", "random_comprehensiveness", "random_sufficiency")}
    for i, a in enumerate(attributions):
        p = probs[i * block: (i + 1) * block, a.prediction]
        full = p[0]
        out["comprehensiveness"][i] = full - p[1: 1 + n_k]
        out["sufficiency"][i] = full - p[1 + n_k: 1 + 2 * n_k]
        out["random_comprehensiveness"][i] = full - p[1 + 2 * n_k: 1 + 3 * n_k]
        out["random_sufficiency"][i] = full - p[1 + 3 * n_k: 1 + 4 * n_k]
    return out


def faithfulness_metrics(
    model, tokenizer, attributions: Sequence[WordAttributions], *, model_name: str, feature: str = "task",
    percents: Sequence[float] = PERCENTS, max_length: int = 128, batch_size: int = 64, n_boot: int = 1000,
    seed: int = 0, probabilities: TextProbabilities | None = None,
) -> pd.DataFrame:
    """Tidy ERASER rows (DeYoung et al. 2020) for one model and attribution method.

    Metrics: ``comprehensiveness_aopc``, ``sufficiency_aopc`` and per-k ``comprehensiveness@k``,
    ``sufficiency@k``; column ``method`` is the attribution method or ``"random"`` (the
    random-order baseline, always present) or ``"<method>-random"`` (the paired difference).
    """
    curves = faithfulness_scores(model, tokenizer, attributions, percents=percents, max_length=max_length,
                                 batch_size=batch_size, seed=seed, probabilities=probabilities)
    method = attributions[0].method if attributions else ""
    per_metric: dict[str, dict[str, np.ndarray]] = {}
    for kind in ("comprehensiveness", "sufficiency"):
        ours, rand = curves[kind], curves[f"random_{kind}"]
        per_metric[f"{kind}_aopc"] = {method: ours.mean(1), "random": rand.mean(1), f"{method}-random": (ours - rand).mean(1)}
        for j, k in enumerate(percents):
            per_metric[f"{kind}@{k:g}"] = {method: ours[:, j], "random": rand[:, j], f"{method}-random": ours[:, j] - rand[:, j]}
    rows = []
    for m, (metric, by_method) in enumerate(per_metric.items()):
        for r, (meth, values) in enumerate(by_method.items()):
            rng = np.random.default_rng([seed, 13, m, r])
            rows.append(metric_row(bootstrap_mean(values, n_boot, rng), model=model_name, layer=None, property=feature,
                                   metric=metric, method=meth, n=int(values.size)))
    return pd.DataFrame(rows)
