"""Tagged sentences: BIO tags, their entity spans, and loading taggings from files, folders or the hub.

A tagging is a list of sentences whose words carry BIO tags (Ramshaw & Marcus 1995, "Text
Chunking using Transformation-Based Learning"): ``O`` outside any entity, ``B-x`` on the first
word of an entity of type ``x``, ``I-x`` on the words that continue it. IOB1 is read as BIO (the
conlleval reading); other schemes are refused with a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from probe.config import TaskConfig
from probe.errors import ProbeError
from probe.tasks import check_dataset_kind
from probe.tasks.tokens import SPEC

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
        check_dataset_kind(dataset, SPEC.name, _ALLOWED)
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


def load_tagged_sentences(task: TaskConfig, notes: list[str] | None = None) -> list[Sentence]:
    """The tagged sentences named by ``task.dataset``, checked and in BIO.

    Sources: ``wnut16`` (built-in), a CoNLL file (any file that is not .json/.jsonl/.csv, read
    with :func:`probe.data.conll.read_conll` and ``task.conll_columns``), a .jsonl/.json file, a
    saved ``datasets`` folder or ``hf:<name>[:<config>]`` with ``task.token_column`` (a list of
    words per row) and ``task.tag_column`` (a list of tag names, or of class ids named by a
    ``datasets`` ClassLabel feature). IOB1 tags are converted to BIO (:func:`to_bio`); other
    schemes are refused. Sentences without words are dropped: how many is appended to ``notes``, and
    more than ``task.max_dropped_share`` of them is refused. Errors are one line.
    """
    from probe.data.sources import dropped_rows

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
    dropped_rows(task.dataset, len(rows), {"no words": len(rows) - len(sentences)}, task.max_dropped_share,
                 unit="sentences", notes=notes)
    if not any(t != "O" for s in sentences for t in s.tags):
        raise ProbeError(f"{tag_field}: every tag in {task.dataset!r} is O; token classification needs at least one "
                         "entity type")
    return sentences
