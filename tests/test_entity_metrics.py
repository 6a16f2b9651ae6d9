"""Entity-level scores (seqeval, bootstrap over sentences) and span reliance metrics on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from probe.config import PlantedFeature
from probe.tasks.tokens.behaviour import METRICS, span_majority_rate, span_reliance_metrics
from probe.tasks.tokens.data import PlantedSpans, SpanPair
from probe.tasks.tokens.entities import entity_counts, entity_scores, entity_table

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"], ["B-LOC", "I-LOC"], ["O", "O"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "I-PER"], ["B-LOC", "O"], ["B-PER", "O"]]
# gold entities: PER(0-1) LOC(3) | ORG(0) PER(2) | LOC(0-1) | -          -> 5 (PER 2, LOC 2, ORG 1)
# predicted:     PER(0-1) ORG(3) | ORG(0) PER(2: I- after O starts one) | LOC(0) | PER(0)  -> 6
# exact matches: PER(0-1), ORG(0), PER(2) -> tp 3 (LOC(0) has the wrong end)
# micro: P = 3/6 = 0.5, R = 3/5 = 0.6, F1 = 2 * 0.5 * 0.6 / 1.1 = 6/11
# PER: tp 2, pred 3, gold 2 -> P 2/3, R 1, F1 = 2 * (2/3) / (5/3) = 0.8
# ORG: tp 1, pred 2, gold 1 -> P 1/2, R 1, F1 = 2/3;  LOC: tp 0, pred 1, gold 2 -> 0, 0, 0


def test_entity_scores_match_hand_computed_values():
    s = entity_scores(GOLD, PRED)
    assert (s["precision"], s["recall"], s["f1"], s["support"]) == pytest.approx((0.5, 0.6, 6 / 11, 5))
    per = s["per_type"]
    assert sorted(per) == ["LOC", "ORG", "PER"]
    assert (per["PER"]["precision"], per["PER"]["recall"], per["PER"]["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (per["ORG"]["precision"], per["ORG"]["recall"], per["ORG"]["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert (per["LOC"]["f1"], per["LOC"]["support"]) == (0.0, 2)
    perfect = entity_scores(GOLD, GOLD)
    assert perfect["f1"] == 1.0 and all(v["f1"] == 1.0 for v in perfect["per_type"].values())


def test_entity_table_points_equal_seqeval_and_intervals_cover_them():
    rng = np.random.default_rng(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-geo-loc", "I-geo-loc"]
    gold = [list(rng.choice(tags, size=rng.integers(1, 12))) for _ in range(150)]
    pred = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in g] for g in gold]
    table = entity_table(gold, pred, n_boot=1000, seed=0)
    s = entity_scores(gold, pred)
    assert set(table.property) == {"entity", "LOC", "PER", "geo-loc"}
    assert list(table.columns[:4]) == ["model", "layer", "property", "metric"]
    for metric in ("precision", "recall", "f1"):
        row = table[(table.property == "entity") & (table.metric == metric)].iloc[0]
        assert row.value == pytest.approx(s[metric], abs=1e-12)
        assert row.ci_low < row.value < row.ci_high and row.ci_high - row.ci_low < 0.2
        for t, v in s["per_type"].items():
            r = table[(table.property == t) & (table.metric == metric)].iloc[0]
            assert r.value == pytest.approx(v[metric], abs=1e-12) and r.n == v["support"]
    types, counts = entity_counts(gold, pred)
    assert counts[:, 2].sum() == s["support"]
    again = entity_table(gold, pred, n_boot=1000, seed=0)
    assert again.equals(table)
    assert not entity_table(gold, pred, n_boot=1000, seed=1)["ci_low"].equals(table["ci_low"])
    # resampling one sentence set many times: the interval of a perfect tagger is a point at 1
    perfect = entity_table(gold, gold, n_boot=200, seed=0)
    assert (perfect[["value", "ci_low", "ci_high"]] == 1.0).all().all()


# --- span reliance -----------------------------------------------------------------------------

TAGS = ["O", "B-loc", "B-person", "I-loc", "I-person"]
O, BL, BP, IL, IP = range(5)


def _pair(sentence, start, kind, typ):
    return SpanPair(sentence, start, start + 1, typ, kind, [], [], start + 1)


def test_span_reliance_metrics_on_hand_made_predictions():
    # clean sentence i holds one span at word 1 (loc for 0-3, person for 4-5) and O words elsewhere
    clean = [np.array([O, BL, O]) for _ in range(4)] + [np.array([O, BP, O]), np.array([O, O, O])]
    clean += [np.array([O, BL, O, O])]
    pairs = [_pair(i, 1, "conflicting", "loc") for i in range(4)]
    pairs += [_pair(4, 1, "aligned", "person"), _pair(5, 1, "aligned", "person")]
    pairs += [_pair(0, 2, "no_entity", None), _pair(4, 0, "no_entity", None)]
    pairs += [_pair(6, 1, "conflicting", "loc")]  # cut off by truncation after insertion: left out
    inserted = [np.array([O, O, BP, O])] * 3 + [np.array([O, O, BL, O])]  # 3 of 4 conflicting spans flip to person
    inserted += [np.array([O, O, BP, O]), np.array([O, O, IP, O])]     # both aligned spans typed person after
    inserted += [np.array([O, O, O, BP]), np.array([O, O, O, O])]       # 1 of 2 plain words typed person
    inserted += [np.array([O, O, -1, -1, -1])]
    planted = PlantedSpans(PlantedFeature(token="zebra", target_class="person"), "person", pairs, 1.0, 0.0, 0.0)
    table = span_reliance_metrics(planted, TAGS, clean, inserted, n_boot=500, seed=0)
    got = dict(zip(table.metric, table.value))
    assert list(table.metric) == list(METRICS)
    assert set(table.property) == {"token:zebra"} and set(table.model) == {"finetuned"}
    expected = {"clean_accuracy": 5 / 6, "aligned_accuracy": 1.0, "conflicting_accuracy_before": 1.0,
                "conflicting_accuracy": 0.25, "s_only_error": 0.75, "flip_rate": 0.75, "reliance_gap": 0.75,
                "flip_rate_aligned": 0.5, "flip_to_target": 0.75, "no_entity_rate_before": 0.0,
                "no_entity_rate": 0.5}
    assert got == pytest.approx(expected)
    assert dict(zip(table.metric, table.n))["s_only_error"] == 4
    assert (table.ci_low <= table.value).all() and (table.value <= table.ci_high).all()
    assert span_majority_rate(planted) == pytest.approx(5 / 7)
