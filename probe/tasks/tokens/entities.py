"""Entity-level precision, recall and F1 of a tagger, with bootstrap intervals over sentences.

An entity counts as found only when its type and both of its boundaries match a gold entity
exactly (the CoNLL-2000/2003 conlleval definition). Scores come from seqeval (Nakayama 2018,
"seqeval: A Python framework for sequence labeling evaluation") in its *default* mode, which
reproduces conlleval: spans are read leniently (an ``I-x`` after ``O`` or after another type
starts a span) rather than in the strict mode that rejects invalid BIO sequences. Micro
averages pool every entity of every type.

The bootstrap (Efron & Tibshirani 1993) resamples sentences: per sentence it counts the true
positives, predicted and gold entities of every type once (with seqeval's own span reader), then
every resample's micro scores are a matrix product of resample counts with those counts, so 1000
resamples cost about as much as one seqeval call.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from probe.analyses.stats import bootstrap_indices, metric_row

METRICS = ("precision", "recall", "f1")


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """seqeval (default, conlleval-style mode) precision / recall / F1 of ``pred`` against ``gold``.

    Returns ``{"precision", "recall", "f1", "support", "per_type": {type: {"precision",
    "recall", "f1", "support"}}}``: micro averages over all entities, then per entity type
    (every type that occurs in ``gold`` or ``pred``); ``support`` counts gold entities.
    Undefined ratios (nothing predicted, nothing to find) are 0, as in seqeval.
    """
    import warnings

    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    gold, pred = _checked(gold, pred)
    with warnings.catch_warnings():  # seqeval warns on undefined ratios and returns 0, which is what we document
        warnings.simplefilter("ignore")
        p, r, f, s = precision_recall_fscore_support(gold, pred, average="micro")
        pt, rt, ft, st = precision_recall_fscore_support(gold, pred, average=None)
    types = sorted({t for seq in (gold, pred) for t, _, _ in _entities_all(seq)})
    per_type = {t: {"precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)}
                for t, a, b, c, d in zip(types, pt, rt, ft, st)}
    return {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s), "per_type": per_type}


def _checked(gold, pred) -> tuple[list[list[str]], list[list[str]]]:
    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted ones")
    return gold, pred


def _entities_all(seqs: list[list[str]]) -> list[tuple[str, int, int]]:
    from seqeval.metrics.sequence_labeling import get_entities

    return [e for seq in seqs for e in get_entities(seq)]


def entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Per sentence and entity type: true positives, predicted and gold entities.

    Returns the sorted types and an array ``[n_sentences, 3, n_types]`` (axis 1: tp, predicted,
    gold). Spans are read with seqeval's ``get_entities`` (default mode), one sentence at a time,
    so summing over sentences gives exactly seqeval's micro counts.
    """
    from seqeval.metrics.sequence_labeling import get_entities

    gold, pred = _checked(gold, pred)
    g_ents = [set(get_entities(g)) for g in gold]
    p_ents = [set(get_entities(p)) for p in pred]
    types = sorted({e[0] for ents in g_ents + p_ents for e in ents})
    col = {t: j for j, t in enumerate(types)}
    counts = np.zeros((len(gold), 3, len(types)), dtype=np.int64)
    for i, (g, p) in enumerate(zip(g_ents, p_ents)):
        for k, ents in enumerate((g & p, p, g)):
            for e in ents:
                counts[i, k, col[e[0]]] += 1
    return types, counts


def _prf(tp: np.ndarray, n_pred: np.ndarray, n_gold: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 from counts (broadcast), 0 where undefined (seqeval's zero_division)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 0.0)
        r = np.where(n_gold > 0, tp / np.maximum(n_gold, 1), 0.0)
        f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    return {"precision": p, "recall": r, "f1": f}


def entity_table(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], n_boot: int, seed: int,
    model: str = "finetuned", level: float = 0.95,
) -> pd.DataFrame:
    """Tidy rows of entity-level precision / recall / F1 with percentile bootstrap intervals over sentences.

    ``property`` is ``entity`` for the micro average over all types, else the entity type;
    ``layer`` is None (the model's output); ``n`` counts the gold entities. The point values equal
    :func:`entity_scores` (seqeval); every resample draws sentences with replacement and
    recomputes the micro (and per-type) scores from per-sentence counts.
    """
    types, counts = entity_counts(gold, pred)
    n = counts.shape[0]
    rng = np.random.default_rng([seed, 11])
    if n:
        idx = bootstrap_indices(n, n_boot, rng)
        weights = np.bincount((idx + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n)
        weights = weights.reshape(n_boot, n).astype(np.float64)
        boot = np.einsum("bs,skt->bkt", weights, counts.astype(np.float64))  # [n_boot, 3, n_types]
    else:
        boot = np.zeros((n_boot, 3, len(types)))
    full = counts.sum(axis=0).astype(np.float64)  # [3, n_types]
    alpha = (1 - level) / 2
    rows = []
    groups = [("entity", full.sum(axis=1), boot.sum(axis=2))]
    groups += [(t, full[:, j], boot[:, :, j]) for j, t in enumerate(types)]
    for prop, point_counts, boot_counts in groups:
        point = _prf(*point_counts)
        resampled = _prf(boot_counts[:, 0], boot_counts[:, 1], boot_counts[:, 2])
        for metric in METRICS:
            lo, hi = (np.quantile(resampled[metric], [alpha, 1 - alpha]) if n else (np.nan, np.nan))
            rows.append(metric_row((float(point[metric]), float(lo), float(hi)), model=model, layer=None,
                                   property=prop, metric=metric, n=int(point_counts[2])))
    return pd.DataFrame(rows)
