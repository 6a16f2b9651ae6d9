"""Partial-input tests (probe.tasks.pairs.partial) on predictors whose answers are known."""

import numpy as np

from probe.tasks.pairs.partial import derangement, partial_input_table, partial_inputs

FIRSTS = [f"premise number {i} about topic {i % 3}" for i in range(60)]
SECONDS = [("nobody " if i % 2 else "") + f"hypothesis {i}" for i in range(60)]
LABELS = np.array([i % 2 for i in range(60)])


def _onehot(pred):
    out = np.zeros((len(pred), 2))
    out[np.arange(len(pred)), pred] = 1
    return out


def second_only(firsts, seconds):
    """Answers from the second text alone: 'nobody' -> class 1."""
    return _onehot(np.array([int(s.startswith("nobody")) for s in seconds]))


def both_needed(firsts, seconds):
    """Right only when the first and second texts carry the same number (and the first says its parity)."""
    out = []
    for a, b in zip(firsts, seconds):
        if not a or not b or a.split()[2] != b.split()[-1]:
            out.append(0)
        else:
            out.append(int(a.split()[2]) % 2)
    return _onehot(np.array(out))


def _value(table, condition, metric):
    row = table[(table.property == condition) & (table.metric == metric)].iloc[0]
    return row.value, row.ci_low, row.ci_high


def test_derangement_never_gives_an_example_its_own_text():
    rng = np.random.default_rng(0)
    texts = ["a", "a", "b", "c", "c", "c", "d"]
    for _ in range(20):
        d = derangement(texts, rng)
        assert all(d[i] != i and texts[d[i]] != texts[i] for i in range(len(texts)))
    inputs = partial_inputs(FIRSTS, SECONDS, rng)
    assert inputs["first empty"] == ([""] * 60, SECONDS) and inputs["second replaced"][0] == FIRSTS
    assert sorted(inputs["first replaced"][0]) == sorted(FIRSTS) and inputs["first replaced"][1] == SECONDS


def test_a_second_text_only_model_keeps_its_accuracy_without_the_first():
    t = partial_input_table(second_only, FIRSTS, SECONDS, LABELS, n_boot=200)
    assert _value(t, "full", "accuracy")[0] == 1.0
    assert _value(t, "first replaced", "accuracy")[0] == 1.0 and _value(t, "first empty", "accuracy")[0] == 1.0
    assert _value(t, "first replaced", "flip_rate")[:2] == (0.0, 0.0)
    assert _value(t, "first empty", "retained")[0] == 1.0
    assert _value(t, "second empty", "accuracy")[0] == 0.5  # always class 0
    acc, lo, hi = _value(t, "second replaced", "accuracy")
    assert hi < 0.9 and lo <= acc <= hi


def test_a_model_that_needs_both_texts_loses_its_accuracy_without_either():
    t = partial_input_table(both_needed, FIRSTS, SECONDS, LABELS, n_boot=200)
    assert _value(t, "full", "accuracy")[0] == 1.0
    for c in ("first replaced", "first empty", "second replaced", "second empty"):
        assert _value(t, c, "accuracy")[0] == 0.5  # all predictions fall back to class 0
        assert _value(t, c, "flip_rate")[0] == 0.5  # every class-1 answer flips
        assert _value(t, c, "retained")[0] == 0.0
    assert set(t.metric) == {"accuracy", "flip_rate", "retained"} and len(t) == 15


def test_replacements_can_come_from_clean_donors():
    marked = [b + " zebra" for b in SECONDS]
    inputs = partial_inputs(FIRSTS, marked, np.random.default_rng(1), donors=(FIRSTS, SECONDS))
    replaced = inputs["second replaced"][1]
    assert all(r in SECONDS and r != SECONDS[i] for i, r in enumerate(replaced))  # another clean second text
    assert inputs["full"][1] == marked and inputs["first replaced"][1] == marked
