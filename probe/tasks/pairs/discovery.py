"""Discovery on pairs: shortcuts nobody planted, on either side or between the two texts.

Candidates, from the training pairs:

- words and bigrams **per side**: Gardner et al. 2021's z (:func:`probe.discovery.candidates.word_association`)
  computed on the first texts and on the second texts separately, named ``first:<word>`` and
  ``second:<word>`` (a hypothesis-only cue is a ``second:`` word);
- **relational properties** (:mod:`probe.tasks.pairs.relations`), named ``pair:<property>``: the z of
  the slice where the property is high (top tertile of overlap or length difference, a negation present,
  topics matching) per class. Every relation is tested, significant or not, so each gets a verdict.

Bonferroni at ``alpha`` runs over every (candidate, class) row. Each chosen candidate is tested on
held-out pairs against controls (:mod:`probe.tasks.pairs.effects`): a word by insertion into its side
(control: a word with no label association, |z| < 1, of similar count on that side, at the same
position) and by deletion (control: as many random words of that side); a relation by its edits
(:mod:`probe.tasks.pairs.edits`, control words without label association, |z| < 1). Verdicts and BH q-values are discovery's
(:func:`probe.discovery.discover.score_tested`).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pandas as pd

from probe.data.planted import insert_token
from probe.discovery.candidates import association_rows, mark_significant, word_association, word_key
from probe.discovery.causal_test import contains, delete_feature, delete_random
from probe.discovery.discover import score_tested
from probe.tasks.pairs import edits
from probe.tasks.pairs.data import PairTable
from probe.tasks.pairs.effects import PairScorer, edit_effects
from probe.tasks.pairs.relations import relation_labels, relation_values

SIDES = ("first", "second")
EDITED_WORDS = 2  # content or stop words an overlap or length edit changes


def side_candidates(table: PairTable, min_count: int, bigrams: bool = True) -> pd.DataFrame:
    """Word and bigram rows of each side, the feature named ``<side>:<word>``, with a ``side`` column."""
    parts = []
    for side, texts in zip(SIDES, (table.firsts, table.seconds)):
        rows = word_association(texts, table.labels, table.classes, min_count, bigrams)
        parts.append(rows.assign(feature=side + ":" + rows.feature.astype(str), side=side))
    return pd.concat(parts, ignore_index=True)


def relation_candidates(table: PairTable) -> pd.DataFrame:
    """One row per (relation, class): the z of the slice where the relation is high."""
    values = relation_values(table.firsts, table.seconds, table.first_source or None, table.second_source or None)
    labels, _ = relation_labels(values)
    presence = {(f"pair:{name}", "relation"): y == y.max() for name, y in labels.items() if 0 < (y == y.max()).sum()
                < len(y)}
    if not presence:
        return pd.DataFrame(columns=["feature", "kind", "class", "count", "class_count", "p0", "share", "z", "pmi"])
    return association_rows(presence, table.labels, table.classes).assign(side="pair")


def relation_edit(name: str, table: PairTable, matcher: edits.FrequencyMatcher):
    """``(raise, lower)`` pair edits (:data:`probe.tasks.pairs.effects.PairEdit`) of relation ``name``."""
    a, b = table.firsts, table.seconds
    wrap = (lambda i, out: None if out is None else ((a[i], out[0]), (a[i], out[1])))
    if name == "lexical_overlap":
        return (lambda i, rng: wrap(i, edits.overlap_raise(a[i], b[i], EDITED_WORDS, matcher, rng)),
                lambda i, rng: edits.overlap_lower(a[i], b[i], EDITED_WORDS, matcher, rng))
    if name == "negation":
        return (lambda i, rng: wrap(i, edits.negation_raise(b[i], matcher, rng)),
                lambda i, rng: wrap(i, edits.negation_lower(b[i], rng)))
    if name == "length_difference":
        return (lambda i, rng: wrap(i, edits.length_raise(b[i], EDITED_WORDS, matcher, rng)),
                lambda i, rng: wrap(i, edits.length_lower(b[i], EDITED_WORDS, matcher, rng)))
    if name == "topic_match":
        src1, src2 = table.first_source, table.second_source

        def swap(i, rng, match):
            if (src1[i] == src2[i]) == match:
                return None  # already there: nothing to move
            out = edits.topic_swaps(src1, src2, i, match, rng)
            return None if out is None else ((a[i], b[out[0]]), (a[i], b[out[1]]))
        return (lambda i, rng: swap(i, rng, True), lambda i, rng: swap(i, rng, False))
    raise ValueError(f"unknown relation {name!r}")


def word_edit(side: str, word: str, controls: list[str], table: PairTable, max_position: int):
    """``(raise, lower)``: insert ``word`` into ``side`` (control: one of ``controls`` at the same position),
    delete it (control: as many random words of that side)."""
    k = SIDES.index(side)

    def put(i, text):
        return (text, table.seconds[i]) if k == 0 else (table.firsts[i], text)

    def insert(i, rng):
        text = table.pairs[i][k]
        if contains(text, word) or not controls:
            return None
        pos = int(rng.integers(min(max_position, len(text.split())) + 1))
        return put(i, insert_token(text, word, pos)), put(i, insert_token(text, str(rng.choice(controls)), pos))

    def delete(i, rng):
        text = table.pairs[i][k]
        if not contains(text, word):
            return None
        gone, drop = delete_feature(text, word)
        return put(i, gone), put(i, delete_random(text, drop, max(len(drop), 1), rng))
    return insert, delete


def side_controls(data: pd.DataFrame, side: str, count: int, exclude: set[str], n: int,
                  rng: np.random.Generator) -> list[str]:
    """``n`` words of ``side`` with |z| < 1 for every class, letters only, count within a factor of 2 of
    ``count`` (the closest counts where too few)."""
    words = data[(data.kind == "word") & (data.side == side)]
    stats = words.groupby("feature").agg(count=("count", "first"), zmax=("z", lambda z: np.abs(z).max()))
    names = stats.index.str.split(":", n=1).str[1]
    ok = stats[(stats.zmax < 1) & names.str.isalpha() & ~names.isin(list(exclude))]
    if ok.empty:
        return []
    dist = np.abs(np.log2(ok["count"].to_numpy(dtype=float) / max(count, 1)))
    near = ok.index[np.argsort(dist, kind="stable")[: max(n, int((dist <= 1).sum()))]]
    picked = rng.choice(np.asarray(near), min(n, len(near)), replace=False)
    return sorted(str(f).split(":", 1)[1] for f in picked)


def _choose(data: pd.DataFrame, planted: dict[str, str], hide_planted: bool, max_candidates: int) -> list[tuple]:
    """``(feature, kind, class, source)``: planted (unless hidden), every relation, then significant words
    and bigrams by z."""
    chosen: dict[str, tuple] = {}
    if not hide_planted:
        chosen.update({f: (f, "word", c, "planted") for f, c in planted.items()})
    rel = data[data.kind == "relation"].sort_values(["z", "feature"], ascending=[False, True], kind="stable")
    for f, c in zip(rel.feature, rel["class"]):
        chosen.setdefault(f, (f, "relation", c, "data"))
    words = data[data.kind.isin(["word", "bigram"]) & data.significant].sort_values(
        ["z", "feature", "class"], ascending=[False, True, True], kind="stable")
    for f, kind, c in zip(words.feature, words.kind, words["class"]):
        if len(chosen) >= max_candidates + len(rel.feature.unique()):
            break
        chosen.setdefault(f, (f, kind, c, "data"))
    return list(chosen.values())


def discover_pairs(score: PairScorer, train: PairTable, test: PairTable, *, planted: dict[str, str] | None = None,
                   hide_planted: bool = False, min_count: int = 20, alpha: float = 0.01, max_candidates: int = 20,
                   n_examples: int = 150, controls: int = 5, q: float = 0.05, bootstrap: int = 1000, seed: int = 0,
                   min_effect: float = 0.1, max_position: int = 5) -> pd.DataFrame:
    """One row per tested candidate (module docstring), ranked as discovery ranks, then the untested
    significant rows. ``planted``: ``{"<side>:<token>": class}``. ``attrs``: ``examples``, ``seconds``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 73])
    planted = {f.split(":", 1)[0] + ":" + word_key(f.split(":", 1)[1]): c for f, c in (planted or {}).items()}
    data = mark_significant(pd.concat([side_candidates(train, min_count), relation_candidates(train)],
                                      ignore_index=True), alpha)
    chosen = _choose(data, planted, hide_planted, max_candidates)
    base = score(test.firsts, test.seconds)
    word_rows = data[data.kind == "word"]
    associated = {f.split(":", 1)[1] for f, z in zip(word_rows.feature, word_rows.z) if abs(z) >= 1}
    matcher = edits.FrequencyMatcher(train.firsts + train.seconds, avoid=associated)
    counts = data.drop_duplicates("feature").set_index("feature")["count"]
    rows, examples = [], []
    for feature, kind, cls, source in chosen:
        side, name = feature.split(":", 1)
        if kind == "relation":
            raise_edit, lower_edit = relation_edit(name, test, matcher)
            words = []
        else:
            words = side_controls(data, side, int(counts.get(feature, min_count)), {name}, controls,
                                  np.random.default_rng([seed, len(name)]))
            raise_edit, lower_edit = word_edit(side, name, words, test, max_position)
        out, ex = edit_effects(score, test.pairs, test.labels, base, train.classes.index(cls), raise_edit, lower_edit,
                               n_examples=n_examples, n_boot=bootstrap, rng=rng)
        rows.append({"feature": feature, "kind": kind, "side": side if side in SIDES else "pair", "class": cls,
                     "source": source, "controls": " ".join(words), **out})
        examples += [{"feature": feature, "class": cls, **e} for e in ex]
    table = _assemble(score_tested(pd.DataFrame(rows), data, q, min_effect), data, chosen, planted)
    table.attrs["examples"] = pd.DataFrame(examples, columns=["feature", "class", "edit", "text", "p_before",
                                                              "p_after"])
    table.attrs["seconds"] = time.perf_counter() - t0
    return table


def _assemble(tested: pd.DataFrame, data: pd.DataFrame, chosen, planted: dict[str, str]) -> pd.DataFrame:
    done = {(f, c) for f, _, c, _ in chosen}
    rest = data[data.significant & ~pd.Series([(f, c) in done for f, c in zip(data.feature, data["class"])],
                                              index=data.index, dtype=bool)].sort_values("z", ascending=False)
    rest = rest.assign(source="data", verdict="not tested").drop(columns=["z_threshold"])
    table = pd.concat([tested, rest], ignore_index=True)
    table["planted"] = table.feature.isin(list(planted))
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table
