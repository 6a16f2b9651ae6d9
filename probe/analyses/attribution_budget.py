"""Attributions measured to a precision budget (docs/design.md §5, "Precision budgets").

- :func:`adaptive_ig`: Layer Integrated Gradients with the fewest steps that satisfy completeness.
  Every example starts at ``start`` steps; an example whose relative convergence delta
  ``|Σ attr − (F(x) − F(b))| / |F(x) − F(b)|`` (Sundararajan et al. 2017) is above ``tolerance`` is
  attributed again with twice the steps, up to ``max_steps``. Examples still above it at the cap
  keep the cap's attribution and are counted (the ``budgets`` table says how many), never warned about.
- :func:`occlusion_subsets`: occlusion (one forward pass per occluded word) only on the words the other
  methods rank in their top ``top`` by magnitude, the planted token's words, and a **random control
  sample of the same size** from the remaining words; :func:`impute_unoccluded` gives every word not
  occluded the score of a word drawn at random from its example's control sample (hot-deck
  imputation). The control sample is a simple random sample of the words nobody ranked, so the
  imputed sums over those words (of scores, or of their magnitudes) are unbiased estimates of the
  true sums: shares and ERASER rankings built on them stay unbiased.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from probe.analyses.attribution import WordAttributions, word_attributions
from probe.analyses.attribution_metrics import token_positions


def adaptive_ig(model, tokenizer, texts: Sequence, *, start: int, max_steps: int, tolerance: float,
                max_length: int, word_positions: Sequence[int] | None = None,
                **kwargs) -> tuple[list[WordAttributions], np.ndarray]:
    """Integrated gradients with steps doubled per example until its relative delta is at most
    ``tolerance`` (or ``max_steps``). Returns the attributions and the steps each example used.
    ``word_positions`` (token classifiers): the word whose tag example i explains, as in
    :func:`probe.analyses.attribution.word_attributions`."""
    texts = list(texts)
    steps = np.full(len(texts), int(start), dtype=np.int64)
    out: list[WordAttributions | None] = [None] * len(texts)
    todo = np.arange(len(texts))
    n_steps = int(start)
    while todo.size:
        positions = None if word_positions is None else [int(word_positions[i]) for i in todo]
        attrs = word_attributions(model, tokenizer, [texts[i] for i in todo], "integrated_gradients",
                                  max_length=max_length, n_steps=n_steps, delta_warn=float("inf"),
                                  word_positions=positions, **kwargs)
        again = []
        for i, a in zip(todo, attrs):
            out[i], steps[i] = a, n_steps
            if not (a.delta <= tolerance) and np.isfinite(a.delta) and 2 * n_steps <= max_steps:
                again.append(i)
        todo, n_steps = np.asarray(again, dtype=np.int64), 2 * n_steps
    return [a for a in out if a is not None], steps


def over_tolerance(attrs: Sequence[WordAttributions], tolerance: float) -> int:
    """How many attributions have a relative convergence delta above ``tolerance``."""
    return int(sum(np.isfinite(a.delta) and a.delta > tolerance for a in attrs))


def steps_summary(steps: np.ndarray) -> str:
    """``"16×10, 32×2"``: how many examples used each step count."""
    values, counts = np.unique(steps, return_counts=True)
    return ", ".join(f"{v}x{c}" for v, c in zip(values.tolist(), counts.tolist()))


def occlusion_subsets(others: Sequence[Sequence[WordAttributions]], n_words: Sequence[int], token: str | None,
                      words: Sequence[Sequence[str]], top: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Per example: ``(ranked + control words to occlude, the control words)``. Ranked: the union of each
    method's ``top`` words by |score| and the token's words; control: as many words again, drawn
    without replacement from the rest (all of them if fewer remain)."""
    subsets, controls = [], []
    for i, n in enumerate(n_words):
        ranked: set[int] = set()
        for attrs in others:
            mag = np.abs(np.asarray(attrs[i].scores, dtype=np.float64))[:n]
            ranked.update(np.argsort(-mag, kind="stable")[:top].tolist())
        if token is not None:
            ranked.update(token_positions(words[i], token).tolist())
        rest = np.array([j for j in range(n) if j not in ranked], dtype=np.int64)
        rng = np.random.default_rng([seed, 43, i])
        control = np.sort(rng.choice(rest, min(len(ranked), rest.size), replace=False)).tolist() if rest.size else []
        subsets.append(sorted(ranked) + control)
        controls.append(control)
    return [sorted(s) for s in subsets], controls


def impute_unoccluded(attrs: Sequence[WordAttributions], subsets: Sequence[Sequence[int]],
                      controls: Sequence[Sequence[int]], seed: int) -> list[WordAttributions]:
    """Every word outside ``subsets[i]`` takes the score of a word drawn (with replacement) from
    ``controls[i]`` (see the module docstring); words are left at 0 when there is no control word."""
    for i, a in enumerate(attrs):
        missing = np.setdiff1d(np.arange(len(a.scores)), np.asarray(subsets[i], dtype=np.int64))
        if missing.size and len(controls[i]):
            rng = np.random.default_rng([seed, 47, i])
            a.scores = a.scores.copy()
            a.scores[missing] = a.scores[rng.choice(np.asarray(controls[i]), missing.size, replace=True)]
    return list(attrs)
