"""TaskData: the splits, the planted fine-tuning data and the held-out test partitions of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probe.config import Config, PlantedFeature, stable_hash
from probe.data.planted import insert_token, insertion_positions, plant_mask
from probe.data.sources import load_text_classification
from probe.data.splits import resolve_size, stratified_splits
from probe.errors import ProbeError
from probe.tasks import check_dataset_kind
from probe.tasks.sequence import SPEC


@dataclass
class PlantedTest:
    """Held-out partitions for one planted token with target class ``target`` (docs/design.md §2).

    ``inserted[i]`` is test example ``i`` with the token inserted; ``aligned`` examples are
    those with ``label == target``, ``conflicting`` the rest. ``clean`` and ``inserted`` form
    the counterfactual pairs. ``probe_has_token`` says which version the probing set uses:
    drawn with probability 1/2 independently of the label, so a probe for the token cannot
    succeed by decoding the topic.
    """

    feature: PlantedFeature
    target: int
    inserted: list[str]
    probe_has_token: np.ndarray
    train_rate_in_class: float
    train_rate_outside: float
    natural_rate: float


@dataclass
class TaskData:
    classes: list[str]
    train_texts: list[str]
    train_labels: np.ndarray
    val_texts: list[str]
    val_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    planted: list[PlantedTest] = field(default_factory=list)
    probe_texts: list[str] = field(default_factory=list)
    n_total: int = 0
    corpus_texts: list[str] = field(default_factory=list)
    corpus_labels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Hash of everything the fine-tuning stage sees."""
        return stable_hash([self.classes, self.train_texts, self.train_labels.tolist(),
                            self.val_texts, self.val_labels.tolist()])


def _check_split_classes(config: Config, classes: list[str], labels: np.ndarray,
                         splits: tuple[np.ndarray, np.ndarray, np.ndarray], notes: list[str]) -> None:
    """Refuse a planted feature whose target class has no test example, or whose test split has nothing
    outside it (its aligned or conflicting metrics would be means over zero examples); note a class
    with a single example (it can be in one split at most, so no metric measures it)."""
    counts = np.bincount(labels, minlength=len(classes))
    test_counts = np.bincount(labels[splits[2]], minlength=len(classes))
    for k, feature in enumerate(config.spurious):
        target = classes.index(feature.target_class)
        if test_counts[target] == 0 or test_counts.sum() == test_counts[target]:
            which = "no test example of it" if test_counts[target] == 0 else "no test example of another class"
            raise ProbeError(
                f"spurious.{k}.target_class: {feature.target_class!r} has {counts[target]} example"
                f"{'s' if counts[target] != 1 else ''} in {config.task.dataset!r} and the test split has {which}, "
                "so the aligned or conflicting accuracy would be measured on zero examples; allowed: a class with "
                "test examples (or a larger task.test_size)")
    for i, (c, count) in enumerate(zip(classes, counts)):
        if count == 1:
            where = [name for name, idx in zip(("train", "validation", "test"), splits) if (labels[idx] == i).any()]
            notes.append(f"class {c!r} has a single example in {config.task.dataset!r} (in "
                         f"{where[0] + ' only' if where else 'no split'}): no metric can measure it")


def build_task_data(config: Config) -> TaskData:
    """Load, check and split the dataset, plant the spurious tokens and build test partitions.

    Deterministic in ``config.seed``. Raises :class:`ProbeError` for data the config
    cannot be run on (sizes larger than the data, unknown target class, ...).
    """
    t = config.task
    notes: list[str] = []
    check_dataset_kind(t.dataset, SPEC.name, f"allowed with task.type {SPEC.name}: a {SPEC.name} dataset such as "
                       f"{', '.join(SPEC.datasets)}, or your own")
    texts, labels, classes = load_text_classification(t.dataset, t.text_column, t.label_column,
                                                      max_dropped_share=t.max_dropped_share, notes=notes)
    n = len(texts)
    sizes = tuple(resolve_size(v, n) for v in (t.train_size, t.validation_size, t.test_size))
    names = ("task.train_size", "task.validation_size", "task.test_size")
    for name, raw, size in zip(names, (t.train_size, t.validation_size, t.test_size), sizes):
        if size < len(classes):
            raise ProbeError(
                f"{name}: {raw} gives {size} examples, fewer than the {len(classes)} classes; "
                f"allowed: at least {len(classes)}"
            )
        if size > n:
            raise ProbeError(f"{name}: {raw} is larger than the dataset ({n} examples); allowed: at most {n}")
    if sum(sizes) > n:
        raise ProbeError(
            f"task: train + validation + test sizes ({sizes[0]} + {sizes[1]} + {sizes[2]} = {sum(sizes)}) "
            f"exceed the dataset's {n} examples"
        )
    for feature_index, feature in enumerate(config.spurious):
        if feature.target_class not in classes:
            raise ProbeError(
                f"spurious.{feature_index}.target_class: {feature.target_class!r} is not a class of "
                f"{t.dataset!r}; allowed: {', '.join(classes)}"
            )

    tr, va, te = stratified_splits(labels, sizes, config.seed)
    _check_split_classes(config, classes, labels, (tr, va, te), notes)
    data = TaskData(
        classes=classes,
        train_texts=[texts[i] for i in tr], train_labels=labels[tr],
        val_texts=[texts[i] for i in va], val_labels=labels[va],
        test_texts=[texts[i] for i in te], test_labels=labels[te],
        n_total=n, notes=notes,
    )
    held_out = np.zeros(n, bool)
    held_out[te] = True  # the pretraining corpus "task": every text outside the test split, before any planting
    data.corpus_texts = [texts[i] for i in np.flatnonzero(~held_out)]
    data.corpus_labels = [classes[labels[i]] for i in np.flatnonzero(~held_out)]
    rng = np.random.default_rng([config.seed, 1])
    probe_texts = list(data.test_texts)
    for feature in config.spurious:
        target = classes.index(feature.target_class)
        token_lower = feature.token.lower()
        natural = float(np.mean([token_lower in x.lower().split() for x in texts]))
        rates = []
        for split in ("train", "val"):
            split_texts = getattr(data, f"{split}_texts")
            split_labels = getattr(data, f"{split}_labels")
            mask = plant_mask(split_labels, target, feature.rate_in_class, feature.rate_outside, rng)
            pos = insertion_positions(split_texts, feature.max_position, rng)
            setattr(data, f"{split}_texts",
                    [insert_token(x, feature.token, p) if m else x for x, m, p in zip(split_texts, mask, pos)])
            if split == "train":
                in_c = split_labels == target
                rates = [float(mask[in_c].mean()) if in_c.any() else 0.0,
                         float(mask[~in_c].mean()) if (~in_c).any() else 0.0]
        pos = insertion_positions(data.test_texts, feature.max_position, rng)
        inserted = [insert_token(x, feature.token, p) for x, p in zip(data.test_texts, pos)]
        has = rng.random(len(data.test_texts)) < 0.5
        probe_texts = [insert_token(x, feature.token, p) if h else x for x, h, p in zip(probe_texts, has, pos)]
        data.planted.append(PlantedTest(feature, target, inserted, has, rates[0], rates[1], natural))
    data.probe_texts = probe_texts
    return data
