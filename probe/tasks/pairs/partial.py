"""Partial-input tests: does the pair model need both texts?

A model that keeps its accuracy when the first text (the premise) is taken away answers from the
second text alone: the hypothesis-only shortcut of NLI (Gururangan et al. 2018; Poliak et al. 2018),
the claim-only shortcut of FEVER. On held-out pairs, the model reads each side

- ``replaced``: swapped for another example's text of the same side (a derangement: never the
  example's own text, and a different string where the data allow), so the input stays well formed;
- ``empty``: the empty string (the pair template's special tokens stay).

Per condition: accuracy and flip rate (share of predictions that differ from the full input's), each
with a percentile bootstrap 95 % interval over examples (:func:`probe.analyses.stats.bootstrap_mean`),
and ``retained``: the share of the full input's above-majority accuracy the condition keeps,
``(acc - majority) / (acc_full - majority)``, where ``majority`` is the accuracy of always answering
the most frequent gold class of these examples (no interval; NaN when the full input is no better).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from probe.analyses.stats import bootstrap_mean, metric_row

PairScorer = Callable[[list[str], list[str]], np.ndarray]  # firsts, seconds -> P(class) [N, K]
CONDITIONS = ("full", "first replaced", "first empty", "second replaced", "second empty")


def derangement(texts: list[str], rng: np.random.Generator, tries: int = 20) -> np.ndarray:
    """``donor[i] != i`` for every ``i``: a random cyclic shift of a permutation, then each example whose
    donor's text equals its own is re-drawn (up to ``tries`` times) among the donors with another text."""
    n = len(texts)
    if n < 2:
        raise ValueError("a derangement needs at least two examples")
    perm = rng.permutation(n)
    donor = np.empty(n, dtype=np.int64)
    donor[perm] = np.roll(perm, -1)
    for i in np.flatnonzero([texts[d] == texts[i] for i, d in enumerate(donor)]):
        for _ in range(tries):
            j = int(rng.integers(n))
            if texts[j] != texts[i]:
                donor[i] = j
                break
    return donor


def partial_inputs(firsts: list[str], seconds: list[str], rng: np.random.Generator,
                   donors: tuple[list[str], list[str]] | None = None) -> dict[str, tuple]:
    """``{condition: (firsts, seconds)}`` for every condition of :data:`CONDITIONS`. Replacements come from
    the other examples of ``donors`` (aligned with the examples; default: the examples themselves), e.g.
    the clean versions of pairs that carry a planted token, so that a replaced side loses the token."""
    src1, src2 = donors if donors is not None else (firsts, seconds)
    d1, d2 = derangement(src1, rng), derangement(src2, rng)
    return {"full": (firsts, seconds),
            "first replaced": ([src1[j] for j in d1], seconds),
            "first empty": ([""] * len(firsts), seconds),
            "second replaced": (firsts, [src2[j] for j in d2]),
            "second empty": (firsts, [""] * len(seconds))}


def partial_input_table(score: PairScorer, firsts: list[str], seconds: list[str], labels: np.ndarray, *,
                        n_boot: int = 1000, seed: int = 0, model: str = "finetuned",
                        donors: tuple[list[str], list[str]] | None = None) -> pd.DataFrame:
    """Accuracy, flip rate and retained accuracy of ``score`` under each condition (module docstring);
    one tidy row per (condition, metric): ``model, property=condition, metric, value, ci_low, ci_high``.
    ``donors``: where replacements come from (:func:`partial_inputs`)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 61])
    inputs = partial_inputs(list(firsts), list(seconds), rng, donors)
    n = len(labels)
    allp = score([x for a, _ in inputs.values() for x in a], [x for _, b in inputs.values() for x in b])
    preds = {c: allp[k * n: (k + 1) * n].argmax(1) for k, c in enumerate(inputs)}
    majority = float(np.bincount(labels).max() / n)
    full_acc = float((preds["full"] == labels).mean())
    rows = []
    for c, pred in preds.items():
        correct = (pred == labels).astype(float)
        rows.append(metric_row(bootstrap_mean(correct, n_boot, rng), model=model, property=c, metric="accuracy",
                               n=n))
        flips = (pred != preds["full"]).astype(float)
        rows.append(metric_row(bootstrap_mean(flips, n_boot, rng), model=model, property=c, metric="flip_rate", n=n))
        kept = (correct.mean() - majority) / (full_acc - majority) if full_acc > majority else float("nan")
        rows.append(metric_row((kept, float("nan"), float("nan")), model=model, property=c, metric="retained", n=n))
    return pd.DataFrame(rows)
