"""The causal test of a tagger's token-level properties (issue 25; docs/design.md §8): span properties
(:mod:`probe.tasks.tokens.span_edits`) and the capitalised word (:mod:`probe.tasks.tokens.word_shape`), in the
Bonferroni and Benjamini–Hochberg families of the marker words (:mod:`probe.tasks.tokens.markers`).

A span property tied to entity type T runs :func:`probe.discovery.edit_test.edit_effects` with spans as the
items and the tagger's predicted type of a span's first word as a one-hot "probability": *into*, on held-out
spans whose gold type is not T and that the tagger does not type T, override = the edited span is typed T,
against its control edit on the same sentence; *out of*, on spans of type T that the tagger types T, drop =
1 − [still typed T], against the control's drop. The same intervals, sign-flip p-values and examples as for
text classification.

An edit the tokenizer cannot see (a case edit under an uncased tokenizer: the same ids with and without it)
is not run: such a property cannot be used by this model, and an effect of 0 would read as evidence; its row
says so and its verdict is *correlational* (``unseen``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from probe.discovery.edit_test import edit_effects
from probe.tasks.tokens.span_edits import KIND, ONE_WAY, Span, SpanContext, moves
from probe.tasks.tokens.word_shape import capitalise, decapitalise, shape_effects

UNSEEN = ("correlational: the tokenizer gives the same ids with and without the edit (it is uncased), so this model "
          "cannot see the property; not tested")
CHECKED = 50  # edits whose ids are compared with the unedited sentence's before a property is tested
EXAMPLE_COLUMNS = ["feature", "class", "edit", "text", "before", "p_before", "p_after"]


def edit_seen(tokenizer, pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> bool:
    """Whether the tokenizer gives different ids for at least one ``(original, edited)`` word list (True
    when there is nothing to compare)."""
    if not pairs:
        return True
    enc = tokenizer([list(a) for a, _ in pairs] + [list(b) for _, b in pairs], is_split_into_words=True,
                    add_special_tokens=False)["input_ids"]
    return any(x != y for x, y in zip(enc[: len(pairs)], enc[len(pairs):]))


def _case_pairs(test, n: int) -> list[tuple[list[str], list[str]]]:
    """Sentences with one word's first letter's case changed (the capitalised word's edit)."""
    out = []
    for sent in test:
        j = next((j for j, w in enumerate(sent.words) if len(w) >= 2 and w[0].isalpha() and w[1].islower()), None)
        if j is not None:
            w = sent.words[j]
            new = (decapitalise if w[0].isupper() else capitalise)(w)[0]
            out.append((list(sent.words), list(sent.words[:j]) + [new] + list(sent.words[j + 1:])))
        if len(out) >= n:
            break
    return out


class PropertyTester:
    """The edits of every token-level property candidate on one set of held-out spans."""

    def __init__(self, test, spans, clean_types: Sequence[str | None], types: Sequence[str], predict, tokenizer,
                 neutral: Sequence[str]):
        self.test, self.spans, self.types = test, spans, list(types)
        self.items = [Span(test[i].words, test[i].tags, s, e) for i, s, e, _ in spans]
        self.labels = np.array([self.types.index(t) if t in self.types else len(self.types) for *_, t in spans])
        self.clean = list(clean_types)
        self.base = self._one_hot(self.clean)
        self.predict, self.tokenizer = predict, tokenizer
        self.ctx = SpanContext(list(neutral))
        self.seen: dict[str, bool] = {}  # property name (or the capitalised word) -> whether the tokenizer sees it

    def _one_hot(self, typed: Sequence[str | None]) -> np.ndarray:
        k = len(self.types)
        idx = [self.types.index(t) if t in self.types else k for t in typed]
        return np.eye(k + 1)[idx] if idx else np.zeros((0, k + 1))

    def score(self, reads: list[tuple[list[str], int]]) -> np.ndarray:
        """Edited sentences -> one-hot of the predicted type of the span's first word (last column: none)."""
        return self._one_hot(self.predict([w for w, _ in reads], [p for _, p in reads]))

    def _moves(self, feature: str, t: str) -> tuple[Callable, Callable]:
        into, out_of = moves(feature, self.ctx)
        c = self.types.index(t)

        def out_of_typed(k: int, rng: np.random.Generator):  # spans of type T that the tagger types T
            return out_of(self.items[k], rng) if self.labels[k] == c and self.clean[k] == t else None
        return (lambda k, rng: into(self.items[k], rng)), out_of_typed

    def _seen(self, into: Callable, out_of: Callable, seed: int) -> bool:
        rng = np.random.default_rng(seed)
        pairs = []
        for k in range(len(self.items)):
            if len(pairs) >= CHECKED:
                break
            for move in (into, out_of):
                out = move(k, rng)
                if out is not None:
                    pairs.append((self.items[k].words, out[0][0]))
        return edit_seen(self.tokenizer, pairs)

    def span_row(self, feature: str, t: str, n_examples: int, n_boot: int,
                 rng: np.random.Generator) -> tuple[dict, list[dict]]:
        """The row of one span property and its example edits."""
        into, out_of = self._moves(feature, t)
        row: dict = {"feature": feature, "kind": KIND, "class": t, "source": "data", "controls": "control edit"}
        name = feature.rsplit("=", 1)[0]
        if name not in self.seen:
            self.seen[name] = self._seen(into, out_of, len(feature))
        if not self.seen[name]:
            return {**row, "n_insert": 0, "n_delete": 0, "p_insert": np.nan, "p_delete": np.nan, "note": UNSEEN,
                    "unseen": True}, []
        out, examples = edit_effects(self.score, self.items, self.labels, self.base, self.types.index(t), into,
                                     out_of, n_examples=n_examples, n_boot=n_boot, rng=rng,
                                     show=lambda x: " ".join(x.words if isinstance(x, Span) else x[0]))
        row.update(out)
        if name in ONE_WAY:
            row["note"] = ONE_WAY[name]
        return row, [{"feature": feature, "class": t, **e} for e in examples]

    def shape_row(self, feature: str, t: str, n_examples: int, n_boot: int, rng: np.random.Generator) -> dict:
        """The row of the capitalised word (:func:`probe.tasks.tokens.word_shape.shape_effects`)."""
        row: dict = {"feature": feature, "kind": "word shape", "class": t, "source": "data"}
        if "capitalised" not in self.seen:
            self.seen["capitalised"] = edit_seen(self.tokenizer, _case_pairs(self.test, CHECKED))
        if not self.seen["capitalised"]:
            return {**row, "controls": "one letter's case (the second)", "n_insert": 0, "n_delete": 0,
                    "p_insert": np.nan, "p_delete": np.nan, "note": UNSEEN, "unseen": True}
        return {**row, **shape_effects(feature, t, self.test, self.spans, self.clean, self.predict, n_examples,
                                       n_boot, rng)}


def property_rows(data: pd.DataFrame, tester: PropertyTester, max_candidates: int, n_examples: int, n_boot: int,
                  rng: np.random.Generator) -> tuple[list[tuple[str, str]], list[dict], list[dict]]:
    """The tested ``(feature, type)`` pairs, their rows and example edits: the significant capitalised-word and
    span-property slices by z, up to ``max_candidates`` run (a cap of their own, next to the markers'; one whose
    edit the tokenizer cannot see is listed, *correlational*, without taking a place)."""
    rows = data[data.significant & data.kind.isin(["word shape", KIND])]
    rows = rows.sort_values(["z", "feature", "class"], ascending=[False, True, True], kind="stable")
    chosen, out, examples, run = [], [], [], 0
    for f, kind, t in zip(rows.feature, rows.kind, rows["class"]):
        if run >= max_candidates:
            break
        chosen.append((f, t))
        if kind == KIND:
            row, ex = tester.span_row(f, t, n_examples, n_boot, rng)
            examples += ex
        else:
            row = tester.shape_row(f, t, n_examples, n_boot, rng)
        out.append(row)
        run += not row.get("unseen", False)  # an edit the model cannot see costs nothing and takes no place
    return chosen, out, examples
