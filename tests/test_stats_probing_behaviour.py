import numpy as np
import pytest

from probe.analyses.behaviour import reliance_metrics
from probe.analyses.probing import probe_accuracy, probe_split, probe_suite
from probe.analyses.stats import bootstrap_mean
from probe.analyses.verdict import decodability_sentence, reliance_verdict


def test_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(0)
    small = (rng.random(50) < 0.7).astype(float)
    big = (rng.random(5000) < 0.7).astype(float)
    m, lo, hi = bootstrap_mean(small, 1000, np.random.default_rng(1))
    M, LO, HI = bootstrap_mean(big, 1000, np.random.default_rng(1))
    assert lo <= m <= hi and LO <= 0.7 <= HI
    assert (HI - LO) < (hi - lo) / 5
    assert bootstrap_mean(np.ones(30), 200, np.random.default_rng(0)) == (1.0, 1.0, 1.0)


def test_probe_finds_planted_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    n, d = 1000, 20
    X = rng.normal(size=(n, d))
    y = (X[:, 3] + 0.1 * rng.normal(size=n) > 0).astype(int)
    train, test = probe_split(y, seed=0)
    correct, baseline = probe_accuracy(X, y, train, test)
    assert correct.mean() > 0.95 and baseline.mean() < 0.6
    random_labels = rng.integers(0, 4, size=n)
    train, test = probe_split(random_labels, seed=0)
    correct, baseline = probe_accuracy(X, random_labels, train, test)
    assert abs(correct.mean() - 0.25) < 0.12


def test_probe_suite_tidy_rows():
    rng = np.random.default_rng(0)
    acts = {"pretrained": rng.normal(size=(2, 100, 8)), "finetuned": rng.normal(size=(2, 100, 8))}
    acts["finetuned"][1, :, 0] += np.repeat([0, 4.0], 50)
    y = np.repeat([0, 1], 50)
    train, test = probe_split(y, 0)
    df = probe_suite(acts, {"task": y}, [f"t{i}" for i in range(100)], train, test, C=1.0, max_iter=500, n_boot=100,
                     control=False, progress=False)
    assert list(df.columns[:4]) == ["model", "layer", "property", "metric"]
    per_model = df[df.model.isin(["pretrained", "finetuned"])]
    assert len(per_model) == 2 * 2 * 1 * 3  # accuracy, majority_baseline, probe_C
    assert len(df[df.metric == "accuracy_difference"]) == 2
    acc = df[df.metric == "accuracy"].set_index(["model", "layer"]).value
    assert acc[("finetuned", 1)] > 0.9 and acc[("pretrained", 1)] < 0.75
    sentence = decodability_sentence(df, "task")
    assert "layers 1" in sentence and "more decodable at layers 1" in sentence


def test_reliance_metrics_known_answers():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    target = 0
    clean = labels.copy()                      # perfect on clean inputs
    inserted = np.array([0, 0, 0, 1, 0, 0, 2, 2])  # token pulls half of the others to class 0
    df = reliance_metrics(clean, inserted, labels, target, 200, 0, "tok").set_index("metric")
    assert df.loc["clean_accuracy", "value"] == 1.0
    assert df.loc["aligned_accuracy", "value"] == 1.0
    assert df.loc["conflicting_accuracy_before", "value"] == 1.0
    assert df.loc["conflicting_accuracy", "value"] == 0.5
    assert df.loc["s_only_error", "value"] == 0.5
    assert df.loc["reliance_gap", "value"] == 0.5
    assert df.loc["flip_rate", "value"] == 0.5
    assert df.loc["flip_rate_aligned", "value"] == 0.0
    assert df.loc["flip_rate", "n"] == 6


def _m(v, lo, hi):
    return {"value": v, "ci_low": lo, "ci_high": hi}


def _metrics(gap, clean=(0.95, 0.92, 0.97)):
    return {"reliance_gap": _m(*gap), "clean_accuracy": _m(*clean),
            "conflicting_accuracy_before": _m(0.9, 0.85, 0.95), "conflicting_accuracy": _m(0.2, 0.15, 0.25),
            "flip_rate": _m(0.7, 0.65, 0.75), "s_only_error": _m(0.7, 0.65, 0.75)}


@pytest.mark.parametrize("gap, clean, status", [
    ((0.7, 0.6, 0.8), (0.95, 0.92, 0.97), "relies"),
    ((0.01, -0.01, 0.03), (0.95, 0.92, 0.97), "none"),
    ((0.06, 0.02, 0.10), (0.95, 0.92, 0.97), "inconclusive"),
    ((0.0, 0.0, 0.0), (0.25, 0.2, 0.3), "inconclusive"),  # collapsed model: no gap means nothing
])
def test_verdict_comes_from_the_interval(gap, clean, status):
    got, sentence = reliance_verdict(_metrics(gap, clean), "zebra", "business", 0.05, majority_rate=0.23)
    assert got == status
    assert "zebra" in sentence and "business" in sentence


def test_probe_suite_mlp_family_sees_nonlinear_signal():
    rng = np.random.default_rng(0)
    n = 240
    X = rng.normal(size=(n, 4))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)  # XOR: no linear probe can decode it
    acts = {"pretrained": np.stack([X, rng.normal(size=(n, 4))]), "finetuned": np.stack([X, X])}
    train, test = probe_split(y, 0)
    types = [f"t{i}" for i in range(n)]
    mlp = probe_suite(acts, {"xor": y}, types, train, test, family="mlp", C="cv", n_boot=100, progress=False)
    linear = probe_suite(acts, {"xor": y}, types, train, test, family="logistic", C=1.0, n_boot=100,
                         progress=False)
    acc = lambda df: df[df.metric == "accuracy"].set_index(["model", "layer"]).value  # noqa: E731
    assert acc(mlp)[("finetuned", 0)] > 0.85 and acc(linear)[("finetuned", 0)] < 0.7
    assert acc(mlp)[("pretrained", 1)] < 0.7  # noise layer stays at chance
    sel = mlp[mlp.metric == "selectivity"].set_index(["model", "layer"]).value
    assert sel[("finetuned", 0)] > 0.3
