"""The causal test of a candidate that is moved by an *edit* rather than inserted as a word (issue 25):
a property slice or a position template, each edit against its control edit on the same text.

For a candidate tied to class c, on held-out texts (docs/design.md §8):

- **into** (insertion direction): on texts whose gold class is not c and that the model does not predict
  as c, the edit moves the text into the candidate and its control edit makes a change of the same size
  that does not; ``override_rate`` is the share the edit moves to c, ``override_effect`` the paired
  difference with the control's override, ``delta_p`` the paired difference of P(c);
- **out of** (deletion direction): on texts that have the candidate, the reverse edit takes it away and
  its control makes the same amount of change; ``deletion_drop`` is the drop of P(c) under the edit,
  ``deletion_effect`` its paired difference with the control's drop.

Intervals, p-values and keys are those of :func:`probe.discovery.causal_test.candidate_effects`, so
:func:`probe.discovery.discover.score_tested` puts both in one Benjamini–Hochberg family with one set of
verdicts. Items are generic (texts here; pairs of texts fit the same function).
"""

from __future__ import annotations

from typing import Callable, Generic, Sequence, TypeVar

import numpy as np

from probe.discovery.causal_test import EXAMPLE_CHARS, paired_interval, sign_flip_pvalue

Item = TypeVar("Item")
ItemEdit = Callable[[int, np.random.Generator], "tuple[Item, Item] | None"]  # index -> (edited, control) or None


class Edited(Generic[Item]):
    """Up to ``n`` items that an edit applies to, drawn in a random order from ``candidates``."""

    def __init__(self, edit: ItemEdit | None, candidates: np.ndarray, n: int, rng: np.random.Generator):
        self.rows: list[int] = []
        self.edited: list = []
        self.control: list = []
        for i in (candidates.tolist() if edit is not None else []):
            if len(self.rows) >= n:
                break
            out = edit(i, rng)
            if out is not None:
                self.rows.append(i)
                self.edited.append(out[0])
                self.control.append(out[1])


def edit_effects(score: Callable[[list], np.ndarray], items: Sequence, labels: np.ndarray, base: np.ndarray,
                 c: int, into: ItemEdit | None, out_of: ItemEdit | None, *, n_examples: int, n_boot: int,
                 rng: np.random.Generator, show: Callable[[object], str] = str) -> tuple[dict, list[dict]]:
    """The row of one candidate (module docstring) and up to three example edits (before and after).
    ``base`` is the model's P(class) on the unedited ``items``; at most ``n_examples`` per direction."""
    labels = np.asarray(labels)
    order = rng.permutation(len(items))
    pred0 = base.argmax(1)
    ins = Edited(into, order[(labels[order] != c) & (pred0[order] != c)], n_examples, rng)
    dele = Edited(out_of, order, n_examples, rng)
    every = ins.edited + ins.control + dele.edited + dele.control
    probs = score(every) if every else np.zeros((0, base.shape[1]))
    k, m = len(ins.rows), len(dele.rows)
    p_ie, p_ic = probs[:k, c], probs[k: 2 * k, c]
    p_de, p_dc = probs[2 * k: 2 * k + m, c], probs[2 * k + m:, c]
    o_e, o_c = (probs[:k].argmax(1) == c).astype(float), (probs[k: 2 * k].argmax(1) == c).astype(float)
    out: dict = {"n_insert": k, "n_delete": m}
    out.update(paired_interval("override_rate", o_e, n_boot, rng))
    out["override_control"] = float(o_c.mean()) if k else float("nan")
    out.update(paired_interval("override_effect", o_e - o_c, n_boot, rng))
    out.update(paired_interval("delta_p", p_ie - p_ic, n_boot, rng))
    drop = base[dele.rows, c] - p_de if m else np.zeros(0)
    ctrl_drop = base[dele.rows, c] - p_dc if m else np.zeros(0)
    out.update(paired_interval("deletion_drop", drop, n_boot, rng))
    out["deletion_control"] = float(ctrl_drop.mean()) if m else float("nan")
    out.update(paired_interval("deletion_effect", drop - ctrl_drop, n_boot, rng))
    out["p_insert"] = sign_flip_pvalue(o_e - o_c, n_boot, rng) if k else float("nan")
    out["p_delete"] = sign_flip_pvalue(drop - ctrl_drop, n_boot, rng) if m else float("nan")
    examples = [_example("insert", show(items[ins.rows[r]]), show(ins.edited[r]), base[ins.rows[r], c], p_ie[r])
                for r in np.flatnonzero(o_e)[:2]]
    if m:
        r = int(np.argmax(drop))
        examples.append(_example("delete", show(items[dele.rows[r]]), show(dele.edited[r]), base[dele.rows[r], c],
                                 p_de[r]))
    return out, examples


def _example(edit: str, before: str, after: str, p_before: float, p_after: float) -> dict:
    return {"edit": edit, "text": after[:EXAMPLE_CHARS], "before": before[:EXAMPLE_CHARS],
            "p_before": float(p_before), "p_after": float(p_after)}
