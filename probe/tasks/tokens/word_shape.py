"""Token-level properties as tagger shortcuts (issue 25; docs/design.md §8): a capitalised word.

Candidate: every word of the training sentences is a trial; its property value ``capitalised=v`` (first
character an upper-case letter, :mod:`probe.tasks.tokens.properties`) against whether it begins an entity
of type T. z and PMI as for markers (:func:`probe.discovery.candidates.association_rows`; p0 = the share of
all words that begin a T entity). The edit changes the case of one letter, so the sentence keeps its words
and every gold tag stays on its word:

- into (``capitalised=1``, type T): a lower-case word outside every entity, not the sentence's first, of at
  least two letters, gets an upper-case first letter ("market" -> "Market"); control: its *second* letter
  upper-cased instead ("mArket": one letter's case changed, still not capitalised). Override = the tagger
  now types the word T;
- out of: the first word of a T span that the tagger types T, capitalised with a lower-case second letter,
  gets a lower-case first letter ("London" -> "london"); control: its second letter upper-cased ("LOndon", still capitalised).
  Drop = [typed T before] - [typed T after].

``capitalised=0`` uses the same edits reversed. Under an uncased tokenizer the edit changes no id and is not run
(:mod:`probe.tasks.tokens.property_test`). The properties of an entity span (capitalised, all caps, a digit, first
in the sentence) are :mod:`probe.tasks.tokens.span_edits`; marker words before a span are
:mod:`probe.tasks.tokens.markers`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from probe.discovery.candidates import association_rows, empty_table
from probe.discovery.causal_test import paired_interval, sign_flip_pvalue

NONE = "(none)"


def is_capitalised(word: str) -> bool:
    return word[:1].isalpha() and word[:1].isupper()


def _editable(word: str) -> bool:
    """Two letters first, the second lower-case: a word whose first / second letter case can be changed."""
    return len(word) >= 2 and word[0].isalpha() and word[1].isalpha() and word[1].islower()


def capitalise(word: str) -> tuple[str, str]:
    """``(Word, wOrd)``: the edit into ``capitalised=1`` and its control."""
    return word[0].upper() + word[1:], word[0] + word[1].upper() + word[2:]


def decapitalise(word: str) -> tuple[str, str]:
    """``(word, WOrd)``: the edit out of ``capitalised=1`` and its control."""
    return word[0].lower() + word[1:], word[0] + word[1].upper() + word[2:]


def shape_counts(sentences: Sequence[Sequence[str]], entity_starts: Sequence[Sequence[str | None]],
                 types: Sequence[str], min_count: int) -> pd.DataFrame:
    """Rows (kind ``word shape``) of ``capitalised=v`` per entity type: every word a trial, the outcome the
    type of the entity it begins (none)."""
    classes = list(types) + [NONE]
    caps = np.array([is_capitalised(w) for s in sentences for w in s], dtype=bool)
    labels = np.array([classes.index(t) if t is not None else len(types) for s in entity_starts for t in s])
    presence = {(f"capitalised={v}", "word shape"): caps == bool(v) for v in (0, 1)
                if (caps == bool(v)).sum() >= min_count}
    if not presence or labels.size == 0:
        return empty_table()
    rows = association_rows(presence, labels, classes)
    return rows[rows["class"] != NONE].reset_index(drop=True)


def shape_effects(feature: str, t: str, test, spans, clean_types, predict, n_examples: int, n_boot: int,
                  rng: np.random.Generator) -> dict:
    """Into / out-of effects of ``capitalised=v`` for entity type ``t`` (module docstring)."""
    value = int(feature.rsplit("=", 1)[1])
    inside = {(i, j) for i, s, e, _ in spans for j in range(s, e)}
    # into capitalised=1: O words (lower-case); into capitalised=0: the reverse, on capitalised O words
    outside = [(i, j) for i, sent in enumerate(test) for j, w in enumerate(sent.words)
               if j > 0 and (i, j) not in inside and _editable(w) and is_capitalised(w) != bool(value)]
    pick = rng.permutation(len(outside))[:n_examples]
    ins = [outside[k] for k in sorted(pick)]
    dele = [(k, i, s) for k, (i, s, _, typ) in enumerate(spans) if typ == t and clean_types[k] == t
            and _editable(test[i].words[s]) and is_capitalised(test[i].words[s]) == bool(value)][:n_examples]

    def edited(i: int, j: int, into: bool) -> tuple[list[str], list[str]]:
        # into capitalised=1 and out of capitalised=0 capitalise; the other two de-capitalise
        new, ctrl = (capitalise if into == bool(value) else decapitalise)(test[i].words[j])
        words = list(test[i].words)
        return words[:j] + [new] + words[j + 1:], words[:j] + [ctrl] + words[j + 1:]

    ins_pairs = [edited(i, j, True) for i, j in ins]
    del_pairs = [edited(i, s, False) for _, i, s in dele]
    sents = [p[0] for p in ins_pairs] + [p[1] for p in ins_pairs] + [p[0] for p in del_pairs] + [p[1] for p in del_pairs]
    pos = [j for _, j in ins] * 2 + [s for *_, s in dele] * 2
    hit = np.array([x == t for x in predict(sents, pos)], dtype=float)
    k, m = len(ins), len(dele)
    override, ctrl = hit[:k], hit[k: 2 * k]
    drop, ctrl_drop = 1.0 - hit[2 * k: 2 * k + m], 1.0 - hit[2 * k + m:]
    out: dict = {"n_insert": k, "n_delete": m, "controls": "one letter's case (the second)"}
    out.update(paired_interval("override_rate", override, n_boot, rng))
    out["override_control"] = float(ctrl.mean()) if k else float("nan")
    out.update(paired_interval("override_effect", override - ctrl, n_boot, rng))
    out.update(paired_interval("deletion_drop", drop, n_boot, rng))
    out["deletion_control"] = float(ctrl_drop.mean()) if m else float("nan")
    out.update(paired_interval("deletion_effect", drop - ctrl_drop, n_boot, rng))
    out["p_insert"] = sign_flip_pvalue(override - ctrl, n_boot, rng) if k else float("nan")
    out["p_delete"] = sign_flip_pvalue(drop - ctrl_drop, n_boot, rng) if m else float("nan")
    return out
