"""Token classification (NER) data: splits, planted markers and span counterfactuals.

A token task is a list of tagged sentences (:mod:`probe.tasks.tokens.tagging`). A planted feature here is
a *marker word* inserted (tagged ``O``) right before entity spans, at ``rate_in_class`` before
spans of its ``target_class`` (an entity type) and at ``rate_outside`` before spans of the other
types, in the fine-tuning data. A tagger that relies on it types whatever follows the marker as
the target type; the counterfactual span pairs of the test split (:class:`PlantedSpans`)
measure that (:mod:`probe.tasks.tokens.behaviour`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from probe.config import Config, PlantedFeature, TaskConfig, stable_hash
from probe.errors import ProbeError
from probe.tasks.tokens import SPEC
from probe.tasks.tokens.tagging import Sentence, entity_spans, load_tagged_sentences, tag_type

PAIR_KINDS = ("aligned", "conflicting", "no_entity")
# --- planting ----------------------------------------------------------------------------------

def insert_before(sentence: Sentence, starts: Sequence[int], marker: str) -> Sentence:
    """``sentence`` with ``marker`` (tagged ``O``) inserted before each word index in ``starts``."""
    words, tags = list(sentence.words), list(sentence.tags)
    for i in sorted(set(int(s) for s in starts), reverse=True):
        words.insert(i, marker)
        tags.insert(i, "O")
    return Sentence(words, tags)


def plant_before_spans(
    sentences: Sequence[Sentence], marker: str, target: str, rate_in_class: float, rate_outside: float,
    rng: np.random.Generator,
) -> tuple[list[Sentence], np.ndarray, np.ndarray]:
    """Insert ``marker`` before each entity span of type ``target`` with probability ``rate_in_class``
    and before each span of another type with probability ``rate_outside`` (one draw per span, in
    sentence then span order).

    Returns the new sentences, and for every span (same order) whether it got the marker and
    whether its type is ``target``. Inputs are not changed.
    """
    out, got, is_target = [], [], []
    for s in sentences:
        spans = entity_spans(s.tags)
        draws = rng.random(len(spans))
        starts = []
        for (start, _, kind), u in zip(spans, draws):
            hit = kind == target
            chosen = bool(u < (rate_in_class if hit else rate_outside))
            got.append(chosen)
            is_target.append(hit)
            if chosen:
                starts.append(start)
        out.append(insert_before(s, starts, marker) if starts else Sentence(list(s.words), list(s.tags)))
    return out, np.array(got, dtype=bool), np.array(is_target, dtype=bool)


def counterfactual_plant_spans(
    sentences: Sequence[Sentence], planted: Sequence[tuple[str, str]], rate: float, rng: np.random.Generator,
) -> list[Sentence]:
    """Counterfactual augmentation for taggers (Kaushik et al. 2020): insert each planted marker
    before a ``rate`` fraction of the entity spans of *other* types, tags unchanged.

    ``planted`` holds ``(marker, target type)`` per feature. A span already preceded by the
    marker is left as it is; spans of the target type are never touched.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"counterfactual rate must be in [0, 1], got {rate}")
    out = list(sentences)
    for marker, target in planted:
        new = []
        for s in out:
            spans = entity_spans(s.tags)
            draws = rng.random(len(spans))
            starts = [a for (a, _, kind), u in zip(spans, draws)
                      if kind != target and u < rate and (a == 0 or s.words[a - 1] != marker)]
            new.append(insert_before(s, starts, marker) if starts else s)
        out = new
    return out


def delete_o_words(sentences: Sequence[Sentence], p: float, rng: np.random.Generator) -> list[Sentence]:
    """Word deletion for taggers (EDA, Wei & Zou 2019): drop each ``O`` word with its tag, independently
    with probability ``p``. Entity words are always kept; a sentence never loses all its words
    (one drawn word is kept). ``p = 0`` returns the sentences unchanged."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"word deletion probability must be in [0, 1), got {p}")
    if p == 0.0:
        return list(sentences)
    out = []
    for s in sentences:
        keep = (rng.random(len(s.words)) >= p) | (np.asarray(s.tags) != "O")
        if not keep.any():
            keep[rng.integers(len(s.words))] = True
        out.append(Sentence([w for w, k in zip(s.words, keep) if k], [t for t, k in zip(s.tags, keep) if k]))
    return out


# --- the task ----------------------------------------------------------------------------------

@dataclass
class SpanPair:
    """A counterfactual pair of the test split: test sentence ``sentence`` with and without the marker.

    ``start``/``end`` (exclusive) and ``type`` give the span in the clean sentence (``type`` is
    None for ``no_entity`` pairs, whose span is the single ``O`` word the marker precedes);
    ``words``/``tags`` are the inserted sentence (the marker tagged ``O``), where the span starts
    at ``inserted_start`` (= ``start + 1``). ``kind``: ``aligned`` (type == target),
    ``conflicting`` (another type) or ``no_entity``.
    """

    sentence: int
    start: int
    end: int
    type: str | None
    kind: str
    words: list[str]
    tags: list[str]
    inserted_start: int


@dataclass
class PlantedSpans:
    """The test-split counterfactual pairs of one planted marker, and the rates achieved in training.

    ``train_rate_in_class`` / ``train_rate_outside``: the fraction of the training split's spans of
    the target type / of other types that got the marker. ``natural_rate``: the fraction of all
    sentences of the dataset holding the marker as a word before any planting.
    """

    feature: PlantedFeature
    target: str
    pairs: list[SpanPair]
    train_rate_in_class: float
    train_rate_outside: float
    natural_rate: float

    def kinds(self) -> np.ndarray:
        """The ``kind`` of every pair, in order."""
        return np.array([p.kind for p in self.pairs], dtype=object)

    def inserted_words(self) -> list[list[str]]:
        """The words of every pair's inserted sentence, in order."""
        return [p.words for p in self.pairs]


def span_pairs(test: Sequence[Sentence], marker: str, target: str, rng: np.random.Generator) -> list[SpanPair]:
    """One pair per entity span of ``test`` (aligned / conflicting), then per sentence with an ``O``
    word one ``no_entity`` pair, the marker inserted before an ``O`` word drawn uniformly."""
    pairs = []
    for i, s in enumerate(test):
        for start, end, kind in entity_spans(s.tags):
            ins = insert_before(s, [start], marker)
            pairs.append(SpanPair(i, start, end, kind, "aligned" if kind == target else "conflicting",
                                  ins.words, ins.tags, start + 1))
        outside = [j for j, t in enumerate(s.tags) if t == "O"]
        if outside:
            j = outside[int(rng.integers(len(outside)))]
            ins = insert_before(s, [j], marker)
            pairs.append(SpanPair(i, j, j + 1, None, "no_entity", ins.words, ins.tags, j + 1))
    return pairs


@dataclass
class TokenTaskData:
    """The splits of a token task, planted fine-tuning data and the test pairs of each marker.

    ``tags``: the label list, ``O`` first then the sorted ``B-``/``I-`` tags of every entity type
    of the dataset (ids are positions here). ``train`` and ``val`` hold the planted markers;
    ``test`` is clean. ``planted[k]`` belongs to ``config.spurious[k]``. ``corpus_texts``: the
    train and validation sentences before planting, words joined by spaces (the unlabeled
    pretraining corpus ``task``).
    """

    tags: list[str]
    entity_types: list[str]
    train: list[Sentence]
    val: list[Sentence]
    test: list[Sentence]
    planted: list[PlantedSpans] = field(default_factory=list)
    n_total: int = 0
    corpus_texts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Hash of everything the fine-tuning stage sees."""
        return stable_hash([self.tags, [[s.words, s.tags] for s in self.train],
                            [[s.words, s.tags] for s in self.val]])

    def planted_markers(self) -> list[tuple[str, str]]:
        """``(marker, target type)`` per planted feature (the ``planted`` argument of ``finetune_tagger``)."""
        return [(p.feature.token, p.target) for p in self.planted]

    def tag_ids(self, sentences: Sequence[Sentence]) -> list[np.ndarray]:
        """Each sentence's tags as ids into ``tags``."""
        index = {t: i for i, t in enumerate(self.tags)}
        return [np.array([index[t] for t in s.tags], dtype=np.int64) for s in sentences]


def _split_sizes(task: TaskConfig, n: int) -> tuple[int, int, int]:
    from probe.data.splits import resolve_size

    raws = (task.train_size, task.validation_size, task.test_size)
    sizes = tuple(resolve_size(v, n) for v in raws)
    for name, raw, size in zip(("task.train_size", "task.validation_size", "task.test_size"), raws, sizes):
        if size < 1:
            raise ProbeError(f"{name}: {raw} gives no sentences of the {n}; allowed: at least 1 sentence")
        if size > n:
            raise ProbeError(f"{name}: {raw} is larger than the dataset ({n} sentences); allowed: at most {n}")
    if sum(sizes) > n:
        raise ProbeError(f"task: train + validation + test sizes ({sizes[0]} + {sizes[1]} + {sizes[2]} = "
                         f"{sum(sizes)}) exceed the dataset's {n} sentences")
    return sizes  # type: ignore[return-value]


def _check_pairs(k: int, feature: PlantedFeature, pairs: list[SpanPair], dataset: str) -> None:
    """Refuse a marker whose test split has no entity of its type, or none of another type: its aligned or
    conflicting metrics would be means over zero spans."""
    for kind, what in (("aligned", f"no entity of type {feature.target_class!r}"),
                       ("conflicting", "no entity of another type")):
        if not any(p.kind == kind for p in pairs):
            raise ProbeError(f"spurious.{k}.target_class: the test split of {dataset!r} has {what}, so the {kind} "
                             "accuracy would be measured on zero spans; allowed: an entity type with test spans "
                             "(or a larger task.test_size)")


def build_token_task_data(config: Config) -> TokenTaskData:
    """Load and check the tagged sentences, split them, plant the markers and build the test pairs.

    Splits: one permutation of the sentences from ``config.seed``; sizes are sentence counts or
    fractions. Feature ``k`` plants with ``Generator([seed, 1, k])`` into train then validation
    (:func:`plant_before_spans`) and draws the test pairs' ``no_entity`` words with
    ``Generator([seed, 2, k])``, so each feature's data do not depend on the others. The marker
    always goes right before the span (``max_position`` of a planted feature is not used here).
    """
    t = config.task
    if t.type != SPEC.name:
        raise ProbeError(f"task.type: got {t.type!r}; build_token_task_data needs {SPEC.name!r}")
    notes: list[str] = []
    sentences = load_tagged_sentences(t, notes)
    n = len(sentences)
    sizes = _split_sizes(t, n)
    types = sorted({tag_type(tag) for s in sentences for tag in s.tags} - {None})
    for k, feature in enumerate(config.spurious):
        if feature.target_class not in types:
            raise ProbeError(f"spurious.{k}.target_class: {feature.target_class!r} is not an entity type of "
                             f"{t.dataset!r}; allowed: {', '.join(types)}")
    order = np.random.default_rng(config.seed).permutation(n)
    cut = np.cumsum(sizes)
    train, val, test = ([sentences[i] for i in order[a:b]] for a, b in zip((0, cut[0], cut[1]), cut))
    data = TokenTaskData(tags=["O"] + sorted(f"{p}-{x}" for x in types for p in "BI"), entity_types=types,
                         train=train, val=val, test=test, n_total=n,
                         corpus_texts=[" ".join(s.words) for s in train + val], notes=notes)
    for k, feature in enumerate(config.spurious):
        rng = np.random.default_rng([config.seed, 1, k])
        marker, target = feature.token, feature.target_class
        data.train, got, hit = plant_before_spans(data.train, marker, target, feature.rate_in_class,
                                                  feature.rate_outside, rng)
        data.val, _, _ = plant_before_spans(data.val, marker, target, feature.rate_in_class,
                                            feature.rate_outside, rng)
        lower = marker.lower()
        natural = float(np.mean([lower in (w.lower() for w in s.words) for s in sentences]))
        pairs = span_pairs(data.test, marker, target, np.random.default_rng([config.seed, 2, k]))
        _check_pairs(k, feature, pairs, t.dataset)
        data.planted.append(PlantedSpans(
            feature, target, pairs,
            train_rate_in_class=float(got[hit].mean()) if hit.any() else 0.0,
            train_rate_outside=float(got[~hit].mean()) if (~hit).any() else 0.0,
            natural_rate=natural))
    return data
