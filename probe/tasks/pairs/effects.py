"""Causal tests on pairs: an edit against its control, on held-out pairs, for a feature tied to class c.

Like discovery's word test (:mod:`probe.discovery.causal_test`, docs/design.md §8), in two directions:

- **raise** (insertion): on pairs whose gold class is not c and that the model does not predict as
  c, the edit (a word inserted into one side, or a relation raised, :mod:`probe.tasks.pairs.edits`)
  and its control are applied to the same pair; ``override_rate`` is the share the edit moves to c,
  ``override_effect`` the paired difference with the control's, ``delta_p`` the paired difference of
  P(c);
- **lower** (deletion): on pairs that have the feature, the edit removes or lowers it and the control
  makes the same amount of change; ``deletion_drop`` is the drop of P(c) under the edit,
  ``deletion_effect`` its paired difference with the control's drop.

Intervals are percentile bootstrap 95 % intervals, p-values one-sided sign-flip permutation tests of
the paired differences; the keys are those of :func:`probe.discovery.causal_test.candidate_effects`, so
:func:`probe.discovery.discover.score_tested` gives verdicts to both.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from probe.discovery.causal_test import EXAMPLE_CHARS, paired_interval, sign_flip_pvalue

Pair = tuple[str, str]
PairEdit = Callable[[int, np.random.Generator], tuple[Pair, Pair] | None]  # pair index -> (edited, control)
PairScorer = Callable[[list[str], list[str]], np.ndarray]


def _apply(edit: PairEdit | None, candidates: np.ndarray, n: int, rng) -> tuple[list[int], list[Pair], list[Pair]]:
    rows, edited, control = [], [], []
    if edit is None:
        return rows, edited, control
    for i in candidates.tolist():
        if len(rows) >= n:
            break
        out = edit(i, rng)
        if out is not None:
            rows.append(i)
            edited.append(out[0])
            control.append(out[1])
    return rows, edited, control


def edit_effects(score: PairScorer, pairs: Sequence[Pair], labels: np.ndarray, base: np.ndarray, c: int,
                 raise_edit: PairEdit | None, lower_edit: PairEdit | None, *, n_examples: int = 150,
                 n_boot: int = 1000, rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """The row of one feature (module docstring) and up to three example edits. ``base`` is the model's
    P(class) on the unedited ``pairs``; at most ``n_examples`` pairs per direction, drawn at random."""
    labels = np.asarray(labels)
    order = rng.permutation(len(pairs))
    pred0 = base.argmax(1)
    ins, ins_e, ins_c = _apply(raise_edit, order[(labels[order] != c) & (pred0[order] != c)], n_examples, rng)
    dele, del_e, del_c = _apply(lower_edit, order, n_examples, rng)
    every = ins_e + ins_c + del_e + del_c
    probs = score([a for a, _ in every], [b for _, b in every]) if every else np.zeros((0, base.shape[1]))
    k, m = len(ins), len(dele)
    p_ie, p_ic = probs[:k, c], probs[k: 2 * k, c]
    p_de, p_dc = probs[2 * k: 2 * k + m, c], probs[2 * k + m:, c]
    o_e, o_c = probs[:k].argmax(1) == c, probs[k: 2 * k].argmax(1) == c
    out: dict = {"n_insert": k, "n_delete": m}
    out.update(paired_interval("override_rate", o_e.astype(float), n_boot, rng))
    out["override_control"] = float(o_c.mean()) if k else float("nan")
    effect = o_e.astype(float) - o_c.astype(float)
    out.update(paired_interval("override_effect", effect, n_boot, rng))
    out.update(paired_interval("delta_p", p_ie - p_ic, n_boot, rng))
    drop = base[dele, c] - p_de if m else np.zeros(0)
    ctrl_drop = base[dele, c] - p_dc if m else np.zeros(0)
    out.update(paired_interval("deletion_drop", drop, n_boot, rng))
    out["deletion_control"] = float(ctrl_drop.mean()) if m else float("nan")
    out.update(paired_interval("deletion_effect", drop - ctrl_drop, n_boot, rng))
    out["p_insert"] = sign_flip_pvalue(effect, n_boot, rng) if k else float("nan")
    out["p_delete"] = sign_flip_pvalue(drop - ctrl_drop, n_boot, rng) if m else float("nan")
    examples = [{"edit": "insert", "text": _show(ins_e[r]), "p_before": float(base[ins[r], c]),
                 "p_after": float(p_ie[r])} for r in np.flatnonzero(o_e)[:2]]
    if m:
        r = int(np.argmax(drop))
        examples.append({"edit": "delete", "text": _show(del_e[r]), "p_before": float(base[dele[r], c]),
                         "p_after": float(p_de[r])})
    return out, examples


def _show(pair: Pair) -> str:
    """An edited pair for the report: both sides, cut to discovery's example length."""
    half = EXAMPLE_CHARS // 2
    return f"{pair[0][:half]} ‖ {pair[1][:half]}"
