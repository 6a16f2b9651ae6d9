"""Control tasks and selectivity (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks").

A control task gives every *type* one random label, drawn from the property's empirical
label distribution, and uses it for every occurrence of that type. A probe can only do well
on it by memorising types, so ``selectivity = accuracy(property) − accuracy(control)``
separates what the representation encodes from what the probe can memorise. For
documents, the type is the first content word (:func:`document_type`).

The control labels of held-out examples can only be predicted when their type also occurs
in the probe's training split; :func:`type_overlap` reports how often that is the case.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from probe.analyses.stats import bootstrap_mean

#: A small English stopword list: function words skipped when looking for the first content word.
STOPWORDS: frozenset[str] = frozenset("""
a an the and or but nor so yet if then than as at by for from in into of off on onto out over to up
with without about above after before below between during through under until upon via
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
this that these those there here who whom whose which what when where why how
am is are was were be been being do does did done have has had having will would shall should
can could may might must not no yes all any some each every both either neither such
rt via amp just also very
""".split())

_STRIP = re.compile(r"^[\W_]+|[\W_]+$", flags=re.UNICODE)


def _normalise_word(word: str) -> str:
    return _STRIP.sub("", word.lower())


def document_type(text: str) -> str:
    """The type of a document: its first content word, lower-cased, punctuation stripped.

    Words that are stopwords (:data:`STOPWORDS`), that are empty after stripping, or that
    start with ``@`` / ``#`` / ``http`` (mentions, hashtags, links) are skipped. With no
    content word, the first word (normalised, else as written lower-cased) is returned;
    an empty text gives ``""``.
    """
    words = text.split()
    for w in words:
        low = w.lower()
        if low.startswith(("@", "#", "http", "www.")):
            continue
        norm = _normalise_word(w)
        if norm and norm not in STOPWORDS:
            return norm
    if not words:
        return ""
    return _normalise_word(words[0]) or words[0].lower()


def control_labels(types: Sequence[str], labels: np.ndarray, seed: int | np.random.Generator) -> np.ndarray:
    """Control-task labels (Hewitt & Liang 2019): one random label per distinct type.

    Each distinct type (sorted, so the result does not depend on example order) draws one
    label from the empirical distribution of ``labels`` and every occurrence of the type
    gets it. Deterministic in ``seed``; the output has the dtype of ``labels``.
    """
    labels = np.asarray(labels)
    if len(types) != len(labels):
        raise ValueError(f"{len(types)} types but {len(labels)} labels")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    distinct, inverse = np.unique(np.asarray(types, dtype=object).astype(str), return_inverse=True)
    drawn = rng.choice(len(values), size=len(distinct), p=counts / counts.sum())
    return values[drawn][inverse]


def type_overlap(types: Sequence[str], train: np.ndarray, test: np.ndarray) -> float:
    """Fraction of ``test`` examples whose type also occurs among the ``train`` examples."""
    types = np.asarray(types, dtype=object).astype(str)
    if len(test) == 0:
        return float("nan")
    seen = set(types[train].tolist())
    return float(np.mean([t in seen for t in types[test]]))


def selectivity(acc_property: float, acc_control: float) -> float:
    """Selectivity = accuracy(property) − accuracy(control) (Hewitt & Liang 2019)."""
    return float(acc_property) - float(acc_control)


def control_task_correctness(
    X: np.ndarray, y_property: np.ndarray, y_control: np.ndarray, train: np.ndarray, test: np.ndarray,
    C: float = 1.0, max_iter: int = 2000, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness on ``test`` of the property probe and of the control probe.

    Both are the report's probe (:class:`probe.analyses.logistic_probe.LogisticProbe`, as in
    ``probing.probe_accuracy``) with the same settings, fitted together on the same ``train``
    examples, so ``correct_property - correct_control`` is a paired per-example difference whose
    mean is the selectivity (see :func:`selectivity_interval`). ``seed`` is kept for the
    signature: the fit is deterministic.
    """
    from probe.analyses.logistic_probe import LogisticProbe

    X = np.asarray(X)
    Y = np.stack([np.asarray(y_property), np.asarray(y_control)])
    pred = LogisticProbe(C=C, max_iter=max_iter).fit(X[train], Y[:, train]).predict(X[test])
    correct = (pred == Y[:, test]).astype(float)
    return correct[0], correct[1]


def selectivity_interval(
    correct_property: np.ndarray, correct_control: np.ndarray, n_boot: int, rng: np.random.Generator,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Selectivity and its paired percentile-bootstrap interval over test examples."""
    diff = np.asarray(correct_property, dtype=np.float64) - np.asarray(correct_control, dtype=np.float64)
    return bootstrap_mean(diff, n_boot, rng, level)
