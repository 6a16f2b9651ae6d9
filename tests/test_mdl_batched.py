"""The batched online code used by the pipeline: same code as online_codelength, many problems at once."""

import numpy as np
import pytest

from probe.analyses.mdl import block_boundaries, online_codelength, online_codelength_layers


def test_batched_codelength_known_answers():
    rng = np.random.default_rng(0)
    n, d = 300, 16
    X = rng.normal(size=(n, d))
    signal = (X[:, 0] + 0.2 * X[:, 1] > 0).astype(int)
    noise = rng.integers(0, 3, size=n)
    designs = np.stack([X, rng.normal(size=(n, d))])  # design 1 carries no signal
    bits = online_codelength_layers(designs, {"signal": signal, "noise": noise}, seed=0)
    assert bits["signal"].shape == (2, n)
    first = block_boundaries(n)[0]
    order = np.random.default_rng(0).permutation(n)
    assert np.allclose(bits["signal"][:, order[:first]], 1.0)  # uniform code for block 1: log2 2
    assert np.allclose(bits["noise"][:, order[:first]], np.log2(3))
    compression = n / bits["signal"].sum(axis=1)
    assert compression[0] > 2 and compression[1] < 1.15
    noise_compression = n * np.log2(3) / bits["noise"].sum(axis=1)
    assert np.all(np.abs(noise_compression - 1) < 0.15)
    assert np.all(bits["signal"] >= 0)


def test_batched_codelength_is_deterministic_and_order_free():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1, 120, 8))
    y = (X[0, :, 0] > 0).astype(int)
    a = online_codelength_layers(X, {"y": y}, seed=3)["y"]
    b = online_codelength_layers(X, {"y": y}, seed=3)["y"]
    assert np.array_equal(a, b)
    perm = rng.permutation(120)
    c = online_codelength_layers(X[:, perm], {"y": y[perm]}, seed=3)["y"]
    assert c.shape == a.shape


def test_online_codelength_is_the_batched_code_of_one_design():
    """``online_codelength``'s default probe is ``online_codelength_layers`` on one design."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(250, 12))
    y = (X[:, 0] - X[:, 2] + 0.5 * rng.normal(size=250) > 0).astype(int)
    batched = online_codelength_layers(X[None], {"y": y}, seed=0)["y"][0]
    single = online_codelength(X, y, seed=0)
    assert single["codelength_bits"] == pytest.approx(batched.sum(), rel=1e-12)
    order = np.random.default_rng(0).permutation(250)
    for block in single["blocks"]:
        assert block["bits"] == pytest.approx(batched[order[block["start"]:block["end"]]].sum(), rel=1e-9)


def test_batched_code_equals_sklearn_probes_at_a_fixed_C():
    """scikit-learn as the reference: with a one-value grid (C = 0.01 for every prefix), the batched
    code equals the code of scikit-learn's StandardScaler + LogisticRegression fitted per prefix."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 10))
    y = np.digitize(X[:, 0] + 0.5 * rng.normal(size=200), [-0.5, 0.5])  # 3 classes

    def sklearn_fit(A, b):
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, tol=1e-8, max_iter=5000)).fit(A, b)

    batched = online_codelength_layers(X[None], {"y": y}, seed=4, grid=(0.01,))["y"].sum()
    reference = online_codelength(X, y, seed=4, fit=sklearn_fit)["codelength_bits"]
    assert batched == pytest.approx(reference, rel=1e-3)
