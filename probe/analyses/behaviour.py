"""Behaviour of the fine-tuned model on clean, aligned and conflicting test partitions.

Definitions follow docs/design.md §5: accuracy per partition; s-only error is the fraction of
conflicting examples predicted as the token's class; the reliance gap is the paired drop
in accuracy of the conflicting examples when the token is inserted; the flip rate is the
fraction of counterfactual pairs whose prediction changes (Gardner et al. 2020 contrast sets;
McCoy et al. 2019 for the aligned / conflicting framing); ``flip_to_target`` counts only the
conflicting examples the token moves *to* its class (not predicted as it before, predicted as it
after): unlike the s-only error it does not count a model's prior bias toward that class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probe.analyses.stats import bootstrap_mean, metric_row

METRICS = (
    "clean_accuracy", "aligned_accuracy", "conflicting_accuracy", "conflicting_accuracy_before",
    "s_only_error", "reliance_gap", "flip_rate", "flip_rate_aligned", "flip_to_target",
)


def metric_values(clean_pred: np.ndarray, inserted_pred: np.ndarray, labels: np.ndarray,
                  target: int) -> dict[str, np.ndarray]:
    """Per-example values of every metric in ``METRICS`` (on the partition each one is defined on);
    the mean of each is the metric. ``clean_pred[i]`` and ``inserted_pred[i]`` are the predictions
    for test example ``i`` without and with the token: together they are the counterfactual pairs."""
    aligned = labels == target
    conf = ~aligned
    correct_clean = (clean_pred == labels).astype(float)
    correct_ins = (inserted_pred == labels).astype(float)
    flips = (clean_pred != inserted_pred).astype(float)
    return {
        "clean_accuracy": correct_clean,
        "aligned_accuracy": correct_ins[aligned],
        "conflicting_accuracy": correct_ins[conf],
        "conflicting_accuracy_before": correct_clean[conf],
        "s_only_error": (inserted_pred[conf] == target).astype(float),
        "reliance_gap": correct_clean[conf] - correct_ins[conf],
        "flip_rate": flips[conf],
        "flip_rate_aligned": flips[aligned],
        "flip_to_target": ((inserted_pred[conf] == target) & (clean_pred[conf] != target)).astype(float),
    }


def reliance_metrics(
    clean_pred: np.ndarray, inserted_pred: np.ndarray, labels: np.ndarray, target: int,
    n_boot: int, seed: int, feature: str,
) -> pd.DataFrame:
    """Tidy rows (one per metric) for one planted token with target class ``target``."""
    values = metric_values(clean_pred, inserted_pred, labels, target)
    rows = []
    for i, name in enumerate(METRICS):
        rng = np.random.default_rng([seed, 5, i])
        rows.append(metric_row(bootstrap_mean(values[name], n_boot, rng), model="finetuned", layer=None,
                               property=feature, metric=name, n=int(values[name].size)))
    return pd.DataFrame(rows)
