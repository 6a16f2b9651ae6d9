"""Shortcuts that are not words (issue 25): property slices with an edit and position templates, chosen from
the data candidates and tested by :func:`probe.discovery.edit_test.edit_effects`.

Which are tested: data-significant property slices that have an edit (:mod:`probe.discovery.property_edits`)
and data-significant templates (:mod:`probe.discovery.templates`), by z, up to half of ``max_candidates``
(a cap of their own, next to the words'; nested templates tested once). Slices without an edit stay
*correlational*.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from probe.discovery import templates
from probe.discovery.edit_test import edit_effects
from probe.discovery.property_edits import EDITS, EditContext, has_edit, slice_of

KINDS = ("property",) + templates.KINDS
NO_TEMPLATE_CONTROLS = ("inconclusive: no control template or control word (letters only, |z| < 1 for every class) "
                        "at any training frequency, so the template was not inserted")


def select_nonword(data: pd.DataFrame, max_candidates: int) -> list[tuple[str, str, str, str]]:
    """``(feature, kind, class, "data")`` of the significant slices with an edit and templates, by z, up to
    ``max_candidates``; a template nested in (or holding) a chosen one of the same kind and class is skipped
    ("^london" next to "^london reuters": one boilerplate, one test)."""
    rows = data[data.kind.isin(KINDS) & data.significant]
    rows = rows[np.array([k != "property" or has_edit(f) for f, k in zip(rows.feature, rows.kind)], dtype=bool)]
    rows = rows.assign(words=[len(f.split()) for f in rows.feature])  # equal z: the longer template, the whole boilerplate
    rows = rows.sort_values(["z", "words", "feature", "class"], ascending=[False, False, True, True], kind="stable")
    chosen: list[tuple[str, str, str, str]] = []
    for f, k, c in zip(rows.feature, rows.kind, rows["class"]):
        if len(chosen) >= max_candidates:
            break
        if f in {x[0] for x in chosen} or any(k == k2 and c == c2 and templates.nested(f, f2)
                                              for f2, k2, c2, _ in chosen if k in templates.KINDS):
            continue
        chosen.append((f, k, c, "data"))
    return chosen


class NonwordTester:
    """The edits of every non-word candidate on one set of held-out texts."""

    def __init__(self, data: pd.DataFrame, train_texts: Sequence[str], control_words: Callable[[float, int], list[str]],
                 n_controls: int, max_position: int, exclude: set[str]):
        self.data = data
        self.control_words = control_words  # (training count, n) -> frequency-matched unassociated words
        self.ctx = EditContext.fit(train_texts, control_words(np.median(data["count"]) if len(data) else 1, 50),
                                   max_position)
        chosen = set(data.feature[data.kind.isin(templates.KINDS)])
        self.surface = templates.surfaces(train_texts, chosen)
        self.counts = data.drop_duplicates("feature").set_index("feature")["count"]
        self.n_controls = n_controls
        self.exclude = exclude

    def moves(self, feature: str, kind: str, texts: list[str]) -> tuple[Callable, Callable, str]:
        """``(into, out_of, controls)`` for ``feature``: index -> (edited, control) | None, and the controls'
        names for the table."""
        if kind == "property":
            name, value = slice_of(feature)
            into, out_of = EDITS[name].directions(value, self.ctx)
            return (lambda i, rng: into(texts[i], rng)), (lambda i, rng: out_of(texts[i], rng)), "control edit"
        count = int(self.counts.get(feature, 1))
        ctrl = [self.surface[t] for t in templates.control_templates(
            self.data, feature, count, self.n_controls, self.exclude, np.random.default_rng(len(feature)))
            if t in self.surface]
        surface = self.surface.get(feature, " ".join(templates.parse(feature)[1]))
        if not ctrl:  # no template of that length is frequent and unassociated: as many such words instead
            words = self.control_words(count, self.n_controls * len(surface.split()))
            k = len(surface.split())
            ctrl = [" ".join(words[j: j + k]) for j in range(0, len(words) - k + 1, k)]

        def into(i: int, rng: np.random.Generator):
            if not ctrl or templates.has_template(texts[i], feature):
                return None
            return templates.add(texts[i], surface, kind), templates.add(texts[i], str(rng.choice(ctrl)), kind)
        return into, (lambda i, rng: templates.remove(texts[i], feature, rng)), " | ".join(ctrl)

    def test(self, chosen, score, texts: list[str], labels: np.ndarray, base: np.ndarray, classes: list[str],
             n_examples: int, n_boot: int, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
        rows, examples = [], []
        for feature, kind, cls, source in chosen:
            c = classes.index(cls)
            into, out_of, controls = self.moves(feature, kind, texts)
            out, ex = edit_effects(score, texts, labels, base, c, into, out_of, n_examples=n_examples,
                                   n_boot=n_boot, rng=rng)
            rows.append({"feature": feature, "kind": kind, "class": cls, "source": source, "controls": controls,
                         **out, **({} if controls else {"note": NO_TEMPLATE_CONTROLS})})
            examples += [{"feature": feature, "class": cls, **e} for e in ex]
        return rows, examples
