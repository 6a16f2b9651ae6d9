"""The probe estimator against scikit-learn (the reference), batched fits, CV and the MLP probe."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from probe.analyses.logistic_probe import LogisticProbe, choose_C_by_cv  # noqa: E402
from probe.analyses.mlp_probe import MLPProbe  # noqa: E402
from probe.analyses.probing import fit_probes_batched, probe_accuracy  # noqa: E402


def _sklearn(X, y, C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=10000, tol=1e-8)).fit(X, y)


def _sklearn_objective(pipe, X, y, C):
    """scikit-learn's scaled objective: mean CE + ||W||² / (2 C n)."""
    lr = pipe[-1]
    P = lr.predict_proba(pipe[0].transform(X))
    ce = -np.log(P[np.arange(len(y)), np.searchsorted(lr.classes_, y)]).mean()
    return ce + (lr.coef_ ** 2).sum() / (2 * C * len(y))


def _problems(seed=0, n=240, d=30):
    """Problems with 2, 3 and 5 classes, a planted linear signal plus noise, correlated features."""
    rng = np.random.default_rng(seed)
    Xs, ys = [], []
    for K in (2, 3, 5, 2):
        X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * rng.uniform(0.1, 10, d) + rng.normal(size=d) * 5
        logits = X @ rng.normal(size=(d, K)) / np.sqrt(d) / X.std() * 3 + rng.gumbel(size=(n, K))
        Xs.append(X)
        ys.append(logits.argmax(1) * 2 + 1)  # labels 1, 3, 5, ... (not 0..K-1)
    return np.stack(Xs), np.stack(ys)


def test_matches_sklearn_predictions_and_objective():
    X, y = _problems()
    tr, te = np.arange(0, 240, 2), np.arange(1, 240, 2)
    C = np.array([1.0, 0.1, 1.0, 10.0])
    probe = LogisticProbe(C=C).fit(X[:, tr], y[:, tr])
    pred = probe.predict(X[:, te])
    assert probe.converged_.all()
    assert [len(c) for c in probe.classes_] == [2, 3, 5, 2]  # different class counts in one batch
    for b in range(len(X)):
        sk = _sklearn(X[b, tr], y[b, tr], C[b])
        agree = (sk.predict(X[b, te]) == pred[b]).mean()
        assert agree >= 0.99, (b, agree)
        obj = _sklearn_objective(sk, X[b, tr], y[b, tr], C[b])
        assert abs(probe.objective_[b] - obj) <= 1e-3 * obj, (b, probe.objective_[b], obj)
        assert np.allclose(probe.predict_proba(X[:, te])[b, :, : len(sk.classes_)],
                           sk.predict_proba(X[b, te]), atol=2e-2)
    # padded classes have probability 0
    assert np.all(probe.predict_proba(X[:, te])[0, :, 2:] == 0)


def test_float64_and_float32_agree_and_shared_design():
    X, y = _problems(1)
    p32 = LogisticProbe(dtype="float32").fit(X, y)
    p64 = LogisticProbe(dtype="float64").fit(X, y)
    assert np.allclose(p32.objective_, p64.objective_, rtol=1e-4)
    # one design matrix shared by several label sets == the same matrix repeated
    shared = LogisticProbe(dtype="float64").fit(X[0], y)
    repeated = LogisticProbe(dtype="float64").fit(np.repeat(X[:1], 4, 0), y)
    assert np.allclose(shared.objective_, repeated.objective_, rtol=1e-6)
    assert (shared.predict(X[0]) == repeated.predict(np.repeat(X[:1], 4, 0))).all()


def test_planted_signal_and_random_labels():
    rng = np.random.default_rng(2)
    n, d = 400, 50
    X = rng.normal(size=(n, d))
    planted = rng.permutation(np.arange(n) % 2)
    X[:, [3, 7]] += 3 * planted[:, None]  # a planted direction, margin ~ 4 sd
    noise = rng.integers(0, 4, n)
    tr, te = np.arange(0, n, 2), np.arange(1, n, 2)
    probe = LogisticProbe(C=1.0).fit(X[tr], np.stack([planted[tr], noise[tr]]))
    acc = probe.score(X[te], np.stack([planted[te], noise[te]]))
    assert acc[0] >= 0.95
    assert abs(acc[1] - 0.25) <= 0.1


def test_fit_probes_batched_matches_probe_accuracy():
    rng = np.random.default_rng(3)
    n = 160
    acts = {"a": rng.normal(size=(3, n, 20)), "b": rng.normal(size=(2, n, 12))}  # two widths
    props = {"two": (acts["a"][1, :, 0] > 0).astype(int), "three": rng.integers(0, 3, n)}
    train, test = np.arange(0, n, 2), np.arange(1, n, 2)
    res = fit_probes_batched(acts, props, train, test, C=1.0)
    assert list(res) == [(m, l, p) for m in acts for l in range(acts[m].shape[0]) for p in props]
    for (m, l, p), r in res.items():
        correct, baseline = probe_accuracy(acts[m][l], props[p], train, test, C=1.0)
        assert (baseline == r.baseline).all()
        assert (correct != r.correct).mean() <= 0.02, (m, l, p)
        assert r.converged and r.C == 1.0
    assert res[("a", 1, "two")].correct.mean() >= 0.9


def test_cv_prefers_small_C_for_noise_and_larger_for_clean_signal():
    rng = np.random.default_rng(4)
    n, d = 150, 100
    X = rng.normal(size=(n, d))
    noise = rng.integers(0, 2, n)
    clean = (X[:, :5].sum(1) > 0).astype(int)
    C = choose_C_by_cv(X, np.stack([noise, clean]), grid=(0.001, 0.01, 0.1, 1.0, 10.0), folds=3, seed=0)
    assert C.shape == (2,)
    assert C[0] <= 0.01
    assert C[1] >= 0.1
    # deterministic in seed, batched == one by one
    again = [choose_C_by_cv(X, yy, grid=(0.001, 0.01, 0.1, 1.0, 10.0), seed=0) for yy in (noise, clean)]
    assert list(C) == again


def test_cv_in_fit_probes_batched_ignores_the_test_split():
    rng = np.random.default_rng(5)
    n = 120
    acts = {"m": rng.normal(size=(2, n, 40))}
    props = {"noise": rng.integers(0, 2, n), "signal": (acts["m"][0, :, 0] > 0).astype(int)}
    train, test = np.arange(0, n, 2), np.arange(1, n, 2)
    grid = (0.001, 0.01, 0.1, 1.0)
    res = fit_probes_batched(acts, props, train, test, cv_grid=grid, seed=0)
    acts2 = {"m": acts["m"].copy()}
    acts2["m"][:, test] = rng.normal(size=(2, len(test), 40)) * 100  # scramble everything held out
    props2 = {k: v.copy() for k, v in props.items()}
    for v in props2.values():
        v[test] = 1 - v[test]
    res2 = fit_probes_batched(acts2, props2, train, test, cv_grid=grid, seed=0)
    assert all(res[k].C == res2[k].C for k in res)
    assert {r.C for r in res.values()} <= set(grid)
    assert res[("m", 0, "noise")].C <= res[("m", 0, "signal")].C


def test_mlp_solves_xor_where_linear_fails():
    rng = np.random.default_rng(6)
    n = 600
    X = rng.normal(size=(n, 8))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)
    tr, te = np.arange(0, n, 2), np.arange(1, n, 2)
    linear = LogisticProbe().fit(X[tr], y[tr]).score(X[te], y[te])
    mlp = MLPProbe(hidden=128, epochs=300, seed=0).fit(X[tr], y[tr])
    assert linear <= 0.65
    assert mlp.score(X[te], y[te]) >= 0.85
    # seeded: same seed, same predictions; predict_proba rows sum to 1
    again = MLPProbe(hidden=128, epochs=300, seed=0).fit(X[tr], y[tr])
    assert (again.predict_proba(X[te]) == mlp.predict_proba(X[te])).all()
    assert np.allclose(mlp.predict_proba(X[te]).sum(1), 1, atol=1e-5)


def test_constant_feature_and_bad_input():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 5))
    X[:, 2] = 3.0  # constant: scale 1, like StandardScaler
    y = (X[:, 0] > 0).astype(int)
    probe = LogisticProbe(dtype="float64").fit(X, y)
    assert probe.scale_[2] == 1.0
    assert np.isfinite(probe.coef_).all()
    with pytest.raises(ValueError, match="C must be positive"):
        LogisticProbe(C=0).fit(X, y)
    with pytest.raises(ValueError, match="does not match"):
        LogisticProbe().fit(X[:50], y)


# --------------------------------------------------------------------------------------------
# one problem, scikit-learn's shapes and numbers (scikit-learn is the reference)


def _reference(X, y, C, class_weight=None, sample_weight=None):
    """``make_pipeline(StandardScaler(), LogisticRegression(C))`` solved to tol 1e-10."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=1e-10, max_iter=20000,
                                                              class_weight=class_weight))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if sample_weight is None:
            return pipe.fit(X, y)
        return pipe.fit(X, y, standardscaler__sample_weight=sample_weight,
                        logisticregression__sample_weight=sample_weight)


def _one_problem(K, seed=0, n=300, d=25):
    """Correlated, badly scaled features; class 1 (label 1) more frequent than the others."""
    X, y = _problems(seed, n, d)
    rng = np.random.default_rng(seed)
    logits = X[0] @ rng.normal(size=(d, K)) / np.sqrt(d) / X[0].std() * 3 + rng.gumbel(size=(n, K))
    logits[:, 0] += 2.5
    return X[0], logits.argmax(1) * 2 + 1


@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
@pytest.mark.parametrize("C", [0.1, 1.0])
def test_one_problem_equals_sklearn_pipeline(K, class_weight, C):
    """Tolerances: float64 at tol 1e-8, probabilities within 1e-5 and identical predictions
    (measured: <= 2e-6); the default float32 at tol 1e-5, within 1e-2 (measured: <= 3e-3)."""
    X, y = _one_problem(K, seed=K)
    tr, te = np.arange(0, 300, 2), np.arange(1, 300, 2)
    sk = _reference(X[tr], y[tr], C, class_weight)
    exact = LogisticProbe(C=C, class_weight=class_weight, dtype="float64", tol=1e-8).fit(X[tr], y[tr])
    assert exact.converged_ and exact.C_ == C
    assert list(exact.classes_) == list(sk.classes_) and exact.n_classes_ == K
    assert exact.coef_.shape == sk[-1].coef_.shape and exact.intercept_.shape == sk[-1].intercept_.shape
    np.testing.assert_allclose(exact.predict_proba(X[te]), sk.predict_proba(X[te]), atol=1e-5)
    np.testing.assert_allclose(exact.decision_function(X[te]), sk.decision_function(X[te]), atol=1e-4)
    np.testing.assert_array_equal(exact.predict(X[te]), sk.predict(X[te]))
    np.testing.assert_allclose(exact.mean_, sk[0].mean_, rtol=1e-10)
    np.testing.assert_allclose(exact.scale_, sk[0].scale_, rtol=1e-10)
    assert exact.score(X[te], y[te]) == pytest.approx(sk.score(X[te], y[te]))
    default = LogisticProbe(C=C, class_weight=class_weight).fit(X[tr], y[tr])
    np.testing.assert_allclose(default.predict_proba(X[te]), sk.predict_proba(X[te]), atol=1e-2)
    assert (default.predict(X[te]) == sk.predict(X[te])).mean() >= 0.99


def test_sample_weight_equals_weighted_scaler_and_loss():
    X, y = _one_problem(3, seed=9)
    w = np.random.default_rng(9).uniform(0.2, 3.0, len(y))
    sk = _reference(X, y, 0.5, sample_weight=w)
    probe = LogisticProbe(C=0.5, dtype="float64", tol=1e-8).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(probe.mean_, sk[0].mean_, rtol=1e-10)
    np.testing.assert_allclose(probe.predict_proba(X), sk.predict_proba(X), atol=1e-5)
    # zero weights drop examples: the same fit as without them
    keep = w > 1.0
    dropped = LogisticProbe(C=0.5, dtype="float64", tol=1e-8).fit(X, y, sample_weight=w * keep)
    alone = LogisticProbe(C=0.5, dtype="float64", tol=1e-8).fit(X[keep], y[keep], sample_weight=w[keep])
    np.testing.assert_allclose(dropped.predict_proba(X), alone.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize("K", [2, 4])
def test_raw_space_map_reproduces_decision_function_and_sklearn(K):
    from probe.models.probe_head import folded_linear

    X, y = _one_problem(K, seed=20 + K)
    probe = LogisticProbe(C=1.0, dtype="float64", tol=1e-8).fit(X, y)
    raw = X @ probe.raw_coef_.T + probe.raw_intercept_
    np.testing.assert_allclose(raw.squeeze(-1) if K == 2 else raw, probe.decision_function(X), rtol=1e-9,
                               atol=1e-9)
    W, b = folded_linear(probe)  # every class's logit: [-d(x)/2, d(x)/2] for two classes
    assert W.shape == (K, X.shape[1])
    logits = X @ W.T + b
    sk = _reference(X, y, 1.0)
    ref = sk.decision_function(X)
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0] if K == 2 else logits, ref, atol=1e-4)
    if K == 2:  # both logits depend on x: a constant class-0 logit has no gradient to attribute
        np.testing.assert_allclose(W[0], -W[1])
        np.testing.assert_allclose(b[0], -b[1])
        assert np.abs(W[0]).max() > 0
    # the sklearn pair folds to the same map
    W_sk, b_sk = folded_linear(sk[0], sk[-1])
    np.testing.assert_allclose(W, W_sk, atol=1e-5 * np.abs(W_sk).max())


def test_probe_head_reproduces_sklearn_predict_proba():
    from torch import nn
    from transformers import PretrainedConfig

    from probe.models.probe_head import fit_probe_head_on_features

    class Encoder(nn.Module):  # the head only needs the encoder's config and device here
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)
            self.config = PretrainedConfig()

    X, y = _one_problem(3, seed=30)
    codes = (y - 1) // 2  # 0, 1, 2
    head = fit_probe_head_on_features(Encoder(), X, codes, C=1.0)
    assert head.config.num_labels == 3 and head.probe_.converged_
    with torch.no_grad():
        proba = torch.softmax(head.head(torch.as_tensor(X, dtype=torch.float32)), -1).numpy()
    sk = _reference(X, codes, 1.0)
    np.testing.assert_allclose(proba, sk.predict_proba(X), atol=1e-2)  # float32 head, float32 fit
    np.testing.assert_allclose(proba, head.probe_.predict_proba(X), atol=1e-4)
    assert (proba.argmax(1) == sk.predict(X)).mean() >= 0.99


def test_cv_folds_are_sklearns_stratified_kfold():
    """The chosen C is the argmax of held-out log-likelihood over StratifiedKFold folds,
    recomputed here with scikit-learn fits."""
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(11)
    n, d = 180, 30
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + X[:, 1] + 1.5 * rng.normal(size=n) > 0).astype(int)
    grid = (0.003, 0.03, 0.3, 3.0)
    chosen = choose_C_by_cv(X, y, grid=grid, folds=3, seed=5, dtype="float64", tol=1e-8)
    totals = []
    for C in grid:
        total = 0.0
        for tr, te in StratifiedKFold(3, shuffle=True, random_state=5).split(X, y):
            p = _reference(X[tr], y[tr], C).predict_proba(X[te])[np.arange(len(te)), y[te]]
            total += np.log(np.maximum(p, 1e-15)).sum()
        totals.append(total)
    assert chosen == grid[int(np.argmax(totals))]
    assert isinstance(chosen, float)
    fitted = LogisticProbe(cv_grid=grid, random_state=5, dtype="float64", tol=1e-8).fit(X, y)
    assert fitted.C_ == chosen


def test_grid_of_designs_and_label_sets():
    """``y [G, S, n]`` on ``X [G, n, d]``: the same fits as one problem at a time."""
    X, y = _problems(12, n=120, d=10)
    Y = np.stack([y[:2], y[2:]])  # [2, 2, n]: two designs, two label sets each
    Xg = X[[0, 2]]
    probe = LogisticProbe(C=0.5, dtype="float64", tol=1e-8).fit(Xg, Y)
    proba = probe.predict_proba(Xg)
    assert proba.shape[:3] == (2, 2, 120) and probe.converged_.shape == (2, 2)
    for g in range(2):
        for s in range(2):
            one = LogisticProbe(C=0.5, dtype="float64", tol=1e-8).fit(Xg[g], Y[g, s])
            k = len(one.classes_)
            assert list(probe.classes_[g][s]) == list(one.classes_)
            np.testing.assert_allclose(proba[g, s, :, :k], one.predict_proba(Xg[g]), atol=1e-6)
            np.testing.assert_array_equal(probe.predict(Xg)[g, s], one.predict(Xg[g]))


def test_sklearn_estimator_contract():
    from sklearn.base import clone

    probe = LogisticProbe(C=0.3, class_weight="balanced", device="cpu")
    assert probe.get_params()["C"] == 0.3 and not hasattr(probe, "coef_")
    X, y = _one_problem(2, seed=3)
    assert probe.fit(X, y) is probe and hasattr(probe, "coef_")
    twin = clone(probe)
    assert twin.get_params() == probe.get_params() and not hasattr(twin, "coef_")
    with pytest.raises(ValueError, match="class_weight"):
        LogisticProbe(class_weight="weird").fit(X, y)
