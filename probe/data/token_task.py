"""Token classification (NER) data: tagged sentences, splits, planted markers and span counterfactuals.

A token task is a list of sentences whose words carry BIO tags (Ramshaw & Marcus 1995, "Text
Chunking using Transformation-Based Learning"): ``O`` outside any entity, ``B-x`` on the first
word of an entity of type ``x``, ``I-x`` on the words that continue it. A planted feature here is
a *marker word* inserted (tagged ``O``) right before entity spans, at ``rate_in_class`` before
spans of its ``target_class`` (an entity type) and at ``rate_outside`` before spans of the other
types, in the fine-tuning data. A tagger that relies on it types whatever follows the marker as
the target type; the counterfactual span pairs of the test split (:class:`PlantedSpans`)
measure that (:mod:`probe.analyses.span_behaviour`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from probe.config import Config, PlantedFeature, TaskConfig, stable_hash
from probe.errors import ProbeError

PAIR_KINDS = ("aligned", "conflicting", "no_entity")
_TABLE_SUFFIXES = (".jsonl", ".json")
_ALLOWED = ("allowed: wnut16, a CoNLL file (.conll, .txt, .tsv, .iob, .bio; task.conll_columns picks the word "
            "and tag columns), a .jsonl/.json file or a saved datasets folder or hf:<name>[:<config>] with "
            "task.token_column (words) and task.tag_column (tags)")


@dataclass
class Sentence:
    """A tagged sentence: ``words`` and their BIO ``tags``, lists of equal length."""

    words: list[str]
    tags: list[str]


# --- BIO ---------------------------------------------------------------------------------------

class _NotBio(ValueError):
    def __init__(self, tag: Any):
        super().__init__(repr(tag))
        self.tag = tag


def to_bio(tags: Sequence[str]) -> list[str]:
    """Check BIO tags and return them as a list; IOB1 is converted to BIO.

    Allowed: ``O``, ``B-<type>``, ``I-<type>`` (the type may hold hyphens: ``B-geo-loc``). An
    ``I-x`` that does not continue an ``x`` span (IOB1, where ``B-`` only separates adjacent
    spans of one type, or a stray ``I-``) starts a span and becomes ``B-x``: the reading of the
    conlleval script and of seqeval's default mode, so every scorer sees the same spans. Anything
    else (BIOES ``E-``/``S-``, BILOU, bare labels such as ``PER``) raises ``ValueError``.
    """
    out: list[str] = []
    prev = None
    for tag in tags:
        if tag == "O":
            out.append("O")
            prev = None
            continue
        if not isinstance(tag, str):
            raise _NotBio(tag)
        prefix, sep, kind = tag.partition("-")
        if not sep or prefix not in ("B", "I") or not kind:
            raise _NotBio(tag)
        if prefix == "I" and prev != kind:
            tag = f"B-{kind}"
        out.append(tag)
        prev = kind
    return out


def entity_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """The entity spans of BIO ``tags`` as ``(start, end, type)``, ``end`` exclusive.

    An ``I-x`` that does not continue an ``x`` span starts one (as in :func:`to_bio`).
    """
    spans: list[tuple[int, int, str]] = []
    start, kind = None, None
    for i, tag in enumerate(tags):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and kind == t
        if start is not None and not continues:
            spans.append((start, i, kind))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, t
    if start is not None:
        spans.append((start, len(tags), kind))
    return spans


def tag_type(tag: str) -> str | None:
    """The entity type of a tag: ``B-x`` / ``I-x`` -> ``x``; ``O`` -> None."""
    return None if tag == "O" else tag.partition("-")[2]


# --- loading -----------------------------------------------------------------------------------

def _words_list(value: Any, row: int, task: TaskConfig) -> list[str]:
    if isinstance(value, str) or not hasattr(value, "__len__"):
        raise ProbeError(f"task.token_column: column {task.token_column!r} must hold a list of words per row, got "
                         f"{type(value).__name__} {str(value)[:40]!r} in row {row}; allowed: a list of strings")
    words = list(value)
    bad = [w for w in words if not isinstance(w, str) or not w.strip()]
    if bad:
        raise ProbeError(f"task.token_column: row {row} of column {task.token_column!r} holds {bad[0]!r}; allowed: "
                         "non-empty strings")
    return [w.strip() for w in words]


def _tags_list(value: Any, row: int, task: TaskConfig, names: list[str] | None) -> list[str]:
    if isinstance(value, str) or not hasattr(value, "__len__"):
        raise ProbeError(f"task.tag_column: column {task.tag_column!r} must hold a list of tags per row, got "
                         f"{type(value).__name__} {str(value)[:40]!r} in row {row}; allowed: a list of tag names "
                         "or class ids")
    tags = list(value)
    ints = [t for t in tags if isinstance(t, (int, np.integer)) and not isinstance(t, bool)]
    if ints and names is None:
        raise ProbeError(f"task.tag_column: column {task.tag_column!r} holds class ids ({ints[0]}) but the data "
                         "carry no tag names; allowed: tag names (O, B-<type>, I-<type>) or a datasets ClassLabel "
                         "feature that names the ids")
    if ints:
        bad = [t for t in ints if not 0 <= int(t) < len(names)]
        if bad:
            raise ProbeError(f"task.tag_column: class id {bad[0]} in row {row} is outside the {len(names)} tag names "
                             f"{names}")
        tags = [names[int(t)] if isinstance(t, (int, np.integer)) else t for t in tags]
    return tags


def _class_label_names(feature: Any) -> list[str] | None:
    """The names of a ``Sequence(ClassLabel)`` / ``List(ClassLabel)`` feature, else None."""
    import datasets

    inner = getattr(feature, "feature", None)
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def _from_datasets(obj: Any, task: TaskConfig) -> list[tuple[Any, Any, list[str] | None]]:
    import datasets

    parts = list(obj.values()) if isinstance(obj, datasets.DatasetDict) else [obj]
    rows = []
    for ds in parts:
        for name, col in (("task.token_column", task.token_column), ("task.tag_column", task.tag_column)):
            if col not in ds.column_names:
                raise ProbeError(f"{name}: column {col!r} is not in {task.dataset!r}; its columns are: "
                                 f"{', '.join(ds.column_names)}")
        names = _class_label_names(ds.features[task.tag_column])
        table = ds.select_columns([task.token_column, task.tag_column]).to_dict()
        rows += [(w, t, names) for w, t in zip(table[task.token_column], table[task.tag_column])]
    return rows


def _open_datasets(dataset: str) -> Any:
    import datasets

    if dataset.startswith("hf:"):
        name, _, cfg = dataset[3:].partition(":")
        if not name:
            raise ProbeError("task.dataset: 'hf:' needs a name, e.g. hf:wnut_17 or hf:conll2003")
        try:
            return datasets.load_dataset(name, cfg or None)
        except Exception as e:  # network, missing name, missing config: all user-facing here
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ProbeError(f"task.dataset: cannot load {dataset!r} through datasets: {first}") from None
    try:
        return datasets.load_from_disk(dataset)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ProbeError(f"task.dataset: folder {dataset!r} is not a saved datasets folder: {first}") from None


def _raw_rows(task: TaskConfig) -> tuple[list[tuple[Any, Any, list[str] | None]], str]:
    """``(words, tags, tag names or None)`` per row, and the config field that chose the tags."""
    from probe.data.conll import read_conll
    from probe.data.sources import BUILTIN_DATASETS, read_table_file, wnut16_path

    dataset = task.dataset
    if dataset in BUILTIN_DATASETS:
        builtin = BUILTIN_DATASETS[dataset]
        if builtin.task_type != "token-classification":
            raise ProbeError(f"task.dataset: {dataset!r} is a {builtin.task_type} dataset, but task.type is "
                             f"token-classification; {_ALLOWED}")
        return [(s.tokens, s.tags, None) for s in read_conll(wnut16_path())], "task.dataset"
    path = Path(dataset)
    if dataset.startswith("hf:") or path.is_dir():
        return _from_datasets(_open_datasets(dataset), task), "task.tag_column"
    if not path.is_file():
        raise ProbeError(f"task.dataset: unknown dataset {dataset!r} (no such file or folder); {_ALLOWED}")
    suffix = path.suffix.lower()
    if suffix in _TABLE_SUFFIXES:
        df = read_table_file(path)
        for name, col in (("task.token_column", task.token_column), ("task.tag_column", task.tag_column)):
            if col not in df.columns:
                raise ProbeError(f"{name}: column {col!r} is not in {dataset!r}; its columns are: "
                                 f"{', '.join(map(str, df.columns))}")
        return [(w, t, None) for w, t in zip(df[task.token_column], df[task.tag_column])], "task.tag_column"
    if suffix == ".csv":
        raise ProbeError(f"task.dataset: {dataset!r} is a CSV file, which cannot hold a list of words per row; "
                         f"{_ALLOWED}")
    token_col, tag_col = task.conll_columns
    try:
        sentences = read_conll(path, token_col, tag_col)
    except ProbeError as e:
        raise ProbeError(f"task.dataset: {e}") from None
    return [(s.tokens, s.tags, None) for s in sentences], "task.conll_columns"


def load_tagged_sentences(task: TaskConfig) -> list[Sentence]:
    """The tagged sentences named by ``task.dataset``, checked and in BIO.

    Sources: ``wnut16`` (built-in), a CoNLL file (any file that is not .json/.jsonl/.csv, read
    with :func:`probe.data.conll.read_conll` and ``task.conll_columns``), a .jsonl/.json file, a
    saved ``datasets`` folder or ``hf:<name>[:<config>]`` with ``task.token_column`` (a list of
    words per row) and ``task.tag_column`` (a list of tag names, or of class ids named by a
    ``datasets`` ClassLabel feature). IOB1 tags are converted to BIO (:func:`to_bio`); other
    schemes are refused. Sentences without words are dropped. Errors are one line.
    """
    rows, tag_field = _raw_rows(task)
    sentences = []
    for row, (raw_words, raw_tags, names) in enumerate(rows):
        words = _words_list(raw_words, row, task)
        tags = _tags_list(raw_tags, row, task, names)
        if len(words) != len(tags):
            raise ProbeError(f"task.tag_column: row {row} has {len(words)} words but {len(tags)} tags; every word "
                             "needs exactly one tag")
        if not words:
            continue
        try:
            bio = to_bio(tags)
        except _NotBio as e:
            hint = " (is task.conll_columns choosing the tag column?)" if tag_field == "task.conll_columns" else ""
            raise ProbeError(f"{tag_field}: tag {e.tag!r} in sentence {row} of {task.dataset!r} is not a BIO tag"
                             f"{hint}; allowed: O, B-<type>, I-<type> (IOB1 is converted to BIO; BIOES and BILOU "
                             "are not supported)") from None
        sentences.append(Sentence(words, bio))
    if not sentences:
        raise ProbeError(f"task.dataset: {task.dataset!r} has no sentences with words")
    if not any(t != "O" for s in sentences for t in s.tags):
        raise ProbeError(f"{tag_field}: every tag in {task.dataset!r} is O; token classification needs at least one "
                         "entity type")
    return sentences


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
    from probe.data.task import resolve_size

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


def build_token_task_data(config: Config) -> TokenTaskData:
    """Load and check the tagged sentences, split them, plant the markers and build the test pairs.

    Splits: one permutation of the sentences from ``config.seed``; sizes are sentence counts or
    fractions. Feature ``k`` plants with ``Generator([seed, 1, k])`` into train then validation
    (:func:`plant_before_spans`) and draws the test pairs' ``no_entity`` words with
    ``Generator([seed, 2, k])``, so each feature's data do not depend on the others. The marker
    always goes right before the span (``max_position`` of a planted feature is not used here).
    """
    t = config.task
    if t.type != "token-classification":
        raise ProbeError(f"task.type: got {t.type!r}; build_token_task_data needs 'token-classification'")
    sentences = load_tagged_sentences(t)
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
                         corpus_texts=[" ".join(s.words) for s in train + val])
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
        data.planted.append(PlantedSpans(
            feature, target, pairs,
            train_rate_in_class=float(got[hit].mean()) if hit.any() else 0.0,
            train_rate_outside=float(got[~hit].mean()) if (~hit).any() else 0.0,
            natural_rate=natural))
    return data
