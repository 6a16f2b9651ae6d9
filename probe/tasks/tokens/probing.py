"""Token-level probing with the word-type control task (Hewitt & Liang 2019; docs/design.md §5).

Every (model, layer, property) gets a linear probe on word vectors
(:func:`probe.tasks.tokens.extract.extract_words`): multinomial logistic regression on
standardised features (Belinkov 2022), fitted in a few batched solves
(:func:`probe.analyses.probing.fit_probes_batched`). Words of one sentence share context,
so the probe's train / test halves are split *by sentence*: a probe can never be scored on a
word whose sentence it was trained on.

The control task gives every word type (its lower-cased form) one random label drawn from the
property's empirical label distribution; selectivity = accuracy − control accuracy on the same
held-out words, with a paired bootstrap interval. It only means something when test types also
occur in training, so the share of such test words is reported as ``type_overlap``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from probe.analyses.stats import metric_row


def token_probe_split(
    sentence_ids: np.ndarray, seed: int, max_words: int | None = None, test_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Probe-train / probe-test word indices, every sentence wholly on one side.

    With ``max_words``, a random subset of whole sentences holding at most ``max_words`` words
    is kept first (at least one sentence). Sentences are then dealt, in a random order, to the
    test side until it holds ``test_fraction`` of the kept words. Deterministic in ``seed``.
    """
    sentence_ids = np.asarray(sentence_ids)
    uniq, inverse, sizes = np.unique(sentence_ids, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    rng = np.random.default_rng([seed, 21])
    order = rng.permutation(uniq.size)
    if max_words is not None and sizes.sum() > max_words:
        cum = np.cumsum(sizes[order])
        order = order[: max(1, int(np.searchsorted(cum, max_words, side="right")))]
    cum = np.cumsum(sizes[order])
    n_test = int(np.searchsorted(cum, test_fraction * cum[-1], side="left")) + 1 if cum.size else 0
    if order.size > 1:  # keep at least one sentence to train on
        n_test = min(n_test, order.size - 1)
    side = np.full(uniq.size, -1)
    side[order[:n_test]] = 1
    side[order[n_test:]] = 0
    word_side = side[inverse]
    return np.flatnonzero(word_side == 0), np.flatnonzero(word_side == 1)


def cluster_bootstrap_mean(values: np.ndarray, clusters: np.ndarray, n_boot: int, rng: np.random.Generator,
                           level: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-word ``values`` with a percentile interval from resampling whole sentences
    (``clusters``) with replacement: the words of one sentence are not independent, so resampling
    words would give intervals that are too narrow (Field & Welsh 2007, cluster bootstrap)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    _, cl = np.unique(clusters, return_inverse=True)
    sums = np.bincount(cl, weights=values)
    counts = np.bincount(cl).astype(np.float64)
    draws = rng.integers(0, sums.size, size=(n_boot, sums.size))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(values.mean()), float(lo), float(hi)


def token_probe_table(
    activations: dict[str, np.ndarray], labels: dict[str, np.ndarray], sentence_ids: np.ndarray,
    types: Sequence[str], seed: int, C: float | str = "cv", n_boot: int = 1000, max_words: int | None = 4000,
    control: bool = True, progress: bool = False, max_iter: int = 1000,
) -> pd.DataFrame:
    """Probe accuracy, majority baseline, control accuracy and selectivity for every (model, layer, label set).

    ``activations`` maps a model name to ``[L + 1, n_words, d]`` over the same words;
    ``labels`` maps a property (natural word properties, the tag, a planted cue) to ``[n_words]``
    labels; ``sentence_ids[i]`` and ``types[i]`` are word i's sentence and word type. Words are
    subsampled to at most ``max_words`` and split by sentence (:func:`token_probe_split`). C is
    chosen by cross-validation on the probe-train half when ``C == "cv"`` (the control probe
    reuses its property's C: the same probe). Rows (tidy, :func:`metric_row`): ``accuracy``,
    ``majority_baseline`` (the train half's majority class scored on the test half), ``control_accuracy``,
    ``selectivity`` (paired), ``probe_C``; ``accuracy_difference`` (finetuned − pretrained, paired)
    when both are given; and one ``type_overlap`` row. Intervals: 95 % percentile bootstrap over
    test *sentences* (a cluster bootstrap: words of a sentence are not independent). Properties with a single class on the train half are skipped
    (``DataFrame.attrs["skipped"]`` says which and why). Hewitt & Liang (2019); Belinkov (2022).
    """
    from tqdm.auto import tqdm

    from probe.analyses.probing import CV_GRID, fit_probes_batched

    sentence_ids = np.asarray(sentence_ids)
    types = np.asarray(list(types), dtype=object).astype(str)
    _check_inputs(activations, labels, sentence_ids.size, types, C)
    train, test = token_probe_split(sentence_ids, seed, max_words)
    groups = sentence_ids[test]

    def interval(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
        return cluster_bootstrap_mean(values, groups, n_boot, rng)

    probed, fit_labels, controls, skipped = _label_sets(labels, types, train, test, seed, control)
    outcomes = {}
    if probed:
        for model in tqdm(list(activations), desc="token probes", disable=not progress, leave=False):
            outcomes.update(fit_probes_batched(
                {model: activations[model]}, fit_labels, train, test, C=1.0 if C == "cv" else float(C),
                max_iter=max_iter, cv_grid=CV_GRID if C == "cv" else None, seed=seed, C_from=controls))
    rows = _table_rows(activations, list(probed), fit_labels, outcomes, seed, interval)
    # the share of test words whose type occurs in training (control_tasks.type_overlap), with an interval
    seen = set(types[train].tolist())
    overlap = np.array([t in seen for t in types[test]], dtype=float)
    value = interval(overlap, np.random.default_rng([seed, 9]))
    rows.append(metric_row(value, model=None, layer=None, property=None, metric="type_overlap"))
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")  # integers; missing on the type_overlap row
    table.attrs["skipped"] = skipped
    table.attrs["n_train_words"], table.attrs["n_test_words"] = int(train.size), int(test.size)
    return table


def _check_inputs(activations: dict[str, np.ndarray], labels: dict[str, np.ndarray], n: int, types: np.ndarray,
                  C: float | str) -> None:
    if len(types) != n:
        raise ValueError(f"{len(types)} types but {n} words (sentence_ids)")
    for m, A in activations.items():
        if A.ndim != 3 or A.shape[1] != n:
            raise ValueError(f"activations[{m!r}] has shape {A.shape}; expected [layers, {n}, hidden]")
    for p, y in labels.items():
        if np.shape(y) != (n,):
            raise ValueError(f"labels[{p!r}] has shape {np.shape(y)}; expected ({n},)")
    if C != "cv" and not (isinstance(C, (int, float)) and C > 0):
        raise ValueError(f"C: {C!r}; allowed: 'cv' or a positive number")


def _label_sets(labels: dict[str, np.ndarray], types: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int,
                control: bool) -> tuple[dict, dict, dict, dict]:
    """``(probed, fit_labels, controls, skipped)``: the properties with two classes on the train
    half, those plus their word-type control tasks, control → property, and skipped → why."""
    from probe.analyses.control_tasks import control_labels

    keep = np.sort(np.concatenate([train, test]))
    probed: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name, y in labels.items():
        y = np.asarray(y)
        if np.unique(y[train]).size < 2:
            skipped[name] = f"a single class on the {train.size} probe-train words"
        else:
            probed[name] = y
    fit_labels = dict(probed)
    controls: dict[str, str] = {}
    if control:
        for i, (name, y) in enumerate(labels.items()):
            if name not in probed:
                continue
            c = np.zeros_like(y)
            c[keep] = control_labels(types[keep], y[keep], np.random.default_rng([seed, 6, i]))
            if np.unique(c[train]).size > 1:  # too few types can give a constant control: no control then
                fit_labels[f"control:{name}"] = c
                controls[f"control:{name}"] = name
    return probed, fit_labels, controls, skipped


def _table_rows(activations: dict[str, np.ndarray], probed: list[str], fit_labels: dict, outcomes: dict, seed: int,
                interval) -> list[dict]:
    """The accuracy, baseline, control, selectivity, C and fine-tuned − pretrained rows."""
    rows = []
    for mi, (model, A) in enumerate(activations.items()):
        for layer in range(A.shape[0]):
            for j, name in enumerate(probed):
                key = dict(model=model, layer=layer, property=name)
                rng = np.random.default_rng([seed, 4, mi, layer, j])
                out = outcomes[(model, layer, name)]
                rows.append(metric_row(interval(out.correct, rng), metric="accuracy", **key))
                rows.append(metric_row(interval(out.baseline, rng), metric="majority_baseline", **key))
                if f"control:{name}" in fit_labels:
                    c_correct = outcomes[(model, layer, f"control:{name}")].correct
                    rows.append(metric_row(interval(c_correct, rng), metric="control_accuracy", **key))
                    rows.append(metric_row(interval(out.correct - c_correct, rng), metric="selectivity", **key))
                rows.append(metric_row((out.C, np.nan, np.nan), metric="probe_C", **key))
    if {"pretrained", "finetuned"} <= set(activations):
        for layer in range(min(A.shape[0] for A in activations.values())):
            for j, name in enumerate(probed):
                diff = outcomes[("finetuned", layer, name)].correct - outcomes[("pretrained", layer, name)].correct
                rng = np.random.default_rng([seed, 8, layer, j])
                rows.append(metric_row(interval(diff, rng), model="finetuned-minus-pretrained",
                                       layer=layer, property=name, metric="accuracy_difference"))
    return rows
