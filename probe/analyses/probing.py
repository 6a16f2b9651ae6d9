"""Probing classifiers: logistic regression on standardised pooled activations (docs/design.md §5).

A probe's accuracy says how linearly decodable a property is from a layer; it is always
shown next to the majority-class baseline (Belinkov 2022, "Probing Classifiers"). Every linear
probe is a :class:`probe.analyses.logistic_probe.LogisticProbe`; :func:`fit_probes_batched`
fits those of all layers and properties in a few batched solves.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from probe.analyses.control_tasks import control_labels
from probe.analyses.stats import bootstrap_mean, metric_row


def probe_split(y: np.ndarray, seed: int, test_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train / held-out split of probe examples (sorted indices):
    ``train_test_split(..., test_size=test_fraction, stratify=y, random_state=seed)``.

    Where ``y`` cannot be stratified (a class with one example, or fewer examples on a side
    than classes) the split is drawn without stratification.
    """
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    n = len(y)
    counts = np.unique(y, return_counts=True)[1]
    n_test = int(np.ceil(test_fraction * n))
    stratify = y if counts.min(initial=n) >= 2 and min(n_test, n - n_test) >= counts.size else None
    train, test = train_test_split(np.arange(n), test_size=test_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(test)


def fit_probe(X_train: np.ndarray, y_train: np.ndarray, C: float = 1.0, max_iter: int = 2000, seed: int = 0):
    """The report's probe: multinomial logistic regression on standardised features
    (:class:`LogisticProbe`, scikit-learn's ``StandardScaler`` + ``LogisticRegression`` objective).
    ``seed`` is kept for the signature: the fit is deterministic."""
    from probe.analyses.logistic_probe import LogisticProbe

    return LogisticProbe(C=C, max_iter=max_iter).fit(X_train, y_train)


def _majority_correct(y_train: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Per-example correctness on ``y_test`` of the majority class of ``y_train``."""
    values, counts = np.unique(y_train, return_counts=True)
    return (y_test == values[np.argmax(counts)]).astype(float)


def probe_accuracy(
    X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
    C: float = 1.0, max_iter: int = 2000, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness of a probe on ``test`` and of the majority-class baseline."""
    probe = fit_probe(X[train], y[train], C, max_iter, seed)
    correct = probe.predict(X[test]) == y[test]
    return correct.astype(float), _majority_correct(y[train], y[test])


class ProbeOutcome(NamedTuple):
    """Per-example correctness of a probe and of the majority baseline on the test split."""

    correct: np.ndarray
    baseline: np.ndarray
    C: float
    converged: bool


def _design_chunks(activations: dict[str, np.ndarray], size: int) -> list[list[tuple[str, int]]]:
    """(model, layer) designs grouped by width, at most ``size`` per group."""
    by_width: dict[int, list[tuple[str, int]]] = {}
    for m, A in activations.items():
        for layer in range(A.shape[0]):
            by_width.setdefault(A.shape[2], []).append((m, layer))
    return [group[i:i + size] for group in by_width.values() for i in range(0, len(group), size)]


def fit_probes_batched(
    activations: dict[str, np.ndarray], properties: dict[str, np.ndarray],
    train_idx: np.ndarray, test_idx: np.ndarray, C: float = 1.0, max_iter: int = 1000,
    tol: float = 1e-5, cv_grid: Sequence[float] | None = None, cv_folds: int = 3, cv_scoring: str = "log_loss",
    seed: int = 0, device="auto", dtype=None, max_designs_per_batch: int = 64, num_threads: int | None = None,
    C_from: dict[str, str] | None = None,
) -> dict[tuple[str, int, str], ProbeOutcome]:
    """Probe every (model, layer, property) in a few batched solves; same probe as
    :func:`probe_accuracy` (Belinkov 2022).

    ``activations`` maps a model to ``[L, n, d]``; ``properties`` maps a name to ``[n]``
    labels. Layers of equal width are batched together (at most ``max_designs_per_batch``
    layers per solve); the properties of one layer share its design matrix. With
    ``cv_grid``, C is chosen per probe by ``cv_folds``-fold CV on ``train_idx`` only (see
    :func:`probe.analyses.logistic_probe.choose_C_by_cv`). ``C_from`` maps a property to another
    whose cross-validated C it reuses on the same layer: a control task must use the very probe
    of its property (Hewitt & Liang 2019), and skipping its own CV halves the work.
    Returns ``{(model, layer, property): ProbeOutcome(correct, baseline, C, converged)}``
    with per-example 0/1 floats on ``test_idx``.
    """
    from probe.analyses.logistic_probe import LogisticProbe, choose_C_by_cv
    from probe.analyses.tensors import as_tensor, resolve_device, resolve_dtype

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
    names = list(properties)
    Y = np.stack([np.asarray(properties[p]) for p in names])  # [S, n]
    Ytr, Yte = Y[:, train_idx], Y[:, test_idx]
    baseline = {p: _majority_correct(ytr, yte) for p, ytr, yte in zip(names, Ytr, Yte)}
    C_from = C_from or {}
    own = [si for si, p in enumerate(names) if p not in C_from]
    results: dict[tuple[str, int, str], ProbeOutcome] = {}
    for chunk in _design_chunks(activations, max_designs_per_batch):
        Xtr = as_tensor(np.stack([np.asarray(activations[m][l])[train_idx] for m, l in chunk]), dev, dt)
        Xte = as_tensor(np.stack([np.asarray(activations[m][l])[test_idx] for m, l in chunk]), dev, dt)
        Yg = np.broadcast_to(Ytr, (len(chunk),) + Ytr.shape)  # [G, S, n]
        Cg = np.full(Yg.shape[:2], float(C))
        if cv_grid is not None:
            Cg[:, own] = choose_C_by_cv(Xtr, np.ascontiguousarray(Yg[:, own]), cv_grid, cv_folds, seed, cv_scoring,
                                        max_iter, max(tol, 1e-4), dev, dt, num_threads)
            for si, p in enumerate(names):
                if p in C_from:
                    Cg[:, si] = Cg[:, names.index(C_from[p])]
        probe = LogisticProbe(C=Cg, max_iter=max_iter, tol=tol, device=dev, dtype=dt, num_threads=num_threads)
        pred = probe.fit(Xtr, Yg).predict(Xte)  # [G, S, m]
        for gi, (m, l) in enumerate(chunk):
            for si, p in enumerate(names):
                results[(m, l, p)] = ProbeOutcome((pred[gi, si] == Yte[si]).astype(float), baseline[p],
                                                  float(Cg[gi, si]), bool(probe.converged_[gi, si]))
    return {(m, l, p): results[(m, l, p)] for m, A in activations.items() for l in range(A.shape[0]) for p in names}


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
        result[(m, l, p)] = ((probe.predict(X[test]) == y[test]).astype(float),
                             _majority_correct(y[train], y[test]), 1.0 / alpha)
    return result


MLP_ALPHA_GRID = (1e-3, 1e-2, 1e-1, 1.0)


def _mlp(alpha: float, seed: int):
    from probe.analyses.mlp_probe import MLPProbe

    return MLPProbe(alpha=alpha, seed=seed)


def _mlp_alpha_by_holdout(X: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Weight decay of the MLP probe: best held-out accuracy on a stratified third of the
    training split (ties go to the stronger decay); only training examples are used."""
    fit_idx, val_idx = probe_split(y, seed, test_fraction=1 / 3)
    scores = [(-(_mlp(a, seed).fit(X[fit_idx], y[fit_idx]).predict(X[val_idx]) == y[val_idx]).mean(), -a)
              for a in MLP_ALPHA_GRID]
    return -min(scores)[1]
