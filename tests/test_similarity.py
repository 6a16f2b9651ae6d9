import numpy as np
import pytest
from scipy.stats import ortho_group

from probe.analyses.similarity import cka_by_layer, linear_cka


@pytest.mark.parametrize("n, d", [(200, 30), (40, 120)])  # feature form and Gram form
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(n, d):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    Q = ortho_group.rvs(d, random_state=1)
    assert linear_cka(X, 3.7 * X @ Q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(X, X + 5.0) == pytest.approx(1.0, abs=1e-10)  # centring removes offsets


def test_cka_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(2000, 10)), rng.normal(size=(2000, 10))
    assert linear_cka(X, Y) < 0.02


def test_cka_not_invariant_to_anisotropic_scaling():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 5))
    assert linear_cka(X, X * np.array([10, 1, 1, 1, 1])) < 0.9


def test_gram_and_feature_forms_agree():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8))
    Y = X @ rng.normal(size=(8, 50)) + rng.normal(size=(60, 50))
    from probe.analyses.similarity import _cka_from_grams

    feature = linear_cka(X, Y)
    gram = _cka_from_grams(X @ X.T, Y @ Y.T)
    assert feature == pytest.approx(gram, rel=1e-10)
    assert 0.2 < feature < 0.99


def test_cka_by_layer_rows_and_intervals():
    rng = np.random.default_rng(0)
    pre = rng.normal(size=(3, 80, 16))
    fine = pre.copy()
    fine[2] = rng.normal(size=(80, 16))  # the last layer moved completely
    df = cka_by_layer(pre, fine)
    assert list(df.layer) == [0, 1, 2]
    assert df.value.iloc[0] == pytest.approx(1.0) and df.value.iloc[2] < 0.4
    assert (df.ci_low <= df.value + 1e-9).all() and (df.value <= df.ci_high + 1e-9).all()


def test_cka_interval_covers_the_population_value_of_noise():
    """Independent noise: the finite-sample CKA sits above 0, and its interval must contain the
    estimate (a bootstrap over examples would not: duplicates inflate CKA)."""
    rng = np.random.default_rng(1)
    pre = rng.normal(size=(1, 100, 20))
    fine = rng.normal(size=(1, 100, 20))
    row = cka_by_layer(pre, fine).iloc[0]
    assert row.ci_low <= row.value <= row.ci_high
    assert row.ci_high - row.ci_low < 0.3
