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


@pytest.mark.parametrize("n, d, debiased", [(30, 5, False), (30, 50, False), (30, 5, True), (40, 60, True),
                                            (6, 3, True), (25, 8, False)])
def test_closed_form_cka_jackknife_equals_the_explicit_leave_one_out(n, d, debiased):
    """The O(n²) jackknife gives the same point and interval as recomputing CKA on each of the n subsets."""
    from probe.analyses.similarity import _cka_from_grams, cka_jackknife
    from probe.analyses.stats import jackknife_statistic

    rng = np.random.default_rng(n + d)
    X = rng.normal(size=(n, d))
    Y = X @ rng.normal(size=(d, d)) + 0.5 * rng.normal(size=(n, d)) + 3.0
    Y[0] *= 20.0  # one influential example, so the leave-one-out values differ a lot
    K, L = X @ X.T, Y @ Y.T
    closed = cka_jackknife(K, L, debiased=debiased)
    explicit = jackknife_statistic(
        n, lambda idx: _cka_from_grams(K[np.ix_(idx, idx)], L[np.ix_(idx, idx)], debiased=debiased))
    assert closed[2] - closed[1] > 1e-3  # a real interval, not a degenerate one
    np.testing.assert_allclose(closed, explicit, rtol=0, atol=1e-6)


def test_cka_by_layer_intervals_equal_the_explicit_jackknife():
    from probe.analyses.similarity import _cka_from_grams
    from probe.analyses.stats import jackknife_statistic

    rng = np.random.default_rng(3)
    pre = rng.normal(size=(2, 20, 6))
    fine = pre + 0.7 * rng.normal(size=pre.shape)
    table = cka_by_layer(pre, fine, debiased=True)
    for r in table.itertuples():
        K, L = pre[r.layer] @ pre[r.layer].T, fine[r.layer] @ fine[r.layer].T
        expected = jackknife_statistic(20, lambda idx: _cka_from_grams(
            K[np.ix_(idx, idx)], L[np.ix_(idx, idx)], debiased=r.metric == "debiased_linear_cka"))
        np.testing.assert_allclose((r.value, r.ci_low, r.ci_high), expected, rtol=0, atol=1e-6)


def test_cka_by_layer_is_exact_under_a_large_offset_and_undefined_for_a_constant_representation():
    """A common offset of 1e4 (a decoder's last token embedding dominating) must not cancel inside the
    closed-form sums; a representation equal for every example has no CKA (NaN), not a number."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 8))
    Y = X @ rng.normal(size=(8, 8)) + rng.normal(size=(60, 8))
    constant = np.tile(rng.normal(size=(1, 8)) * 1e3, (60, 1)) + 1e-9 * rng.normal(size=(60, 8))
    pre = np.stack([X + 1e4, constant])
    fine = np.stack([Y - 3e4, Y])
    table = cka_by_layer(pre, fine, debiased=True)
    first = table[table.layer == 0].set_index("metric")
    assert first.loc["linear_cka", "value"] == pytest.approx(linear_cka(X, Y), abs=1e-9)
    assert first.loc["debiased_linear_cka", "value"] == pytest.approx(linear_cka(X, Y, debiased=True), abs=1e-9)
    assert 0 < first.loc["linear_cka", "ci_low"] < first.loc["linear_cka", "value"] < first.loc["linear_cka", "ci_high"]
    assert table[table.layer == 1][["value", "ci_low", "ci_high"]].isna().all().all()
