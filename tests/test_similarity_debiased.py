import numpy as np
import pandas as pd
import pytest
from scipy.stats import ortho_group

from probe.analyses.similarity import _cka_from_grams, cka_by_layer, cka_matrix, cka_matrix_table, linear_cka


def _song_unbiased_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012), eq. (5), written out directly as an independent reference."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return float(
        (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ K @ L @ one)
        / (n * (n - 3))
    )


@pytest.mark.parametrize("n, d", [(200, 30), (40, 120)])  # feature form and Gram form
def test_debiased_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(n, d):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    Q = ortho_group.rvs(d, random_state=1)
    assert linear_cka(X, 3.7 * X @ Q, debiased=True) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(X, X + 5.0, debiased=True) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("n, d", [(30, 6), (12, 40)])  # feature form (n > d) and Gram form (n < d)
def test_debiased_matches_song_estimator(n, d):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(n, d)) + 3.0  # offsets must not matter
    Y = X @ rng.normal(size=(d, d + 3)) + 0.7 * rng.normal(size=(n, d + 3))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    K, L = Xc @ Xc.T, Yc @ Yc.T
    reference = _song_unbiased_hsic(K, L) / np.sqrt(_song_unbiased_hsic(K, K) * _song_unbiased_hsic(L, L))
    assert linear_cka(X, Y, debiased=True) == pytest.approx(reference, rel=1e-8)
    assert _cka_from_grams(X @ X.T, Y @ Y.T, debiased=True) == pytest.approx(reference, rel=1e-8)
    assert reference < linear_cka(X, Y)  # the biased estimator sits higher


def test_debiased_cka_of_noise_is_near_zero_when_n_is_small_relative_to_width():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 500)), rng.normal(size=(50, 500))
    biased, debiased = linear_cka(X, Y), linear_cka(X, Y, debiased=True)
    assert biased > 0.8  # the biased estimator is dominated by the width
    assert abs(debiased) < 0.05
    assert abs(debiased) < biased / 10


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n, d", [(30, 40), (120, 8)])  # Gram path and feature path of cka_matrix
def test_cka_matrix_diagonal_equals_per_layer_cka(n, d, debiased):
    rng = np.random.default_rng(3)
    pre = rng.normal(size=(4, n, d))
    fine = pre + rng.normal(size=(4, n, d)) * np.array([0.0, 0.5, 1.0, 3.0])[:, None, None]
    M = cka_matrix(pre, fine, debiased=debiased)
    assert M.shape == (4, 4)
    for i in range(4):
        for j in range(4):
            assert M[i, j] == pytest.approx(linear_cka(pre[i], fine[j], debiased=debiased), rel=1e-8, abs=1e-10)
    assert M[0, 0] == pytest.approx(1.0)
    assert np.all(np.diff(np.diag(M)) < 0)  # more noise, less similar


def test_cka_matrix_handles_different_widths_and_layer_counts():
    rng = np.random.default_rng(4)
    M = cka_matrix(rng.normal(size=(3, 25, 10)), rng.normal(size=(5, 25, 7)), debiased=True)
    assert M.shape == (3, 5) and np.isfinite(M).all()


def test_cka_matrix_table_is_tidy():
    M = np.arange(6, dtype=float).reshape(2, 3)
    df = cka_matrix_table(M, model="pre-vs-fine", metric="debiased_linear_cka")
    assert list(df.columns) == ["model", "layer_pre", "layer_fine", "metric", "value"]
    assert len(df) == 6
    back = df.pivot(index="layer_pre", columns="layer_fine", values="value").to_numpy()
    np.testing.assert_array_equal(back, M)
    assert (df.metric == "debiased_linear_cka").all()


def test_cka_by_layer_adds_debiased_rows_only_when_asked():
    rng = np.random.default_rng(5)
    pre = rng.normal(size=(2, 30, 60))
    fine = np.stack([pre[0], rng.normal(size=(30, 60))])
    plain = cka_by_layer(pre, fine)
    both = cka_by_layer(pre, fine, debiased=True)
    assert set(plain.metric) == {"linear_cka"}
    assert len(both) == 4 and set(both.metric) == {"linear_cka", "debiased_linear_cka"}
    pd.testing.assert_frame_equal(both[both.metric == "linear_cka"].reset_index(drop=True), plain)
    deb = both[both.metric == "debiased_linear_cka"].set_index("layer")
    assert deb.value[0] == pytest.approx(1.0)
    assert abs(deb.value[1]) < 0.1 < plain.value[1]  # noise: biased CKA inflated, debiased near 0
    assert (deb.ci_low <= deb.value + 1e-9).all() and (deb.value <= deb.ci_high + 1e-9).all()
