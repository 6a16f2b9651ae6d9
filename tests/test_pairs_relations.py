"""Relational properties of pairs and the edits that move exactly one of them, each against a control
(probe.tasks.pairs.relations, probe.tasks.pairs.edits)."""

import numpy as np
import pytest

from probe.data.sources import _load_bbc_news
from probe.tasks.pairs import edits
from probe.tasks.pairs.relations import (content_words, length_difference, lexical_overlap, negation_count,
                                         relation_labels, relation_values)

FIRST = "The company reported strong profits after sales of phones rose sharply in Europe."
SECOND = "Analysts expected weaker results, but the firm's phones sold well in Asia and markets cheered."


@pytest.fixture(scope="module")
def matcher():
    texts = _load_bbc_news().text.tolist()[:300]
    return edits.FrequencyMatcher(texts)


def _props(first, second):
    return lexical_overlap(first, second), negation_count(second), length_difference(first, second)


def test_relational_properties_on_known_pairs():
    assert content_words("The cat will not sit, nobody knows why!") == ["cat", "sit", "knows"]
    assert lexical_overlap("the cat sat on the mat", "a cat and a dog") == 0.5  # {cat, dog}: cat shared
    assert lexical_overlap("the cat", "it is so") == 0.0  # no content word in the second
    assert negation_count("Nobody came, and they did not call. No.") == 3
    assert length_difference("one two three", "one two three four five") == 2
    v = relation_values(["a cat", "a dog"], ["the cat", "no bird"], ["x", "y"], ["x", "z"])
    assert v["lexical_overlap"].tolist() == [1.0, 0.0] and v["negation"].tolist() == [0, 1]
    assert v["topic_match"].tolist() == [1, 0]
    assert "topic_match" not in relation_values(["a"], ["b"], [None], [None])
    labels, cut = relation_labels({"lexical_overlap": np.array([0, 0.1, 0.5, 0.9, 1, 1]), "negation": np.array([0, 2])})
    assert labels["lexical_overlap"].tolist() == [0, 0, 1, 1, 2, 2] and labels["negation"].tolist() == [0, 1]
    again, _ = relation_labels({"lexical_overlap": np.array([0.95])}, cut)  # the training edges cut the test split
    assert again["lexical_overlap"].tolist() == [2]


def _kept(original: str, edited: str, changed: int) -> None:
    """All but ``changed`` words of ``original`` are still there, in order."""
    from difflib import SequenceMatcher

    a, b = original.split(), edited.split()
    kept = sum(m.size for m in SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
    assert kept >= len(a) - changed


def test_overlap_raise_moves_overlap_and_its_control_does_not(matcher):
    rng = np.random.default_rng(0)
    before = _props(FIRST, SECOND)
    for k in (1, 2, 3):
        edited, control = edits.overlap_raise(FIRST, SECOND, k, matcher, rng)
        n_second = len(set(content_words(SECOND)))
        assert lexical_overlap(FIRST, edited) == pytest.approx(before[0] + k / n_second)
        assert _props(FIRST, control) == before  # overlap, negation and length all unchanged
        assert _props(FIRST, edited)[1:] == before[1:]
        assert len(edited.split()) == len(SECOND.split()) and "weaker results," in SECOND  # punctuation kept
        diff = [j for j, (x, y) in enumerate(zip(SECOND.split(), edited.split())) if x != y]
        assert len(diff) == k and diff == [j for j, (x, y) in enumerate(zip(SECOND.split(), control.split()))
                                           if x != y]
        _kept(SECOND, edited, k)
        _kept(SECOND, control, k)
        assert all(edited.split()[j][-1] == SECOND.split()[j][-1] or SECOND.split()[j][-1].isalpha() for j in diff)


def test_overlap_lower_moves_overlap_and_its_control_does_not(matcher):
    rng = np.random.default_rng(1)
    second = "Phones sold well in Europe, and profits rose as analysts and markets cheered."
    before = _props(FIRST, second)
    assert before[0] > 0
    (first, edited), (control_first, control) = edits.overlap_lower(FIRST, second, 2, matcher, rng)
    assert first == FIRST and edited == control  # the same second text; only the control's first text differs
    n_second = len(set(content_words(second)))
    assert lexical_overlap(FIRST, edited) == pytest.approx(before[0] - 2 / n_second)
    assert _props(control_first, control)[:2] == before[:2] and _props(FIRST, edited)[1:] == before[1:]
    assert len(control_first.split()) == len(FIRST.split())
    _kept(second, edited, 2)
    _kept(FIRST, control_first, 2)


def test_negation_edits_move_negation_only(matcher):
    rng = np.random.default_rng(2)
    before = _props(FIRST, SECOND)
    edited, control = edits.negation_raise(SECOND, matcher, rng)
    assert negation_count(edited) == before[1] + 1 and negation_count(control) == before[1]
    assert lexical_overlap(FIRST, edited) == lexical_overlap(FIRST, control) == before[0]
    assert len(edited.split()) == len(control.split()) == len(SECOND.split()) + 1
    _kept(SECOND, edited, 0)
    _kept(SECOND, control, 0)
    neg = "Analysts did not expect this, and nobody in the markets cheered at all."
    edited, control = edits.negation_lower(neg, rng)
    assert negation_count(edited) == 0 and negation_count(control) == 2
    assert len(edited.split()) == len(control.split()) == len(neg.split()) - 2
    assert lexical_overlap(FIRST, edited) == lexical_overlap(FIRST, control) == lexical_overlap(FIRST, neg)
    assert edits.negation_lower(SECOND, rng) is None  # nothing to delete


def test_length_edits_move_length_only(matcher):
    rng = np.random.default_rng(3)
    before = _props(FIRST, SECOND)
    edited, control = edits.length_raise(SECOND, 2, matcher, rng)
    assert length_difference(FIRST, edited) == before[2] + 2 and length_difference(FIRST, control) == before[2]
    assert _props(FIRST, control)[:2] == _props(FIRST, edited)[:2] == before[:2]
    _kept(SECOND, edited, 0)
    edited, control = edits.length_lower(SECOND, 2, matcher, rng)
    assert length_difference(FIRST, edited) == before[2] - 2 and length_difference(FIRST, control) == before[2]
    assert _props(FIRST, control)[:2] == _props(FIRST, edited)[:2] == before[:2]
    _kept(SECOND, control, 2)


def test_topic_swaps_move_topic_match_and_the_control_keeps_it():
    firsts = ["business", "sport", "tech", "sport", "business"]
    seconds = ["business", "business", "tech", "tech", "sport"]
    rng = np.random.default_rng(4)
    for i in range(5):
        match = firsts[i] != seconds[i]
        swap = edits.topic_swaps(firsts, seconds, i, match, rng)
        if swap is None:
            continue
        e, c = swap
        assert (seconds[e] == firsts[i]) == match and (seconds[c] == firsts[i]) == (not match)
        assert i not in (e, c)


def test_frequency_matched_controls_have_similar_counts(matcher):
    rng = np.random.default_rng(5)
    for word in ("profits", "government", "film"):
        m = matcher.match(word, {word}, rng)
        assert m != word and abs(np.log2(matcher.count[m] / matcher.count[word])) <= 1
        assert m not in ("the", "not")
    assert matcher.match("not", {"not"}, rng, content=False) not in content_words("x " + "not")
