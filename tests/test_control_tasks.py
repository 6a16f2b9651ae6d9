import numpy as np
import pytest

from probe.analyses.control_tasks import (
    control_labels, control_task_correctness, document_type, selectivity, selectivity_interval, type_overlap,
)
from probe.analyses.probing import probe_split


@pytest.mark.parametrize("text, expected", [
    ("The Economy grew by 3%.", "economy"),
    ('"Brexit" talks stall', "brexit"),
    ("@bob see http://x.co #tag the report", "see"),
    ("it is what it is", "it"),  # only stopwords: fall back to the first word
    ("...", "..."),
    ("", ""),
])
def test_document_type_is_the_first_content_word(text, expected):
    assert document_type(text) == expected


def test_same_type_gets_the_same_control_label_and_seed_is_deterministic():
    rng = np.random.default_rng(0)
    types = [f"w{i}" for i in rng.integers(0, 40, 500)]
    labels = rng.integers(0, 3, 500)
    c = control_labels(types, labels, seed=7)
    for t in set(types):
        idx = [i for i, x in enumerate(types) if x == t]
        assert len(set(c[idx])) == 1
    np.testing.assert_array_equal(c, control_labels(types, labels, seed=7))
    assert not np.array_equal(c, control_labels(types, labels, seed=8))
    # the mapping does not depend on the order of the examples
    perm = rng.permutation(500)
    np.testing.assert_array_equal(control_labels([types[i] for i in perm], labels[perm], seed=7), c[perm])


def test_control_labels_follow_the_empirical_label_distribution():
    labels = np.array(["a"] * 700 + ["b"] * 200 + ["c"] * 100)
    types = [f"t{i}" for i in range(1000)]  # every example its own type: one draw per type
    c = control_labels(types, labels, seed=0)
    assert c.dtype == labels.dtype and set(c) <= {"a", "b", "c"}
    freq = {v: np.mean(c == v) for v in "abc"}
    assert freq["a"] == pytest.approx(0.7, abs=0.05)
    assert freq["b"] == pytest.approx(0.2, abs=0.04)
    assert freq["c"] == pytest.approx(0.1, abs=0.03)


def test_selectivity_and_its_paired_interval():
    assert selectivity(0.9, 0.6) == pytest.approx(0.3)
    cp = np.array([1, 1, 1, 0] * 50, dtype=float)
    cc = np.array([1, 0, 0, 0] * 50, dtype=float)
    value, lo, hi = selectivity_interval(cp, cc, 500, np.random.default_rng(0))
    assert value == pytest.approx(0.5) and lo < 0.5 < hi and lo > 0.3


def test_control_accuracy_of_a_linear_probe_on_random_features_is_near_majority_rate():
    rng = np.random.default_rng(0)
    n = 400
    X = rng.normal(size=(n, 8))
    types = [f"w{i}" for i in rng.integers(0, 300, n)]  # mostly unseen types at test time
    y_prop = (X[:, 0] > 0).astype(int)  # the property is linearly encoded
    y_ctrl = control_labels(types, y_prop, seed=1)
    train, test = probe_split(y_prop, seed=0)
    cp, cc = control_task_correctness(X, y_prop, y_ctrl, train, test, seed=0)
    assert len(cp) == len(cc) == len(test)
    majority = max(np.mean(y_ctrl[test] == v) for v in np.unique(y_ctrl))
    assert abs(cc.mean() - majority) < 0.08
    assert cp.mean() > 0.9
    assert selectivity(cp.mean(), cc.mean()) > 0.3
    assert 0 <= type_overlap(types, train, test) < 0.6


def test_type_overlap():
    types = ["a", "b", "a", "c"]
    assert type_overlap(types, np.array([0, 1]), np.array([2, 3])) == pytest.approx(0.5)
