"""Probing classifiers: logistic regression on standardised pooled activations (DESIGN.md §5).

A probe's accuracy says how linearly decodable a property is from a layer; it is always
shown next to the majority-class baseline (Belinkov 2022, "Probing Classifiers").
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from probe.analyses.stats import bootstrap_mean, metric_row


def probe_split(y: np.ndarray, seed: int, test_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train / held-out split of probe examples, from ``seed``."""
    rng = np.random.default_rng([seed, 3])
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def fit_probe(X_train: np.ndarray, y_train: np.ndarray, C: float = 1.0, max_iter: int = 2000, seed: int = 0):
    """Multinomial logistic regression on standardised features (scikit-learn)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return probe.fit(X_train, y_train)


def probe_accuracy(
    X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
    C: float = 1.0, max_iter: int = 2000, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness of a probe on ``test`` and of the majority-class baseline."""
    probe = fit_probe(X[train], y[train], C, max_iter, seed)
    correct = probe.predict(X[test]) == y[test]
    values, counts = np.unique(y[train], return_counts=True)
    majority = values[np.argmax(counts)]
    return correct.astype(float), (y[test] == majority).astype(float)


#: L2 strengths tried by cross-validation. C = 10 was never chosen on the default run's 200
#: probe-training examples and doubled the solve time (slow convergence), so it is left out.
CV_GRID = (0.01, 0.1, 1.0)


def probe_suite(
    activations: dict[str, np.ndarray], properties: dict[str, np.ndarray], types: list[str],
    train: np.ndarray, test: np.ndarray, family: str = "logistic", C: float | str = "cv",
    max_iter: int = 2000, n_boot: int = 1000, seed: int = 0, control: bool = True, progress: bool = True,
) -> pd.DataFrame:
    """Every (model, layer, property): probe accuracy, majority baseline, control-task accuracy and
    selectivity (Hewitt & Liang 2019), and fine-tuned minus pretrained accuracy, all with 95 %
    bootstrap intervals over the held-out probe examples (paired where two numbers share them).

    The control task gives every document *type* (``types[i]``, its first content word) one
    random label drawn from the property's label distribution. Logistic probes of all layers
    and properties are fitted in a few batched solves (:func:`fit_probes_batched`), with C
    chosen by cross-validation on ``train`` when ``C == "cv"`` (the control task reuses its
    property's C: the same probe); MLP probes one by one.
    """
    from probe.analyses.control_tasks import control_labels

    labels = dict(properties)
    if control:
        for i, (name, y) in enumerate(properties.items()):
            c = control_labels(types, y, np.random.default_rng([seed, 6, i]))
            if np.unique(c[train]).size > 1:  # too few document types give a constant control: no control
                labels[f"control:{name}"] = c
    outcomes = _fit_all(activations, labels, train, test, family, C, max_iter, seed, progress)
    rows = []
    for model, A in activations.items():
        for layer in range(A.shape[0]):
            for j, name in enumerate(properties):
                key = dict(model=model, layer=layer, property=name)
                correct, baseline, chosen_C = outcomes[(model, layer, name)]
                rng = np.random.default_rng([seed, 4, layer, j, model == "finetuned"])
                rows.append(metric_row(bootstrap_mean(correct, n_boot, rng), metric="accuracy", **key))
                rows.append(metric_row(bootstrap_mean(baseline, n_boot, rng), metric="majority_baseline", **key))
                if f"control:{name}" in labels:
                    c_correct = outcomes[(model, layer, f"control:{name}")][0]
                    rows.append(metric_row(bootstrap_mean(c_correct, n_boot, rng), metric="control_accuracy", **key))
                    rows.append(metric_row(bootstrap_mean(correct - c_correct, n_boot, rng), metric="selectivity",
                                           **key))
                rows.append(metric_row((chosen_C, np.nan, np.nan), metric="probe_C", **key))
    if {"pretrained", "finetuned"} <= set(activations):
        for layer in range(min(A.shape[0] for A in activations.values())):
            for j, name in enumerate(properties):
                diff = outcomes[("finetuned", layer, name)][0] - outcomes[("pretrained", layer, name)][0]
                rng = np.random.default_rng([seed, 8, layer, j])
                rows.append(metric_row(bootstrap_mean(diff, n_boot, rng), model="finetuned-minus-pretrained",
                                       layer=layer, property=name, metric="accuracy_difference"))
    return pd.DataFrame(rows)


def _fit_all(activations, labels, train, test, family, C, max_iter, seed, progress):
    """``{(model, layer, label set): (correct, baseline, C)}`` on ``test``."""
    if family == "logistic":
        from probe.analyses.batched_probe import fit_probes_batched

        controls = {name: name.removeprefix("control:") for name in labels if name.startswith("control:")}
        out = fit_probes_batched(activations, labels, train, test, C=1.0 if C == "cv" else float(C),
                                 max_iter=max_iter, cv_grid=CV_GRID if C == "cv" else None, seed=seed,
                                 C_from=controls)
        return {k: (o.correct, o.baseline, o.C) for k, o in out.items()}
    from tqdm.auto import tqdm

    result = {}
    jobs = [(m, l, p) for m, A in activations.items() for l in range(A.shape[0]) for p in labels]
    for m, l, p in tqdm(jobs, desc="MLP probes", disable=not progress, leave=False):
        y = np.asarray(labels[p])
        X = activations[m][l]
        alpha = _mlp_alpha_by_holdout(X[train], y[train], seed) if C == "cv" else 1.0 / float(C)
        probe = _mlp(alpha, seed).fit(X[train], y[train])
        values, counts = np.unique(y[train], return_counts=True)
        result[(m, l, p)] = ((probe.predict(X[test]) == y[test]).astype(float),
                             (y[test] == values[np.argmax(counts)]).astype(float), 1.0 / alpha)
    return result


MLP_ALPHA_GRID = (1e-3, 1e-2, 1e-1, 1.0)


def _mlp(alpha: float, seed: int):
    from probe.analyses.batched_probe import MLPProbe

    return MLPProbe(alpha=alpha, seed=seed)


def _mlp_alpha_by_holdout(X: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Weight decay of the MLP probe: best held-out accuracy on a stratified third of the
    training split (ties go to the stronger decay); only training examples are used."""
    fit_idx, val_idx = probe_split(y, seed, test_fraction=1 / 3)
    scores = [(-(_mlp(a, seed).fit(X[fit_idx], y[fit_idx]).predict(X[val_idx]) == y[val_idx]).mean(), -a)
              for a in MLP_ALPHA_GRID]
    return -min(scores)[1]
