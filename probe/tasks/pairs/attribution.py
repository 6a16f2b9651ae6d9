"""Attribution of a pair classifier split by side: how much of it lies on the first and on the second text.

The attributions are the sequence kind's (:mod:`probe.analyses.attribution`, every method, both models) on
pairs: one word list per pair, the first text's covered words then the second's (``n_first`` marks the
boundary, so a text cut by truncation only counts its kept words). Per example, with ``|a_w|`` the
absolute attribution of word ``w``:

- ``first_side_share`` = Σ_{w in first} |a_w| / Σ_w |a_w|, ``second_side_share`` = 1 − that: where the
  explained prediction looks (a hypothesis-only model puts nearly all its mass on the second text,
  Poliak et al. 2018; Gururangan et al. 2018);
- with a planted token: ``token_side_share``, the share on the token's side, next to ``token_side_input_share``,
  that side's share of the words (what a model blind to sides would give), and the sequence kind's
  spurious share, input share and top-1 rate with the token counted on its own side only (the same
  word on the other text is not the planted token).

Each is a mean over examples with a 95 % bootstrap interval; examples whose attribution is all zero are left out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import pandas as pd

from probe.analyses.attribution import WordAttributions
from probe.analyses.attribution_metrics import spurious_attribution_metrics
from probe.analyses.stats import bootstrap_mean, metric_row

SIDES = ("first", "second")


def side_shares(a: WordAttributions) -> tuple[float, float]:
    """``(first, second)`` shares of the absolute attribution mass of one pair; NaN when it is all zero."""
    if a.n_first is None:
        raise ValueError("side_shares needs the attributions of a pair of texts (n_first is None)")
    mag = np.abs(np.asarray(a.scores, dtype=float))
    total = mag.sum()
    if total <= 0:
        return float("nan"), float("nan")
    first = float(mag[: a.n_first].sum() / total)
    return first, 1.0 - first


def on_side(a: WordAttributions, side: str) -> WordAttributions:
    """The attributions with the other side's words blanked (scores kept): token matching sees one side only."""
    keep = range(a.n_first) if side == "first" else range(a.n_first, len(a.words))
    return replace(a, words=[w if j in keep else "" for j, w in enumerate(a.words)])


def pair_attribution_metrics(attributions: Sequence[WordAttributions], *, model_name: str, n_boot: int = 1000,
                             seed: int = 0, feature: str | None = None, token: str | None = None,
                             side: str | None = None) -> pd.DataFrame:
    """The rows of the module docstring: side shares of every example and, with ``token`` on ``side``, its
    side's share and the token metrics on that side; the columns of
    :func:`probe.analyses.attribution_metrics.spurious_attribution_metrics`."""
    if token is not None and side not in SIDES:
        raise ValueError(f"side: {side!r}; allowed: {', '.join(SIDES)}")
    method = attributions[0].method if attributions else ""
    shares = np.array([side_shares(a) for a in attributions], dtype=float).reshape(-1, 2)
    values = {"first_side_share": shares[:, 0], "second_side_share": shares[:, 1]}
    if token is not None:
        k = SIDES.index(side)
        n_words = np.array([(a.n_first, len(a.words) - a.n_first) for a in attributions], dtype=float).reshape(-1, 2)
        values["token_side_share"] = shares[:, k]
        with np.errstate(invalid="ignore", divide="ignore"):
            values["token_side_input_share"] = n_words[:, k] / n_words.sum(1)
    rows = []
    for j, (name, v) in enumerate(values.items()):
        v = v[np.isfinite(v)]
        rows.append(metric_row(bootstrap_mean(v, n_boot, np.random.default_rng([seed, 31, j])), model=model_name,
                               layer=None, property=feature or "task", metric=name, method=method, n=int(v.size)))
    frames = [pd.DataFrame(rows)]
    if token is not None:
        frames.append(spurious_attribution_metrics([on_side(a, side) for a in attributions], token,
                                                   model_name=model_name, n_boot=n_boot, seed=seed, feature=feature))
    return pd.concat(frames, ignore_index=True)


def pair_metrics_for(data, n_boot: int, seed: int):
    """The ``pair_metrics`` callback of :func:`probe.tasks.sequence.analyses.attribution_tables` for a
    :class:`~probe.tasks.pairs.task.PairData`: each planted feature's token on its side."""
    sides = {p.feature.label: p.feature.side for p in data.planted}

    def metrics(attributions, feature, token, model_name) -> pd.DataFrame:
        return pair_attribution_metrics(attributions, model_name=model_name, n_boot=n_boot, seed=seed,
                                        feature=feature, token=token, side=sides.get(feature))

    return metrics
