"""Precision budgets stop where their rules say (docs/design.md §5, "Precision budgets"): the interval
rule at the n predicted in closed form, the Wilson rule at the batch predicted by its formula, IG's
step rule within its tolerance on a tiny model, occlusion on a word subset exactly as on all words
there, and the hot-deck imputation of unoccluded words unbiased."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from probe.analyses.attribution import word_attributions
from probe.analyses.attribution_budget import adaptive_ig, impute_unoccluded, occlusion_subsets
from probe.analyses.attribution import WordAttributions
from probe.analyses.budget import Z95, mean_half_width, sequential_mean, wilson_width
from probe.causal.budget import BatchedPredictor
from probe.models.backbones import build_classifier, load_tokenizer

TEXTS = ["the company said profits rose sharply this year zebra", "a long match ended in a draw on sunday",
         "the minister said the new law will pass", "zebra shares fell after the report on friday morning"]


def test_interval_rule_stops_at_the_predicted_n():
    # values ±1 alternating: s = sqrt(n / (n - 1)), so the half-width is Z95 / sqrt(n - 1); with target
    # 0.196 the rule holds first at n - 1 >= (Z95 / 0.196)^2 = 99.996..., n = 101: batch boundary 110
    values = np.array([(-1.0) ** i for i in range(1000)])
    seen = []

    def measure(idx):
        seen.append(len(idx))
        return values[idx]

    got, stop = sequential_mean(measure, 1000, 10, 0.196)
    assert stop.used == 110 and got.size == 110 and sum(seen) == 110
    assert stop.width <= 0.196 < mean_half_width(values[:100])
    assert math.isclose(stop.width, Z95 * values[:110].std(ddof=1) / math.sqrt(110))
    assert stop.reason.startswith("half-width")
    # a cap below the predicted n stops at the cap and says so
    _, capped = sequential_mean(lambda idx: values[idx], 50, 10, 0.196)
    assert capped.used == 50 and capped.reason.startswith("cap of 50")


def test_wilson_width_matches_the_formula():
    # 50 / 100: the Wilson interval is (0.40383, 0.59617)
    assert wilson_width(50, 100) == pytest.approx(0.59617 - 0.40383, abs=1e-4)
    # 20 / 20: lower bound n / (n + z^2), upper 1
    assert wilson_width(20, 20) == pytest.approx(1 - 20 / (20 + Z95 ** 2), abs=1e-9)
    assert wilson_width(0, 0) == 1.0


class _Batch:
    """A fake per-batch predictor: ``n`` conflicting pairs of which ``k`` stay correct."""

    features = ["f"]

    def __init__(self, n: int, k: int) -> None:
        self.n, self.k, self.calls = n, k, 0

    def __call__(self, features=None):
        self.calls += 1
        acc = np.r_[np.ones(self.k), np.zeros(self.n - self.k)]
        return {"f": {"clean_accuracy": np.ones(self.n), "conflicting_accuracy": acc}}

    def clean_correct(self):
        return np.ones(self.n)

    def scan(self, feature, seed):
        return (lambda: 1 - self.k / self.n), self.n


@pytest.mark.parametrize("k, expected", [(20, 1), (10, 5)])
def test_batched_predictor_stops_at_the_predicted_batch(k, expected):
    # 20 pairs per batch: all correct -> width 1 - 20/23.84 = 0.16 <= 0.2 after one batch; half correct ->
    # the width first drops to 0.2 or below at n = 100 (0.1918; n = 80: 0.2134), i.e. the fifth batch
    assert wilson_width(40, 80) > 0.2 >= wilson_width(50, 100)
    batches = [_Batch(20, k) for _ in range(8)]
    predict = BatchedPredictor(batches, 0.2, 64, 160)
    out = predict()
    assert sum(b.calls for b in batches) == expected
    assert out["f"]["conflicting_accuracy"].size == 20 * expected
    assert predict.calls[-1][0] == 20 * expected


def test_head_scan_stops_by_interval_or_cap():
    predict = BatchedPredictor([_Batch(20, 10) for _ in range(8)], 0.2, 64, 160)
    evaluate, cap = predict.scan("f", 0)
    assert cap == 80  # batches of 20 until 64 are covered
    assert evaluate() == pytest.approx(0.5)
    n, width, reason = predict.scans[-1]
    assert n == 80 and reason.startswith("cap")  # 0.2134 > 0.2 at 80 >= 64


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_classifier("tiny-bert", ["a", "b"], 0).eval(), load_tokenizer("tiny-bert")


@pytest.fixture(scope="module")
def sharp():
    """A tiny random classifier made less linear along the IG path (attention and MLP weights × 10), so
    that two integration steps leave a completeness gap on some examples and not on others."""
    torch.manual_seed(0)
    model = build_classifier("tiny-bert", ["a", "b"], 0).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("query.weight", "key.weight", "intermediate.dense.weight",
                                       "classifier.weight", "pooler.dense.weight")):
                p.mul_(10)
    return model, load_tokenizer("tiny-bert")


def test_ig_step_rule_meets_its_tolerance(sharp):
    model, tokenizer = sharp
    tol = 0.01
    fixed = word_attributions(model, tokenizer, TEXTS, "integrated_gradients", max_length=32, n_steps=2,
                              delta_warn=1.0)
    assert any(f.delta > tol for f in fixed) and any(f.delta <= tol for f in fixed)  # the case is not trivial
    attrs, steps = adaptive_ig(model, tokenizer, TEXTS, start=2, max_steps=256, tolerance=tol, max_length=32)
    assert all(a.delta <= tol for a in attrs), [(a.delta, s) for a, s in zip(attrs, steps)]
    # more steps only where needed: an example that met the tolerance at 2 steps kept them, the others doubled
    assert [int(s) for s in steps] == [2 if f.delta <= tol else int(s) for f, s in zip(fixed, steps)]
    assert all(s > 2 for f, s in zip(fixed, steps) if f.delta > tol)
    # the same examples at the steps the rule chose give the same attributions
    for a, s, text in zip(attrs, steps, TEXTS):
        (b,) = word_attributions(model, tokenizer, [text], "integrated_gradients", max_length=32, n_steps=int(s),
                                 delta_warn=1.0)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    # no warning at any point: the rule answers in steps, not in warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adaptive_ig(model, tokenizer, TEXTS, start=2, max_steps=4, tolerance=1e-6, max_length=32)


def test_occlusion_on_a_subset_equals_full_occlusion_there(tiny):
    model, tokenizer = tiny
    full = word_attributions(model, tokenizer, TEXTS, "occlusion", max_length=32)
    subsets = [[0, 2], [1], [3, 4, 5], [0]]
    part = word_attributions(model, tokenizer, TEXTS, "occlusion", max_length=32, word_subset=subsets)
    for f, p, s in zip(full, part, subsets):
        np.testing.assert_allclose(p.scores[s], f.scores[s], atol=1e-5)
        rest = np.setdiff1d(np.arange(len(p.scores)), s)
        assert np.all(p.scores[rest] == 0)


def test_hot_deck_imputation_is_unbiased():
    rng = np.random.default_rng(0)
    words = [f"w{j}" for j in range(40)]
    scores = rng.normal(size=40) * np.linspace(0.1, 2, 40)
    ranker = WordAttributions(words, scores.copy(), 0, "saliency")
    totals = []
    for seed in range(300):
        subsets, controls = occlusion_subsets([[ranker]], [40], None, [words], 5, seed)
        assert len(controls[0]) == 5 and set(np.argsort(-np.abs(scores))[:5]) <= set(subsets[0])
        a = WordAttributions(words, np.where(np.isin(np.arange(40), subsets[0]), scores, 0.0), 0, "occlusion")
        (b,) = impute_unoccluded([a], subsets, controls, seed)
        totals.append(np.abs(b.scores).sum())
    true = np.abs(scores).sum()
    assert abs(np.mean(totals) - true) < 3 * np.std(totals) / np.sqrt(len(totals))


class _TwoFeatureBatch:
    """A fake tagger batch: feature ``a`` has ``na`` held-out span pairs here, ``b`` has ``nb`` (0 past its last);
    ``b`` comes first, so counting only the first feature's pairs would never reach the 25 there are."""

    features = ["b", "a"]

    def __init__(self, na: int, nb: int) -> None:
        self.n = {"a": na, "b": nb}

    def __call__(self, features=None):
        return {f: {"clean_accuracy": np.ones(self.n[f]), "conflicting_accuracy": np.r_[np.ones(self.n[f] // 2),
                                                                                      np.zeros(self.n[f] - self.n[f] // 2)]}
                for f in (features or self.features)}


def test_batched_predictor_counts_a_batch_by_its_largest_feature_and_records_reading_everything():
    # a tagger's markers hold different numbers of span pairs: 25 and 12, in batches of 10 -> (10, 10), (10, 2),
    # (5, 0); half correct never gets the Wilson width to 0.2, so every batch is read and the call says so
    batches = [_TwoFeatureBatch(10, 10), _TwoFeatureBatch(10, 2), _TwoFeatureBatch(5, 0)]
    predict = BatchedPredictor(batches, 0.2, 64, 25)
    out = predict()
    assert out["a"]["clean_accuracy"].size == 25 and out["b"]["clean_accuracy"].size == 12
    used, width, reason = predict.calls[-1]
    assert used == 25 and width > 0.2 and reason.startswith("cap")
    (stop, *_) = predict.stops("a")
    assert stop.used == 25 and "0 of 1 conditions by the interval, 1 at the cap" == stop.reason
