"""PairData: the splits of a pair task, its planted tokens (each on one side) and test partitions.

The sequence kind's :class:`~probe.tasks.sequence.data.TaskData` with pairs where it has texts:
``train_texts`` / ``val_texts`` / ``test_texts`` / ``probe_texts`` and each planted test's ``inserted``
hold ``(first, second)`` tuples, which the shared tokenizer (:func:`probe.models.batching.tokenize`)
encodes as pairs. The full tables (with each side's source class) are kept in ``tables``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probe.config import Config, stable_hash
from probe.data.planted import insert_token, insertion_positions, plant_mask
from probe.data.splits import resolve_size
from probe.errors import ProbeError
from probe.tasks import check_dataset_kind
from probe.tasks.pairs import SPEC
from probe.tasks.pairs.data import PairTable, group_splits, load_pair_table
from probe.tasks.pairs.news import NAME as NEWS_PAIRS, load_news_pairs
from probe.tasks.sequence.data import PlantedTest, TaskData

SIDES = ("first", "second")


@dataclass
class PairData(TaskData):
    """:class:`TaskData` of pairs; ``tables`` holds the ``train`` / ``val`` / ``test`` :class:`PairTable`
    as loaded (before planting)."""

    tables: dict[str, PairTable] = field(default_factory=dict)

    def fingerprint(self) -> str:
        return stable_hash([self.classes, [list(p) for p in self.train_texts], self.train_labels.tolist(),
                            [list(p) for p in self.val_texts], self.val_labels.tolist(), "pairs"])


def joined(pair: tuple[str, str]) -> str:
    """A pair as one string, for what reads single texts (natural properties, document types)."""
    return f"{pair[0]} {pair[1]}"


def _insert(pair: tuple[str, str], token: str, side: str, position: int) -> tuple[str, str]:
    k = SIDES.index(side)
    out = list(pair)
    out[k] = insert_token(pair[k], token, position)
    return out[0], out[1]


def _split_tables(config: Config, notes: list[str]) -> tuple[PairTable, PairTable, PairTable]:
    t = config.task
    raw = (t.train_size, t.validation_size, t.test_size)
    if t.dataset == NEWS_PAIRS:
        return load_news_pairs(raw, config.seed, t.pair_negatives, notes=notes)
    check_dataset_kind(t.dataset, SPEC.name, "allowed with task.type text-pair: a table with two text columns, or "
                       f"{', '.join(SPEC.datasets)}")
    table = load_pair_table(t.dataset, t.text_column, t.text_pair_column, t.label_column,
                            max_dropped_share=t.max_dropped_share, notes=notes)
    n = len(table)
    sizes = tuple(resolve_size(v, n) for v in raw)
    if sum(sizes) > n:
        raise ProbeError(f"task: train + validation + test sizes ({' + '.join(map(str, sizes))} = {sum(sizes)}) "
                         f"exceed the dataset's {n} pairs")
    return tuple(table.subset(idx) for idx in group_splits(table.groups, sizes, config.seed))


def build_pair_data(config: Config) -> PairData:
    """Load and split the pairs, plant each spurious token into its side, build the test partitions.

    Deterministic in ``config.seed``; one-line :class:`ProbeError` for data the config cannot run on."""
    notes: list[str] = []
    train, val, test = _split_tables(config, notes)
    classes = train.classes
    names = ("task.train_size", "task.validation_size", "task.test_size")
    for name, part in zip(names, (train, val, test)):
        if len(part) < len(classes):
            raise ProbeError(f"{name}: gives {len(part)} pairs, fewer than the {len(classes)} classes; allowed: at "
                             f"least {len(classes)}")
    for k, feature in enumerate(config.spurious):
        if feature.target_class not in classes:
            raise ProbeError(f"spurious.{k}.target_class: {feature.target_class!r} is not a class of "
                             f"{config.task.dataset!r}; allowed: {', '.join(classes)}")
    data = PairData(classes=classes, train_texts=train.pairs, train_labels=train.labels, val_texts=val.pairs,
                    val_labels=val.labels, test_texts=test.pairs, test_labels=test.labels,
                    n_total=len(train) + len(val) + len(test), notes=notes,
                    tables={"train": train, "val": val, "test": test})
    data.corpus_texts = train.firsts + train.seconds + val.firsts + val.seconds
    data.corpus_labels = [None] * len(data.corpus_texts)
    _plant(config, data)
    return data


def _plant(config: Config, data: PairData) -> None:
    """The sequence kind's planting (docs/design.md §2), each token into its ``side`` of the pair."""
    rng = np.random.default_rng([config.seed, 1])
    probe = list(data.test_texts)
    for feature in config.spurious:
        k = SIDES.index(feature.side)
        target = data.classes.index(feature.target_class)
        every = [p[k] for split in ("train", "val", "test") for p in data.tables[split].pairs]
        natural = float(np.mean([feature.token.lower() in x.lower().split() for x in every]))
        rates = [0.0, 0.0]
        for split in ("train", "val"):
            pairs, labels = getattr(data, f"{split}_texts"), getattr(data, f"{split}_labels")
            mask = plant_mask(labels, target, feature.rate_in_class, feature.rate_outside, rng)
            pos = insertion_positions([p[k] for p in pairs], feature.max_position, rng)
            setattr(data, f"{split}_texts", [_insert(p, feature.token, feature.side, q) if m else p
                                             for p, m, q in zip(pairs, mask, pos)])
            if split == "train":
                inside = labels == target
                rates = [float(mask[inside].mean()) if inside.any() else 0.0,
                         float(mask[~inside].mean()) if (~inside).any() else 0.0]
        pos = insertion_positions([p[k] for p in data.test_texts], feature.max_position, rng)
        inserted = [_insert(p, feature.token, feature.side, q) for p, q in zip(data.test_texts, pos)]
        has = rng.random(len(data.test_texts)) < 0.5
        probe = [_insert(p, feature.token, feature.side, q) if h else p for p, h, q in zip(probe, has, pos)]
        data.planted.append(PlantedTest(feature, target, inserted, has, rates[0], rates[1], natural))
    data.probe_texts = probe
