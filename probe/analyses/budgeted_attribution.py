"""Attributions of one model and partition measured to a precision budget (``analyses.precision:
budget``; docs/design.md §5, "Precision budgets"), for every task kind: texts, pairs of texts, and a
tagger's sentences with the word whose tag each one explains (``positions``).

Per model and partition the examples are taken in a seeded random order and attributed in batches of
``attribution_batch`` by the lead method (integrated gradients when configured, with
:func:`probe.analyses.attribution_budget.adaptive_ig`'s steps) until the 95 % half-width of the
headline quantity is at most ``attribution_half_width`` (:func:`probe.analyses.budget.sequential_mean`),
or ``attribution_examples`` are used. The headline quantity is the attribution share of the planted
token (conflicting and aligned partitions) or of the top word (clean). The other gradient methods then
explain the same examples; occlusion scores the words they rank plus a random control sample
(:func:`probe.analyses.attribution_budget.occlusion_subsets`); ERASER (where the kind runs it) uses the
same examples.
"""

from __future__ import annotations

import numpy as np

from probe.analyses.attribution import WordAttributions, word_attributions
from probe.analyses.attribution_metrics import token_positions
from probe.analyses.attribution_budget import (adaptive_ig, impute_unoccluded, occlusion_subsets, over_tolerance,
                                               steps_summary)
from probe.analyses.budget import Stop, sequential_mean


def headline(attrs: list[WordAttributions], token: str | None) -> np.ndarray:
    """Per example: the share of absolute attribution on ``token``'s words (NaN where it is absent),
    or without a token the share of the top word."""
    out = []
    for a in attrs:
        mag = np.abs(a.scores)
        total = mag.sum()
        if token is None:
            out.append(mag.max() / total if mag.size and total > 0 else np.nan)
        else:
            pos = token_positions(a.words, token)
            out.append(mag[pos].sum() / total if pos.size and total > 0 else np.nan)
    return np.asarray(out, dtype=np.float64)


class _Explainer:
    """One model's attributions by method, remembering integrated gradients' steps per example."""

    def __init__(self, config, model, tokenizer) -> None:
        self.a, self.model, self.tokenizer, self.max_length = config.analyses, model, tokenizer, config.task.max_length
        self.steps: list[np.ndarray] = []

    def __call__(self, method: str, texts: list, positions: list[int] | None, **kwargs) -> list[WordAttributions]:
        if method == "integrated_gradients":
            attrs, steps = adaptive_ig(self.model, self.tokenizer, texts, start=self.a.ig_steps_start,
                                       max_steps=self.a.ig_steps_max, tolerance=self.a.ig_tolerance,
                                       max_length=self.max_length, word_positions=positions)
            self.steps.append(steps)
            return attrs
        return word_attributions(self.model, self.tokenizer, texts, method, max_length=self.max_length,
                                 word_positions=positions, **kwargs)


def budgeted_partition(config, model, mname: str, partition, tokenizer, seed: int,
                       positions=None) -> tuple[dict, list[Stop]]:
    """``({method: (texts, indices, attributions)}, stops)`` of one model and ``partition`` = ``(partition,
    feature, token, texts, indices)``. ``positions`` (token classifiers): per text, the word whose tag is
    explained (:func:`probe.analyses.attribution.word_attributions`' ``word_positions``)."""
    a = config.analyses
    part, feature, token, texts, idx = partition
    methods = list(a.attribution_methods)
    gradient = [m for m in methods if m != "occlusion"]
    lead = gradient[0] if gradient else "occlusion"
    explain = _Explainer(config, model, tokenizer)
    order = np.random.default_rng([seed, 14, 2]).permutation(len(texts))
    lead_attrs: list[WordAttributions] = []

    def at(chosen: np.ndarray) -> list[int] | None:
        return None if positions is None else [int(positions[i]) for i in chosen]

    def batch_values(b: np.ndarray) -> np.ndarray:
        attrs = explain(lead, [texts[i] for i in order[b]], at(order[b]))
        lead_attrs.extend(attrs)
        return headline(attrs, token)

    _, stop = sequential_mean(batch_values, len(texts), a.attribution_batch, a.attribution_half_width)
    sorting = np.argsort(order[: stop.used], kind="stable")  # index order, as the precise mode has them (the
    chosen = order[: stop.used][sorting]                        # ERASER random orders then match when all are used)
    lead_attrs = [lead_attrs[k] for k in sorting]
    sub_texts, sub_idx = [texts[i] for i in chosen], idx[chosen]
    attrs = {lead: lead_attrs}
    for m in gradient[1:]:
        attrs[m] = explain(m, sub_texts, at(chosen))
    keys = dict(model=mname, partition=part, property=feature or "task")
    steps = steps_summary(np.concatenate(explain.steps)) if explain.steps else ""
    if explain.steps:
        over = over_tolerance(attrs["integrated_gradients"], a.ig_tolerance)
        steps += f" steps; {over} above delta {a.ig_tolerance:g} at {a.ig_steps_max}" if over else " steps"
    stops = [Stop("attribution", stop.used, len(texts), stop.reason, dict(keys, method=lead), steps, stop.width,
                  stop.target)]
    if "occlusion" in methods and gradient:
        n_words = [len(x.words) for x in lead_attrs]
        subsets, controls = occlusion_subsets([attrs[m] for m in gradient], n_words, token,
                                              [x.words for x in lead_attrs], a.occlusion_top_words, seed)
        occ = explain("occlusion", sub_texts, at(chosen), word_subset=subsets)
        attrs["occlusion"] = impute_unoccluded(occ, subsets, controls, seed)
        n_occ = sum(len(s) for s in subsets)
        stops.append(Stop("occlusion", stop.used, len(texts), "the words other methods rank + a random control "
                          "sample of the same size", dict(keys, method="occlusion"), f"{n_occ} of {sum(n_words)} words"))
    elif "occlusion" in methods:
        attrs["occlusion"] = lead_attrs
    return {m: (sub_texts, sub_idx, attrs[m]) for m in methods}, stops
