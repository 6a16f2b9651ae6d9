"""Discovery on pairs (probe.tasks.pairs.discovery) against predictors whose shortcut is known: a
second-side word, and lexical overlap."""

import numpy as np
import pytest

from probe.tasks.pairs.data import PairTable
from probe.tasks.pairs.discovery import discover_pairs, relation_candidates, side_candidates
from probe.tasks.pairs.relations import lexical_overlap


def _vocab(rng, n=400):
    letters = list("bcdfghjklmnprstvwz")
    vowels = list("aeiou")
    return sorted({"".join(rng.choice(letters) + rng.choice(vowels) for _ in range(3)) for _ in range(n)})


def _table(n: int, seed: int, cue_rates=(0.05, 0.8)) -> PairTable:
    """Label 1: the second text shares two of its three content words with the first; label 0: none.
    'nobody' opens the second text at ``cue_rates[label]``."""
    rng = np.random.default_rng(seed)
    vocab = _vocab(np.random.default_rng(0))
    firsts, seconds, labels = [], [], []
    for i in range(n):
        w = rng.choice(vocab, 9, replace=False).tolist()
        y = i % 2
        firsts.append(f"the {w[0]} {w[1]} and {w[2]} of {w[3]} {w[4]} to {w[5]}")
        s = [w[0], w[3], w[6]] if y else w[6:9]
        second = f"a {s[0]} and {s[1]} of the {s[2]}" + (" and so on" if rng.random() < 0.5 else "")
        if rng.random() < cue_rates[y]:
            second = "nobody " + second
        firsts, seconds, labels = firsts, seconds + [second], labels + [y]
    return PairTable(firsts, seconds, np.array(labels), ["low", "high"])


def _probs(p1):
    p1 = np.clip(np.asarray(p1, dtype=float), 0.01, 0.99)
    return np.stack([1 - p1, p1], axis=1)


def cue_model(firsts, seconds):
    return _probs([0.9 if "nobody" in s.split() else 0.1 for s in seconds])


def overlap_model(firsts, seconds):
    return _probs([1 / (1 + np.exp(-12 * (lexical_overlap(a, b) - 0.5))) for a, b in zip(firsts, seconds)])


def _row(table, feature):
    return table[table.feature == feature].iloc[0]


def test_candidates_are_per_side_and_relations_are_slices():
    t = _table(400, 1)
    words = side_candidates(t, min_count=20)
    nobody = words[(words.feature == "second:nobody") & (words["class"] == "high")].iloc[0]
    assert nobody.side == "second" and nobody.z > 10
    assert not (words.feature == "first:nobody").any()  # never in a first text
    assert set(words[words.side == "first"].feature.str.split(":").str[1]) >= {"the", "and", "of", "to"}
    rel = relation_candidates(t)
    overlap = rel[(rel.feature == "pair:lexical_overlap")].set_index("class")
    assert overlap.loc["high", "z"] > 10 and overlap.loc["low", "z"] < -10
    assert "pair:topic_match" not in set(rel.feature)  # a table without sources has no topic match


@pytest.mark.parametrize("hide", [False, True])
def test_a_second_side_cue_is_found_and_ranked_first(hide):
    table = discover_pairs(cue_model, _table(400, 1), _table(300, 2), planted={"second:nobody": "high"},
                           hide_planted=hide, min_count=20, bootstrap=300, n_examples=100)
    top = table.iloc[0]
    assert top.feature == "second:nobody" and top.verdict == "used shortcut" and top["class"] == "high"
    assert top.override_rate > 0.9 and top.override_control < 0.05
    assert bool(top.planted)
    overlap = _row(table, "pair:lexical_overlap")
    assert overlap.verdict == "correlated but not used"  # associated with the label, not read by this model
    assert len(table.attrs["examples"]) > 0 and "‖" in table.attrs["examples"].text.iloc[0]


def test_a_model_that_reads_overlap_is_found_using_it():
    table = discover_pairs(overlap_model, _table(400, 1, (0, 0)), _table(300, 2, (0, 0)), min_count=20,
                           bootstrap=300, n_examples=100)
    overlap = _row(table, "pair:lexical_overlap")
    assert overlap.verdict == "used shortcut" and overlap["class"] == "high" and overlap.side == "pair"
    assert overlap.override_rate > 0.9 and overlap.override_control < 0.1
    assert overlap.deletion_effect_ci_low > 0.3  # lowering overlap lowers P(high); the control does not
    length = _row(table, "pair:length_difference")
    assert length.verdict == "not used" and length.n_insert >= 20 and length.n_delete >= 20
    assert table.iloc[0].feature == "pair:lexical_overlap"
