"""Candidates from the training data: features whose presence is associated with a label.

Gardner et al. 2021 ("Competency Problems: On Finding and Removing Artifacts in Language Data"):
under the null that a feature carries no label information, the share p̂ of the n training
examples containing it that belong to class c is a binomial proportion around p0, c's share of
the data. The one-sided statistic per (feature, class) is

    z = (p̂ − p0) / sqrt(p0 (1 − p0) / n)

(n is a document frequency: how many training examples contain the feature at least once). A
feature is *significant* when z exceeds the one-sided normal quantile at α / m, Bonferroni over
the m (feature, class) pairs tested. PMI(feature, class) = log p(class | feature) / p(class) is
reported next to it for reference.

Words are the whitespace words of a text, case-folded with surrounding punctuation stripped
(:func:`word_key`), the tokenizer-independent split every word-level step of probe uses; bigrams
are pairs of adjacent such words. Natural properties (:mod:`probe.data.properties`) enter as slices
``name=value``; taggers get the *marker* pattern (:func:`marker_counts`): the word right before an
entity of a type.
"""

from __future__ import annotations

import string
from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd

COLUMNS = ["feature", "kind", "class", "count", "class_count", "p0", "share", "z", "pmi"]


def empty_table() -> pd.DataFrame:
    """A candidate table without rows, with numeric columns (so that concatenating it keeps dtypes)."""
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("feature", "kind", "class") else float)
                         for c in COLUMNS})


def word_key(word: str) -> str:
    """A word as discovery counts it: case-folded, surrounding punctuation stripped."""
    return word.strip(string.punctuation).casefold()


def text_words(text: str) -> list[str]:
    """The non-empty :func:`word_key` words of ``text``, in order."""
    return [k for k in (word_key(w) for w in text.split()) if k]


def document_features(texts: Sequence[str], bigrams: bool = True) -> list[set[tuple[str, str]]]:
    """Per text, the set of ``(feature, kind)`` it contains: its words and (optionally) adjacent word pairs."""
    out = []
    for t in texts:
        words = text_words(t)
        feats = {(w, "word") for w in words}
        if bigrams:
            feats |= {(f"{a} {b}", "bigram") for a, b in zip(words, words[1:])}
        out.append(feats)
    return out


def z_statistic(class_count: np.ndarray, count: np.ndarray, p0: np.ndarray) -> np.ndarray:
    """Gardner et al. 2021's one-sided z: (p̂ − p0) / sqrt(p0 (1 − p0) / n) with p̂ = class_count / count."""
    count = np.asarray(count, dtype=float)
    p0 = np.asarray(p0, dtype=float)
    share = np.asarray(class_count, dtype=float) / count
    return (share - p0) / np.sqrt(p0 * (1 - p0) / count)


def association_rows(presence: dict[tuple[str, str], np.ndarray], labels: np.ndarray,
                     classes: Sequence[str]) -> pd.DataFrame:
    """One row per (feature, class) for features given as a boolean presence vector over examples."""
    labels = np.asarray(labels)
    p0 = np.bincount(labels, minlength=len(classes)) / max(len(labels), 1)
    rows = []
    for (feature, kind), has in presence.items():
        n = int(has.sum())
        per_class = np.bincount(labels[has], minlength=len(classes))
        for c, name in enumerate(classes):
            if not 0 < p0[c] < 1:
                continue
            rows.append((feature, kind, name, n, int(per_class[c]), float(p0[c])))
    df = pd.DataFrame(rows, columns=COLUMNS[:6])
    return _finish(df)


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    df["share"] = df["class_count"] / df["count"]
    df["z"] = z_statistic(df["class_count"].to_numpy(), df["count"].to_numpy(), df["p0"].to_numpy())
    with np.errstate(divide="ignore"):
        df["pmi"] = np.log(df["share"] / df["p0"])
    return df[COLUMNS]


def word_association(texts: Sequence[str], labels: np.ndarray, classes: Sequence[str], min_count: int,
                     bigrams: bool = True) -> pd.DataFrame:
    """z and PMI of every word (and bigram) in at least ``min_count`` of ``texts``, per class."""
    return feature_association(document_features(texts, bigrams), labels, classes, min_count)


def feature_association(docs: Sequence[set[tuple[str, str]]], labels: np.ndarray, classes: Sequence[str],
                        min_count: int) -> pd.DataFrame:
    """z and PMI of every ``(feature, kind)`` in at least ``min_count`` of the per-text feature sets ``docs``."""
    labels = np.asarray(labels)
    counts = Counter(f for d in docs for f in d)
    kept = {f for f, n in counts.items() if n >= min_count}
    k = len(classes)
    # rows in sorted order, not the set's (string hashes differ between processes): ties rank the same every run
    per_class: dict[tuple[str, str], np.ndarray] = {f: np.zeros(k, dtype=np.int64) for f in sorted(kept)}
    for d, y in zip(docs, labels):
        for f in d & kept:
            per_class[f][y] += 1
    p0 = np.bincount(labels, minlength=k) / max(len(labels), 1)
    rows = [(f, kind, classes[c], counts[(f, kind)], int(v[c]), float(p0[c]))
            for (f, kind), v in per_class.items() for c in range(k) if 0 < p0[c] < 1]
    return _finish(pd.DataFrame(rows, columns=COLUMNS[:6])) if rows else empty_table()


def property_association(texts: Sequence[str], labels: np.ndarray, classes: Sequence[str], min_count: int,
                         applies_to: str | None = None) -> pd.DataFrame:
    """z and PMI of every natural-property slice ``name=value`` (:mod:`probe.data.properties`) with at
    least ``min_count`` examples."""
    from probe.data.properties import available_properties, compute_properties

    names = list(available_properties(applies_to)) if applies_to else None
    props = compute_properties(texts, names, skip_constant=True, min_count=1)
    presence = {}
    for name, values in props.items():
        for v in np.unique(values):
            has = values == v
            if has.sum() >= min_count:
                presence[(f"{name}={int(v)}", "property")] = has
    if not presence:
        return empty_table()
    return association_rows(presence, labels, classes)


def marker_counts(sentences: Sequence[Sequence[str]], entity_starts: Sequence[Sequence[str | None]],
                  types: Sequence[str], min_count: int) -> pd.DataFrame:
    """Taggers: for every word type, how often the next word begins an entity of each type.

    ``entity_starts[i][j]`` is the type of the entity that begins at word j of sentence i (None when
    none does). Each occurrence of a word that has a next word is one trial; p0 is the share of all
    such occurrences followed by an entity of that type. Rows as :func:`word_association`, kind
    ``marker``, class = entity type."""
    counts: Counter = Counter()
    per_type: dict[str, Counter] = {t: Counter() for t in types}
    totals: Counter = Counter()
    n = 0
    for words, starts in zip(sentences, entity_starts):
        keys = [word_key(w) for w in words]
        for j in range(len(words) - 1):
            if not keys[j]:
                continue
            n += 1
            counts[keys[j]] += 1
            nxt = starts[j + 1]
            if nxt is not None:
                per_type[nxt][keys[j]] += 1
                totals[nxt] += 1
    rows = [(w, "marker", t, c, per_type[t][w], totals[t] / n)
            for w, c in counts.items() if c >= min_count for t in types if 0 < totals[t] < n]
    if not rows:
        return empty_table()
    return _finish(pd.DataFrame(rows, columns=COLUMNS[:6]))


def mark_significant(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Add ``z_threshold`` (the Bonferroni one-sided normal quantile at ``alpha`` over every row) and
    ``significant`` (z above it)."""
    from scipy.stats import norm

    table = table.copy()
    m = max(len(table), 1)
    threshold = float(norm.isf(alpha / m))
    table["z_threshold"] = threshold
    table["significant"] = table["z"] > threshold
    return table
