"""Word properties, the sentence-grouped probe split and token probes on activations with a planted answer."""

from __future__ import annotations

import numpy as np
import pytest

from probe.tasks.tokens.probing import token_probe_split, token_probe_table
from probe.tasks.tokens.properties import available_word_properties, word_properties, word_types

# --------------------------------------------------------------------------------------------
# word properties

WORDS = ["Paris", "NASA", "ok", "@bob", "@", "#tbt", "#", "http://t.co/x", "WWW.site.com", "R2D2", "I", "U.S.",
         "is", "word", "letters", "éclair", "Éclair", "4ever", "", "ABCdef"]
EXPECTED = {
    "capitalised": [1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1],
    "all_caps": [0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    "has_digit": [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
    "mention": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "hashtag": [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "url": [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "length_bucket": [1, 1, 0, 1, 0, 1, 0, 2, 2, 1, 0, 1, 0, 1, 2, 1, 1, 1, 0, 1],
}


def test_word_properties_on_hand_labelled_words():
    values, skipped = word_properties(WORDS, min_count=1)
    assert skipped == {}
    assert set(values) == set(EXPECTED) == set(available_word_properties())
    for name, expected in EXPECTED.items():
        np.testing.assert_array_equal(values[name], expected, err_msg=name)
        assert values[name].dtype == np.int64
    assert all(spec.description for spec in available_word_properties().values())


def test_word_properties_skip_reasons():
    words = ["the", "cat", "Sat", "on", "a", "mattress", "pillows", "big"] * 5
    values, skipped = word_properties(words, ["capitalised", "mention", "length_bucket"], min_count=6)
    assert list(values) == ["length_bucket"] and set(skipped) == {"capitalised", "mention"}
    assert "constant" in skipped["mention"]
    assert "5 words" in skipped["capitalised"] and "min_count=6" in skipped["capitalised"]
    with pytest.raises(ValueError, match="allowed"):
        word_properties(words, ["no_such_property"])


def test_word_types_are_lower_cased_forms():
    assert word_types(["Paris", "PARIS", "paris", "@Bob"]) == ["paris", "paris", "paris", "@bob"]


# --------------------------------------------------------------------------------------------
# the sentence-grouped split


def _sentence_ids(n_sentences: int, rng: np.random.Generator) -> np.ndarray:
    return np.repeat(np.arange(n_sentences), rng.integers(3, 16, size=n_sentences))


def test_split_keeps_sentences_whole_and_is_deterministic():
    sid = _sentence_ids(120, np.random.default_rng(0))
    train, test = token_probe_split(sid, seed=3)
    assert not set(sid[train]) & set(sid[test])
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(sid.size))
    assert abs(test.size / sid.size - 0.5) < 0.05
    again = token_probe_split(sid, seed=3)
    np.testing.assert_array_equal(again[0], train)
    other = token_probe_split(sid, seed=4)
    assert not np.array_equal(other[0], train)
    # subsampling keeps whole sentences and at most max_words words
    tr, te = token_probe_split(sid, seed=3, max_words=300)
    kept = np.concatenate([tr, te])
    assert 250 < kept.size <= 300
    for s in np.unique(sid[kept]):
        assert np.isin(np.flatnonzero(sid == s), kept).all()
    assert not set(sid[tr]) & set(sid[te])


# --------------------------------------------------------------------------------------------
# probes with a planted answer

N_TYPES = 40


@pytest.fixture(scope="module")
def planted():
    """Words of 150 sentences; ``planted`` is linearly encoded in layer 1 only, layer 2 encodes
    the word type (so a probe can memorise types there), layers 0 and 3 are noise."""
    rng = np.random.default_rng(0)
    sid = _sentence_ids(150, rng)
    n, d = sid.size, 48
    type_id = rng.integers(0, N_TYPES, size=n)
    types = [f"type{t}" for t in type_id]
    y = (rng.random(n) < 0.3).astype(np.int64)  # independent of the type
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    acts = rng.normal(size=(4, n, d)).astype(np.float32)
    acts[1] += 6 * y[:, None] * direction
    acts[2] = rng.normal(size=(N_TYPES, d))[type_id] + 0.1 * rng.normal(size=(n, d))
    return dict(acts=acts, y=y, sid=sid, types=types)


@pytest.fixture(scope="module")
def table(planted):
    labels = {"planted": planted["y"], "constant": np.zeros_like(planted["y"])}
    return token_probe_table({"pretrained": planted["acts"]}, labels, planted["sid"], planted["types"], seed=0,
                             C="cv", n_boot=200, max_words=None)


def _value(table, layer, metric, prop="planted", model="pretrained"):
    row = table[(table.model == model) & (table.layer == layer) & (table.property == prop) & (table.metric == metric)]
    assert len(row) == 1, (layer, metric, prop)
    return row.iloc[0]


def test_planted_property_is_decodable_in_its_layer_only(table):
    assert _value(table, 1, "accuracy").value > 0.97
    for layer in (0, 2, 3):
        acc, maj = _value(table, layer, "accuracy").value, _value(table, layer, "majority_baseline").value
        assert abs(acc - maj) < 0.06, layer
    assert 0.6 < _value(table, 0, "majority_baseline").value < 0.8
    row = _value(table, 1, "accuracy")
    assert row.ci_low <= row.value <= row.ci_high and row.ci_high - row.ci_low < 0.05


def test_control_task_is_memorised_only_where_types_are_encoded(table):
    control_type_layer = _value(table, 2, "control_accuracy").value
    # types are linearly separable there, so the probe memorises them (with the property's C,
    # chosen by CV for a property that is not decodable there: strong regularisation)
    assert control_type_layer > 0.85
    for layer in (0, 3):  # noise: the control probe cannot beat guessing its majority control label
        assert _value(table, layer, "control_accuracy").value < min(0.8, control_type_layer - 0.1), layer
    # selectivity: high where the property is encoded, negative where only types are
    assert _value(table, 1, "selectivity").value > 0.15
    assert _value(table, 2, "selectivity").ci_high < 0


def test_selectivity_is_accuracy_minus_control(table):
    acc = table[table.metric == "accuracy"].set_index(["layer", "property"]).value
    ctrl = table[table.metric == "control_accuracy"].set_index(["layer", "property"]).value
    sel = table[table.metric == "selectivity"].set_index(["layer", "property"])
    assert len(sel) == 4
    np.testing.assert_allclose(sel.value, (acc - ctrl).loc[sel.index], atol=1e-12)
    assert (sel.ci_low <= sel.value).all() and (sel.value <= sel.ci_high).all()


def test_single_class_property_is_skipped_and_overlap_reported(table):
    assert "constant" not in set(table.property)
    assert "constant" in table.attrs["skipped"]
    overlap = table[table.metric == "type_overlap"]
    assert len(overlap) == 1 and overlap.value.iloc[0] > 0.99  # 40 types over ~750 training words
    assert set(table.metric) == {"accuracy", "majority_baseline", "control_accuracy", "selectivity", "probe_C", "type_overlap"}
    assert table.attrs["n_train_words"] > 0 and table.attrs["n_test_words"] > 0


def test_two_models_fixed_C_and_subsampling(planted):
    acts = planted["acts"]
    tuned = acts.copy()
    tuned[2] = acts[1]  # the fine-tuned model also encodes the property in layer 2
    table = token_probe_table({"pretrained": acts, "finetuned": tuned}, {"planted": planted["y"]}, planted["sid"],
                              planted["types"], seed=1, C=1.0, n_boot=100, max_words=600, control=False)
    assert set(table.metric) == {"accuracy", "majority_baseline", "probe_C", "accuracy_difference", "type_overlap"}
    assert table.attrs["n_train_words"] + table.attrs["n_test_words"] <= 600
    assert (table[table.metric == "probe_C"].value == 1.0).all()
    diff = table[table.metric == "accuracy_difference"].set_index("layer")
    assert diff.loc[2, "ci_low"] > 0.1 and abs(diff.loc[0, "value"]) < 1e-12


def test_rejects_mismatched_inputs(planted):
    with pytest.raises(ValueError, match="types"):
        token_probe_table({"m": planted["acts"]}, {"p": planted["y"]}, planted["sid"], planted["types"][:-1], seed=0)
    with pytest.raises(ValueError, match="labels"):
        token_probe_table({"m": planted["acts"]}, {"p": planted["y"][:-1]}, planted["sid"], planted["types"], seed=0)


def test_cluster_bootstrap_is_wider_when_words_of_a_sentence_agree():
    """Words of one sentence all right or all wrong: 40 sentences carry the information of 40
    observations, not of 800 words. The sentence-level interval must be much wider than a
    word-level one, and about as wide as a bootstrap over 40 independent sentences."""
    from probe.analyses.stats import bootstrap_mean
    from probe.tasks.tokens.probing import cluster_bootstrap_mean

    rng = np.random.default_rng(0)
    per_sentence = rng.random(40) < 0.5
    clusters = np.repeat(np.arange(40), 20)
    values = per_sentence[clusters].astype(float)
    v, lo, hi = cluster_bootstrap_mean(values, clusters, 2000, np.random.default_rng(1))
    _, wlo, whi = bootstrap_mean(values, 2000, np.random.default_rng(1))
    _, slo, shi = bootstrap_mean(per_sentence.astype(float), 2000, np.random.default_rng(1))
    assert v == pytest.approx(values.mean())
    assert (hi - lo) > 3 * (whi - wlo)
    assert (hi - lo) == pytest.approx(shi - slo, rel=0.2)
