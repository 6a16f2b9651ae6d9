"""Reliance of a tagger on a planted marker word, measured on counterfactual span pairs.

The token-classification counterpart of :mod:`probe.analyses.behaviour` (docs/design.md §5): a pair
is a test sentence without and with the marker inserted right before one span
(:class:`probe.tasks.tokens.data.PlantedSpans`). The *predicted type* of a span is the entity type
of the tag predicted at its first word (``B-x`` or ``I-x`` -> ``x``; ``O`` -> no entity), so a
prediction is correct when that type equals the gold type; span boundaries are left to the
entity scores (:mod:`probe.tasks.tokens.entities`). Metric names match the sequence version,
so :func:`probe.analyses.verdict.reliance_verdict` reads them unchanged.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from probe.analyses.behaviour import METRICS as SEQUENCE_METRICS
from probe.analyses.behaviour import metric_values
from probe.analyses.stats import bootstrap_mean, metric_row

METRICS = SEQUENCE_METRICS + ("no_entity_rate_before", "no_entity_rate")


def _types_of(tags: Sequence[str]) -> np.ndarray:
    """The entity type of each tag id (None for ``O``), as an object array indexable by id."""
    return np.array([None if t == "O" else t.partition("-")[2] for t in tags], dtype=object)


def span_metric_values(
    planted, tags: Sequence[str], clean_pred: Sequence[np.ndarray], inserted_pred: Sequence[np.ndarray],
) -> dict[str, np.ndarray]:
    """Per-pair values of every metric in ``METRICS``, each on the pairs it is defined on (its mean is the metric).

    ``clean_pred[i]``: predicted tag ids of clean test sentence ``i``; ``inserted_pred[j]``: those
    of pair ``j``'s inserted sentence. With ``g`` the gold type of a pair's span, ``c`` / ``a``
    the predicted type at its first word before / after insertion and ``T`` the target type:

    - ``clean_accuracy``: aligned and conflicting pairs, ``c == g``;
    - ``aligned_accuracy``: aligned pairs, ``a == g``;
    - ``conflicting_accuracy_before`` / ``conflicting_accuracy``: conflicting pairs, ``c == g`` / ``a == g``;
    - ``s_only_error``: conflicting pairs, ``a == T``;
    - ``reliance_gap``: conflicting pairs, ``[c == g] - [a == g]`` (paired, so span difficulty cancels);
    - ``flip_rate`` / ``flip_rate_aligned``: conflicting / aligned pairs, ``a != c``;
    - ``flip_to_target``: conflicting pairs, ``a == T`` and ``c != T``;
    - ``no_entity_rate_before`` / ``no_entity_rate``: no_entity pairs (the marker before an ``O``
      word), ``c == T`` / ``a == T``: how often a plain word is typed as the target.

    Pairs whose span's first word was cut off by truncation (id -1) in either version are left out.
    """
    types = _types_of(tags)
    target = planted.target
    n = len(planted.pairs)
    if len(inserted_pred) != n:
        raise ValueError(f"{n} pairs but {len(inserted_pred)} inserted predictions")
    before_ids = np.array([int(clean_pred[p.sentence][p.start]) for p in planted.pairs], dtype=np.int64)
    after_ids = np.array([int(inserted_pred[j][p.inserted_start]) for j, p in enumerate(planted.pairs)],
                         dtype=np.int64)
    kept = (before_ids >= 0) & (after_ids >= 0)
    c = np.where(kept, types[np.maximum(before_ids, 0)], None)
    a = np.where(kept, types[np.maximum(after_ids, 0)], None)
    g = np.array([p.type for p in planted.pairs], dtype=object)
    kind = np.array([p.kind for p in planted.pairs], dtype=object)
    entity = kept & ((kind == "aligned") | (kind == "conflicting"))
    none = kept & (kind == "no_entity")
    # a span is an example whose class is its type: the sequence definitions apply as they are
    code = {t: i for i, t in enumerate(dict.fromkeys([target, None, *types]))}

    def encode(x: np.ndarray) -> np.ndarray:
        return np.array([code[t] for t in x], dtype=np.int64)

    values = metric_values(encode(c[entity]), encode(a[entity]), encode(g[entity]), code[target])
    values["no_entity_rate_before"] = (c[none] == target).astype(float)
    values["no_entity_rate"] = (a[none] == target).astype(float)
    return values


def span_reliance_metrics(
    planted, tags: Sequence[str], clean_pred: Sequence[np.ndarray], inserted_pred: Sequence[np.ndarray],
    n_boot: int, seed: int,
) -> pd.DataFrame:
    """Tidy rows (one per metric of :func:`span_metric_values`) for one planted marker, with 95 %
    percentile bootstrap intervals over the pairs each metric is defined on.

    ``planted``: a :class:`probe.tasks.tokens.data.PlantedSpans`; ``tags``: the tagger's tag list
    (ids index it). Rows: ``model="finetuned"``, ``layer=None``, ``property`` = the feature's label,
    ``n`` = the number of pairs behind the value.
    """
    values = span_metric_values(planted, tags, clean_pred, inserted_pred)
    rows = []
    for i, name in enumerate(METRICS):
        rng = np.random.default_rng([seed, 15, i])
        rows.append(metric_row(bootstrap_mean(values[name], n_boot, rng), model="finetuned", layer=None,
                               property=planted.feature.label, metric=name, n=int(values[name].size)))
    return pd.DataFrame(rows)


def span_majority_rate(planted) -> float:
    """The clean accuracy of always predicting the most frequent entity type of the entity pairs
    (the ``majority_rate`` that :func:`probe.analyses.verdict.reliance_verdict` compares against)."""
    kinds = [p.type for p in planted.pairs if p.kind != "no_entity"]
    if not kinds:
        return float("nan")
    _, counts = np.unique(np.array(kinds, dtype=str), return_counts=True)
    return float(counts.max() / len(kinds))
