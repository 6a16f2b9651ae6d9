import numpy as np
import pytest

from probe.analyses.mdl import VOITA_FRACTIONS, _full_proba, block_boundaries, online_codelength, relative_extractability


def _planted(n: int = 400, d: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=d) > 0).astype(int)
    return X, y, rng


def test_block_boundaries_for_1000_examples_follow_voita_and_titov():
    assert block_boundaries(1000) == [1, 2, 4, 8, 16, 32, 62, 125, 250, 500, 1000]
    assert VOITA_FRACTIONS[0] == 0.001 and VOITA_FRACTIONS[-1] == 1.0


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 33, 999, 5000])
def test_block_boundaries_are_strictly_increasing_and_end_at_n(n):
    b = block_boundaries(n)
    assert b[0] >= 1 and b[-1] == n
    assert all(x < y for x, y in zip(b, b[1:]))


def test_planted_signal_compresses_and_random_labels_cost_the_uniform_code():
    X, y, rng = _planted()
    signal = online_codelength(X, y, seed=0)
    noise = online_codelength(X, rng.integers(0, 2, len(y)), seed=0)
    assert signal["uniform_bits"] == pytest.approx(400.0)
    assert signal["compression"] > 2.0
    assert noise["codelength_bits"] == pytest.approx(noise["uniform_bits"], rel=0.10)
    assert 0.9 < noise["compression"] < 1.1
    assert signal["codelength_bits"] < 0.5 * noise["codelength_bits"]


def test_codelength_is_the_sum_of_its_blocks_and_the_first_block_is_uniform():
    from probe.analyses.probing import fit_probe

    X, _, rng = _planted(n=300)
    y = rng.integers(0, 3, 300)
    out = online_codelength(X, y, seed=1, fit=lambda a, b: fit_probe(a, b, C=0.1))
    assert out["n_classes"] == 3 and out["n"] == 300
    assert out["codelength_bits"] == pytest.approx(sum(b["bits"] for b in out["blocks"]))
    assert out["blocks"][0]["bits"] == pytest.approx(out["boundaries"][0] * np.log2(3))
    assert [b["end"] for b in out["blocks"]] == out["boundaries"]
    assert [b["train_size"] for b in out["blocks"][1:]] == out["boundaries"][:-1]
    assert out["compression"] == pytest.approx(300 * np.log2(3) / out["codelength_bits"])


def test_injected_fit_is_used_and_never_sees_the_block_it_encodes():
    X, y, _ = _planted(n=200)
    calls = []

    class Uniform:
        classes_ = np.array([0, 1])

        def predict_proba(self, Z):
            return np.full((len(Z), 2), 0.5)

    def fit(X_train, y_train):
        calls.append(len(y_train))
        return Uniform()

    out = online_codelength(X, y, fit=fit, seed=0)
    fitted = [b for b in out["blocks"][1:] if b["train_size"] in calls]
    assert calls and calls == [b["train_size"] for b in fitted]  # one fit per block, on the prefix only
    assert calls[-1] == out["boundaries"][-2]
    for b in fitted:  # a probe that predicts 1/2 for both classes costs exactly 1 bit per label
        assert b["bits"] == pytest.approx(b["end"] - b["start"])


def test_classes_unseen_in_the_prefix_keep_nonzero_probability():
    class TwoOfThree:
        classes_ = np.array([0, 2])

        def predict_proba(self, Z):
            return np.tile([0.25, 0.75], (len(Z), 1))

    p = _full_proba(TwoOfThree(), np.zeros((4, 1)), np.array([0, 2, 2, 0, 2]), K=3)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[0, 1] == pytest.approx(1 / (5 + 3))  # Laplace escape for the unseen class
    assert p[0, 2] / p[0, 0] == pytest.approx(3.0)
    one_class = _full_proba(None, np.zeros((2, 1)), np.array([1, 1]), K=2)
    np.testing.assert_allclose(one_class[0], [1 / 4, 3 / 4])  # add-one estimate


def test_rare_class_and_tiny_data_give_finite_codelengths():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.zeros(60, dtype=int)
    y[[5, 40]] = 1
    y[50] = 2
    out = online_codelength(X, y, seed=0)
    assert np.isfinite(out["codelength_bits"]) and out["codelength_bits"] > 0
    small = online_codelength(X[:3], np.array([0, 1, 0]), seed=0)
    assert small["boundaries"] == [1, 3] and np.isfinite(small["codelength_bits"])


def test_online_codelength_is_deterministic_in_seed():
    X, y, _ = _planted(n=80)
    a, b = online_codelength(X, y, seed=3), online_codelength(X, y, seed=3)
    assert a["codelength_bits"] == b["codelength_bits"]


def test_relative_extractability_is_high_when_the_target_is_easier():
    rng = np.random.default_rng(0)
    n = 360
    X = rng.normal(size=(n, 6))
    y_target = np.argmax(X[:, :3], axis=1)  # 3 classes, each one-vs-rest linearly decodable
    y_spurious = (0.3 * X[:, 4] + rng.normal(size=n) > 0.5).astype(int)  # weak and imbalanced
    out = relative_extractability(X, y_spurious, y_target, seed=0)
    assert out["relative_extractability"] > 1.3
    assert out["spurious"]["n"] == out["target"]["n"] == out["n"]
    assert out["n"] == 2 * min(y_spurious.sum(), n - y_spurious.sum())
    swapped = relative_extractability(X, y_target, y_spurious, seed=0)
    assert swapped["relative_extractability"] < 1.0
    assert swapped["relative_extractability"] == pytest.approx(1 / out["relative_extractability"], rel=0.3)
