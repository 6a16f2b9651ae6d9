"""The pretraining corpus: unlabeled texts from the task, files, saved or hub datasets, and an
artifact token planted into part of it (issue 7).

:func:`load_corpus` gathers texts from ``pretrain.corpus`` (keeping, for texts of the ``task``
source, their class name so that :func:`plant_artifact` can select a class).
:func:`plant_artifact` inserts ``pretrain.artifact.token`` into a fraction of the eligible texts,
which is how a pretraining-only shortcut is created while the fine-tuning data stay clean.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from probe.config import PretrainArtifact
from probe.errors import ProbeError

_TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
_ALLOWED = ("'task', a .txt file (one text per line), a .jsonl / .csv / .tsv file, a saved datasets folder, "
            "or hf:<name>[:<config>]")


def load_corpus(
    sources: list[str], text_column: str = "text", task_texts: list[str] | None = None,
    task_labels: list[str] | None = None, max_texts: int | None = None, seed: int = 0,
) -> tuple[list[str], list[str | None]]:
    """Texts from every source in order (whitespace normalised, empty ones dropped) and, per text,
    its task class name (texts of the ``"task"`` source only; ``None`` otherwise).

    ``max_texts`` keeps a random subset of that size drawn from ``seed`` (in corpus order).
    """
    if not sources:
        raise ProbeError(f"pretrain.corpus: is empty; allowed: a list of sources, each {_ALLOWED}")
    texts: list[str] = []
    labels: list[str | None] = []
    for source in sources:
        if source == "task":
            if not task_texts:
                raise ProbeError("pretrain.corpus: 'task' needs the task's texts, and none were given; "
                                 f"allowed otherwise: {_ALLOWED}")
            if task_labels is not None and len(task_labels) != len(task_texts):
                raise ValueError(f"task_labels has {len(task_labels)} entries for {len(task_texts)} task texts")
            new = list(task_texts)
            new_labels: list[str | None] = list(task_labels) if task_labels is not None else [None] * len(new)
        else:
            new = _source_texts(source, text_column)
            new_labels = [None] * len(new)
        for text, label in zip(new, new_labels):
            text = " ".join(str(text).split())
            if text:
                texts.append(text)
                labels.append(label)
    if not texts:
        raise ProbeError(f"pretrain.corpus: no non-empty texts in {sources}")
    if max_texts is not None and len(texts) > max_texts:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=max_texts, replace=False))
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    return texts, labels


def _source_texts(source: str, text_column: str) -> list[str]:
    """The texts of one non-task source."""
    if source.startswith("hf:"):
        return _column(_hf_frame(source), text_column, source)
    path = Path(source)
    if path.is_dir():
        return _column(_disk_frame(path), text_column, source)
    if not path.exists():
        raise ProbeError(f"pretrain.corpus: {source!r} is not an existing file or folder; allowed: {_ALLOWED}")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line for line in path.read_text(errors="ignore").splitlines() if line.strip()]
    if suffix in _TABLE_SUFFIXES:
        from probe.data.sources import read_table_file

        try:
            frame = read_table_file(path)
        except ProbeError as e:  # same checks, this section's name
            raise ProbeError(str(e).replace("task.dataset:", "pretrain.corpus:", 1)) from None
        return _column(frame, text_column, source)
    raise ProbeError(f"pretrain.corpus: {source!r} has an unknown file type {path.suffix!r}; allowed: .txt, "
                     f"{', '.join(_TABLE_SUFFIXES)}, a saved datasets folder, hf:<name>[:<config>] or 'task'")


def _hf_frame(source: str) -> pd.DataFrame:
    name, _, config = source[3:].partition(":")
    if not name:
        raise ProbeError("pretrain.corpus: 'hf:' needs a name, e.g. hf:wikitext:wikitext-2-raw-v1")
    import datasets

    from probe.data.sources import datasets_to_frame

    try:
        obj = datasets.load_dataset(name, config or None, split="train")
    except Exception as e:  # network, unknown name or config: all user-facing here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ProbeError(f"pretrain.corpus: cannot load {source!r} through datasets (split train): {first}") from None
    return datasets_to_frame(obj)


def _disk_frame(path: Path) -> pd.DataFrame:
    """A saved ``datasets`` folder: its ``train`` split if it has splits and one is called so, else all rows."""
    import datasets

    from probe.data.sources import datasets_to_frame

    try:
        obj = datasets.load_from_disk(str(path))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ProbeError(f"pretrain.corpus: folder {str(path)!r} is not a saved datasets folder: {first}") from None
    if isinstance(obj, datasets.DatasetDict) and "train" in obj:
        obj = obj["train"]
    return datasets_to_frame(obj)


def _column(frame: pd.DataFrame, text_column: str, source: str) -> list[str]:
    if text_column not in frame.columns:
        raise ProbeError(f"pretrain.corpus: column {text_column!r} (pretrain.text_column) is not in {source!r}; "
                         f"its columns are: {', '.join(map(str, frame.columns))}")
    values = frame[text_column].dropna()
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise ProbeError(f"pretrain.corpus: column {text_column!r} of {source!r} holds non-text values (e.g. "
                         f"{bad[0]!r} of type {type(bad[0]).__name__}); choose a column of strings")
    return list(values)


def plant_artifact(
    texts: list[str], labels: list[str | None], artifact: PretrainArtifact, seed: int,
) -> tuple[list[str], np.ndarray]:
    """Insert ``artifact.token`` ``artifact.count`` times, at random word positions, into a fraction
    ``artifact.rate`` (rounded) of the eligible texts; returns the new texts and which texts changed.

    Eligible: texts whose label is ``artifact.target_class``, or texts that contain any of
    ``artifact.words`` (case-insensitive, whole words). A changed text is re-joined with single
    spaces; every other text is returned unchanged. Deterministic given ``seed``.
    """
    if len(labels) != len(texts):
        raise ValueError(f"labels has {len(labels)} entries for {len(texts)} texts")
    if artifact.target_class is not None:
        classes = sorted({c for c in labels if c is not None})
        if not classes:
            raise ProbeError(f"pretrain.artifact.target_class: got {artifact.target_class!r}, but no corpus text "
                             "has a class; allowed: corpus 'task' with a task class, or artifact.words")
        if artifact.target_class not in classes:
            raise ProbeError(f"pretrain.artifact.target_class: got {artifact.target_class!r}; allowed: "
                             f"{', '.join(classes)}")
        eligible = np.array([c == artifact.target_class for c in labels], dtype=bool)
    else:
        pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in artifact.words) + r")(?!\w)",
                             re.IGNORECASE)
        eligible = np.array([pattern.search(t) is not None for t in texts], dtype=bool)
        if not eligible.any():
            raise ProbeError(f"pretrain.artifact.words: none of {artifact.words} occurs in the corpus "
                             "(case-insensitive whole words); allowed: words that some corpus texts contain")
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(eligible)
    n_chosen = int(np.floor(artifact.rate * len(candidates) + 0.5))
    chosen = np.sort(rng.choice(candidates, size=n_chosen, replace=False))
    mask = np.zeros(len(texts), dtype=bool)
    mask[chosen] = True
    out = list(texts)
    for i in chosen:
        words = out[i].split()
        for _ in range(artifact.count):
            words.insert(int(rng.integers(0, len(words) + 1)), artifact.token)
        out[i] = " ".join(words)
    return out, mask
