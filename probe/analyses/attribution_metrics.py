"""Reading word attributions (:class:`probe.analyses.attribution.WordAttributions`): where a token's words
are, which examples to show, heatmap rows, and the spurious-attribution metrics (docs/design.md §5).

:func:`spurious_attribution_metrics` gives the spurious attribution share (absolute mass on the token's words /
total absolute mass) next to the token's share of the input, the top-1 rate, and the relative convergence
delta, as tidy rows with 95 % bootstrap intervals over examples.
"""

from __future__ import annotations

import string
from typing import Sequence

import numpy as np
import pandas as pd

from probe.analyses.attribution import DELTA_WARN, WordAttributions
from probe.analyses.stats import bootstrap_mean, metric_row


def _normalise(word: str) -> str:
    return word.strip(string.punctuation).casefold()


def token_positions(words: Sequence[str], token: str) -> np.ndarray:
    """Indices of the words that are ``token`` (case-folded, surrounding punctuation stripped)."""
    t = _normalise(token)
    return np.array([j for j, w in enumerate(words) if _normalise(w) == t], dtype=np.int64)


def telling_examples(attributions: Sequence[WordAttributions], token: str | None) -> dict[int, str]:
    """The examples worth showing as heatmaps, ``{index: why}``: the first one, or for a planted
    token those with the highest and the lowest share of attribution mass on it."""
    chosen = {0: "example"}
    if token is None or not attributions:
        return chosen
    shares = []
    for a in attributions:
        pos = token_positions(a.words, token)
        total = np.abs(a.scores).sum()
        shares.append(np.abs(a.scores)[pos].sum() / total if pos.size and total > 0 else np.nan)
    if np.isfinite(shares).any():
        chosen = {int(np.nanargmax(shares)): "highest spurious share", int(np.nanargmin(shares)): "lowest spurious share"}
    return chosen


def heatmap_rows(attributions: Sequence[WordAttributions], chosen: dict[int, str], *, model: str, partition: str,
                 feature: str | None, examples: Sequence[int], labels: Sequence[str],
                 predictions: Sequence[str]) -> pd.DataFrame:
    """Word-level rows (``tables/attribution_words.csv``) of the ``chosen`` examples: which example,
    why it was chosen, its label and prediction (as text), and every word's score by position."""
    rows = []
    for i, why in chosen.items():
        a = attributions[i]
        for position, (word, score) in enumerate(zip(a.words, a.scores)):
            rows.append({"model": model, "partition": partition, "property": feature or "task",
                         "example": int(examples[i]), "selection": why, "label": labels[i],
                         "prediction": predictions[a.prediction], "position": position, "word": word,
                         "score": float(score)})
    return pd.DataFrame(rows)


def spurious_attribution_metrics(
    attributions: Sequence[WordAttributions], token: str, *, model_name: str, n_boot: int = 1000, seed: int = 0,
    feature: str | None = None,
) -> pd.DataFrame:
    """Spurious attribution share, input share, top-1 rate and convergence delta (docs/design.md §5).

    Over the examples that contain ``token``: share = Σ|score| on the token's words / Σ|score|,
    next to ``input_share`` = (token words) / (words) (1 / n for one token); top-1 rate =
    whether a token word has the largest |score|. Intervals: 95 % bootstrap over examples.
    """
    share, input_share, top1, deltas = [], [], [], []
    method = attributions[0].method if attributions else ""
    for a in attributions:
        pos = token_positions(a.words, token)
        if pos.size == 0:
            continue
        mag = np.abs(a.scores)
        total = mag.sum()
        share.append(mag[pos].sum() / total if total > 0 else np.nan)
        input_share.append(pos.size / len(a.words))
        top1.append(float(total > 0 and int(np.argmax(mag)) in set(pos.tolist())))
        deltas.append(a.delta)
    values = {
        "spurious_attribution_share": np.asarray(share, dtype=float),
        "spurious_input_share": np.asarray(input_share, dtype=float),
        "spurious_top1_rate": np.asarray(top1, dtype=float),
    }
    d = np.asarray(deltas, dtype=float)
    if d.size and np.isfinite(d).all():
        values["relative_convergence_delta"] = d
        values["large_delta_rate"] = (d > DELTA_WARN).astype(float)
    rows = []
    for k, (name, v) in enumerate(values.items()):
        v = v[np.isfinite(v)]
        rng = np.random.default_rng([seed, 11, k])
        rows.append(metric_row(bootstrap_mean(v, n_boot, rng), model=model_name, layer=None, property=feature or token,
                               metric=name, method=method, n=int(v.size)))
    return pd.DataFrame(rows)
