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

**Pairs of texts** (attributions with ``n_first``, :mod:`probe.tasks.pairs.attribution`): the words are the
first text's kept words then the second's; a perturbed input is again a pair ``(first kept words, second
kept words)``, tokenised with the pair template, so ``[CLS]`` / ``[SEP]`` (or a decoder's separator) and the
segment ids are rebuilt around whatever words remain and a side may become empty. The top-k % are ranked
over the words of both sides. Per side s, ``s_side_comprehensiveness`` and ``s_side_sufficiency`` perturb
only s (its top-k % of its own words, ranked among them; the other text stays whole):
p(ŷ | x) − p(ŷ | s without its top words) and p(ŷ | x) − p(ŷ | s reduced to them), each next to its own
random order; NaN for a side with no covered word.
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


def _join(words: list[str], keep: np.ndarray, n_first: int | None) -> str | tuple[str, str]:
    """The kept words as a text, or for a pair (``n_first`` words on the first side) as a pair of texts."""
    if n_first is None:
        return " ".join(w for w, k in zip(words, keep) if k)
    return (" ".join(w for w, k in zip(words[:n_first], keep[:n_first]) if k),
            " ".join(w for w, k in zip(words[n_first:], keep[n_first:]) if k))


def _variants(words: list[str], order: np.ndarray, percents: Sequence[float],
              n_first: int | None = None) -> tuple[list, list]:
    """Inputs without the top-k % words and with only them, one per percent. ``order`` ranks the words that
    may be removed (all of them, or one side's); the top-k % are counted among those, and the words not in
    ``order`` are always kept."""
    fixed = np.ones(len(words), dtype=bool)
    fixed[np.asarray(order, dtype=np.int64)] = False
    without, only = [], []
    for k in percents:
        top = np.zeros(len(words), dtype=bool)
        top[np.asarray(order[: top_k_count(len(order), k)], dtype=np.int64)] = True
        without.append(_join(words, ~top, n_first))
        only.append(_join(words, top | fixed, n_first))
    return without, only


def side_positions(n_words: int, n_first: int) -> dict[str, np.ndarray]:
    """The word positions of each side of a pair: ``{"first": 0..n_first-1, "second": n_first..n_words-1}``."""
    return {"first": np.arange(n_first), "second": np.arange(n_first, n_words)}


class TextProbabilities:
    """``probabilities(texts) -> [n, K]``: the classifier's class probabilities, each distinct text (or pair
    of texts) computed once over the object's life (one object per model; the model must not change meanwhile)."""

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


def _curve_names(pairs: bool) -> list[str]:
    """The curves :func:`faithfulness_scores` returns: overall, and for pairs per side; each with its random order."""
    prefixes = [""] + ([f"{side}_side_" for side in ("first", "second")] if pairs else [])
    return [f"{r}{p}{kind}" for p in prefixes for r in ("", "random_") for kind in ("comprehensiveness", "sufficiency")]


def faithfulness_scores(
    model, tokenizer, attributions: Sequence[WordAttributions], *, percents: Sequence[float] = PERCENTS,
    max_length: int = 128, batch_size: int = 64, seed: int = 0, probabilities: TextProbabilities | None = None,
    sides: bool = True,
) -> dict[str, np.ndarray]:
    """Per-example curves ``[n, len(percents)]``: ``comprehensiveness``, ``sufficiency`` and
    their ``random_`` counterparts (DeYoung et al. 2020); for pairs also ``first_side_comprehensiveness``,
    ``second_side_sufficiency``, ... (the module docstring; ``sides=False`` leaves them out), NaN where a side
    has no covered word.

    The texts are rebuilt from ``attributions[i].words`` (the words the attribution saw, i.e.
    after truncation), so the full-input probability and the perturbed ones are comparable.
    ``probabilities``: a :class:`TextProbabilities` of ``model`` to share with other calls (default:
    a fresh one).
    """
    rng = np.random.default_rng(seed)
    side_rng = np.random.default_rng([seed, 53])  # its own stream: the overall random orders stay as for texts
    inputs: list = []
    plan: list[dict[str, int]] = []  # per example: where its full input and each curve's inputs start
    for a in attributions:
        words = list(a.words)
        where = {"full": len(inputs)}
        inputs.append(_join(words, np.ones(len(words), dtype=bool), a.n_first))
        ranked = _ranking(a.scores)
        orders = {"": ranked, "random_": rng.permutation(len(words))}
        if a.n_first is not None and sides:
            for side, pos in side_positions(len(words), a.n_first).items():
                orders[f"{side}_side_"] = ranked[np.isin(ranked, pos)]
                orders[f"random_{side}_side_"] = side_rng.permutation(pos)
        for prefix, order in orders.items():
            if len(order) or "_side_" not in prefix:  # a side without covered words has no curve
                without, only = _variants(words, order, percents, a.n_first)
                where[f"{prefix}comprehensiveness"] = len(inputs)
                where[f"{prefix}sufficiency"] = len(inputs) + len(without)
                inputs.extend(without + only)
        plan.append(where)
    probabilities = probabilities or TextProbabilities(model, tokenizer, max_length, batch_size)
    probs = probabilities(inputs) if inputs else np.zeros((0, 0))
    n_k = len(percents)
    pairs = sides and any(a.n_first is not None for a in attributions)
    out = {name: np.full((len(attributions), n_k), np.nan) for name in _curve_names(pairs)}
    for i, (a, where) in enumerate(zip(attributions, plan)):
        p = probs[:, a.prediction]
        for name, begin in where.items():
            if name != "full":
                out[name][i] = p[where["full"]] - p[begin: begin + n_k]
    return out


def faithfulness_metrics(
    model, tokenizer, attributions: Sequence[WordAttributions], *, model_name: str, feature: str = "task",
    percents: Sequence[float] = PERCENTS, max_length: int = 128, batch_size: int = 64, n_boot: int = 1000,
    seed: int = 0, probabilities: TextProbabilities | None = None, sides: bool = True,
) -> pd.DataFrame:
    """Tidy ERASER rows (DeYoung et al. 2020) for one model and attribution method.

    Metrics: ``comprehensiveness_aopc``, ``sufficiency_aopc`` and per-k ``comprehensiveness@k``,
    ``sufficiency@k``; for pairs also ``first_side_comprehensiveness_aopc``, ``first_side_sufficiency_aopc``
    and the second side's (unless ``sides=False``); column ``method`` is the attribution method or
    ``"random"`` (the random-order baseline, always present) or ``"<method>-random"`` (the paired difference).
    """
    curves = faithfulness_scores(model, tokenizer, attributions, percents=percents, max_length=max_length,
                                 batch_size=batch_size, seed=seed, probabilities=probabilities, sides=sides)
    method = attributions[0].method if attributions else ""
    per_metric: dict[str, dict[str, np.ndarray]] = {}
    for kind in ("comprehensiveness", "sufficiency"):
        ours, rand = curves[kind], curves[f"random_{kind}"]
        per_metric[f"{kind}_aopc"] = {method: ours.mean(1), "random": rand.mean(1), f"{method}-random": (ours - rand).mean(1)}
        for j, k in enumerate(percents):
            per_metric[f"{kind}@{k:g}"] = {method: ours[:, j], "random": rand[:, j], f"{method}-random": ours[:, j] - rand[:, j]}
    for name in [c for c in curves if "_side_" in c and not c.startswith("random_")]:  # pairs: AOPC per side
        ours, rand = curves[name], curves[f"random_{name}"]
        per_metric[f"{name}_aopc"] = {method: ours.mean(1), "random": rand.mean(1), f"{method}-random": (ours - rand).mean(1)}
    rows = []
    for m, (metric, by_method) in enumerate(per_metric.items()):
        for r, (meth, values) in enumerate(by_method.items()):
            values = values[np.isfinite(values)]  # a pair's side without covered words has no curve
            rng = np.random.default_rng([seed, 13, m, r])
            rows.append(metric_row(bootstrap_mean(values, n_boot, rng), model=model_name, layer=None, property=feature,
                                   metric=metric, method=meth, n=int(values.size)))
    return pd.DataFrame(rows)
