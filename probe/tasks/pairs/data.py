"""Pairs of texts with a label: read from a table (CSV / JSONL / saved or ``hf:`` datasets) and split so
that no group of pairs (pairs sharing a first text, or an article) is in two splits.

A :class:`PairTable` keeps, per pair, the source class of each side where the data know it (the
built-in ``bbc-news-pairs``, :mod:`probe.tasks.pairs.news`), so that topic match can be tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from probe.data.sources import dropped_rows, load_table
from probe.errors import ProbeError

Pair = tuple[str, str]


@dataclass
class PairTable:
    """Labelled pairs. ``labels`` index ``classes``; ``first_source`` / ``second_source`` name the class
    of the text each side was taken from (``None`` where unknown); ``groups[i]`` is the group of pair
    ``i`` (a split never divides a group); ``articles[i]`` the ids of the documents both sides came from."""

    firsts: list[str]
    seconds: list[str]
    labels: np.ndarray
    classes: list[str]
    first_source: list[str | None] = field(default_factory=list)
    second_source: list[str | None] = field(default_factory=list)
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    articles: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.firsts)

    @property
    def pairs(self) -> list[Pair]:
        """``(first, second)`` per pair: what a pair model reads (:mod:`probe.models.pair_tokens`)."""
        return list(zip(self.firsts, self.seconds))

    def subset(self, idx) -> "PairTable":
        idx = np.asarray(idx, dtype=np.int64)
        pick = (lambda xs: [xs[i] for i in idx] if xs else [])
        return PairTable([self.firsts[i] for i in idx], [self.seconds[i] for i in idx], self.labels[idx],
                         list(self.classes), pick(self.first_source), pick(self.second_source),
                         self.groups[idx] if len(self.groups) else self.groups, pick(self.articles))

    def topic_match(self) -> np.ndarray | None:
        """1 where both sides come from texts of the same source class, 0 where not; ``None`` if unknown."""
        if not self.first_source or any(s is None for s in self.first_source + self.second_source):
            return None
        return np.array([a == b for a, b in zip(self.first_source, self.second_source)], dtype=int)


def _text_values(df: pd.DataFrame, column: str, field_name: str) -> list[str]:
    """The column's texts, whitespace normalised (missing ones as ""), refusing non-text values."""
    values = df[column]
    bad = [v for v in values if not (isinstance(v, str) or v is None or (isinstance(v, float) and np.isnan(v)))]
    if bad:
        raise ProbeError(f"{field_name}: column {column!r} holds non-text values (e.g. {bad[0]!r} of type "
                         f"{type(bad[0]).__name__}); choose a column of strings")
    return [" ".join(v.split()) if isinstance(v, str) else "" for v in values]


def load_pair_table(dataset: str, text_column: str, pair_column: str | None, label_column: str, *,
                    max_dropped_share: float = 0.1, notes: list[str] | None = None) -> PairTable:
    """Pairs from the table ``dataset`` names (:func:`probe.data.sources.load_table`): ``text_column`` is
    the first text, ``pair_column`` the second. Rows with a missing or empty text on either side or a
    missing label are dropped (counted in ``notes``; more than ``max_dropped_share`` is refused); a
    missing column, a second column of only empty texts, or a single class is refused in one line.
    Pairs that share their first text form one group."""
    if not pair_column:
        raise ProbeError("task.text_pair_column: is not set; a text-pair task reads two texts per example, "
                         "e.g. premise and hypothesis; allowed: the name of the second text's column")
    df = load_table(dataset)
    if len(df) == 0:
        raise ProbeError(f"task.dataset: {dataset!r} has no rows")
    for name, col in (("task.text_column", text_column), ("task.text_pair_column", pair_column),
                      ("task.label_column", label_column)):
        if col not in df.columns:
            raise ProbeError(f"{name}: column {col!r} is not in {dataset!r}; its columns are: "
                             f"{', '.join(map(str, df.columns))}")
    firsts = _text_values(df, text_column, "task.text_column")
    seconds = _text_values(df, pair_column, "task.text_pair_column")
    if not any(seconds):
        raise ProbeError(f"task.text_pair_column: column {pair_column!r} of {dataset!r} holds only empty or missing "
                         "texts; allowed: a column with the second text of each pair")
    if not any(firsts):
        raise ProbeError(f"task.text_column: column {text_column!r} of {dataset!r} holds only empty or missing texts")
    has_label = df[label_column].notna().to_numpy()
    empty_a = np.array([not a for a in firsts])
    empty_b = np.array([not b for b in seconds]) & ~empty_a
    reasons = {"empty or missing first text": int(empty_a.sum()),
               "empty or missing second text": int(empty_b.sum()),
               "missing label": int((~has_label & ~empty_a & ~empty_b).sum())}
    keep = np.flatnonzero(has_label & ~empty_a & ~empty_b)
    if keep.size == 0:
        raise ProbeError(f"task.dataset: {dataset!r} has no row with both texts and a label set")
    dropped_rows(dataset, len(df), reasons, max_dropped_share, notes=notes)
    raw = [str(v) for v in df[label_column].to_numpy()[keep]]
    classes = sorted(set(raw))
    if len(classes) < 2:
        raise ProbeError(f"task.label_column: column {label_column!r} has a single class {classes[0]!r}; "
                         "classification needs at least 2")
    index = {c: i for i, c in enumerate(classes)}
    kept_firsts = [firsts[i] for i in keep]
    group_of: dict[str, int] = {}
    groups = np.array([group_of.setdefault(a, len(group_of)) for a in kept_firsts], dtype=np.int64)
    return PairTable(kept_firsts, [seconds[i] for i in keep], np.array([index[v] for v in raw], dtype=np.int64),
                     classes, [None] * len(keep), [None] * len(keep), groups, [(int(g), int(g)) for g in groups])


def group_splits(groups: np.ndarray, sizes: tuple[int, int, int], seed: int) -> tuple[np.ndarray, ...]:
    """Train / validation / test indices made of whole groups: the groups in an order drawn from
    ``seed``, test filled first, then validation, then train, each until it holds its size (it may
    exceed it by less than one group). With one pair per group the sizes are exact."""
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    order = np.random.default_rng([seed, 24]).permutation(uniq)
    by_group = np.argsort(groups, kind="stable")
    starts = np.unique(groups[by_group], return_index=True)[1]
    members = dict(zip(uniq.tolist(), np.split(by_group, starts[1:])))
    out: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: []}
    filled = [0, 0, 0]
    split = 2
    for g in order.tolist():
        while split >= 0 and filled[split] >= sizes[split]:
            split -= 1
        if split < 0:
            break
        idx = members[g]
        out[split].append(idx)
        filled[split] += len(idx)
    return tuple(np.sort(np.concatenate(out[s])) if out[s] else np.zeros(0, dtype=np.int64) for s in range(3))
