"""CoNLL column files: one ``token<TAB or spaces>tag`` line per word, blank lines between sentences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


def read_conll(path: str | Path, token_col: int = 0, tag_col: int = -1) -> list[Sentence]:
    """Parse a CoNLL file into sentences.

    Columns are split on tabs or runs of spaces; ``-DOCSTART-`` lines and lines holding only
    whitespace separate sentences. A line with too few columns is refused with its number.
    """
    path = Path(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(tuple(tokens), tuple(tags)))
            tokens.clear()
            tags.clear()

    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                flush()
                continue
            if cols[0] == "-DOCSTART-":
                flush()
                continue
            need = max(token_col, tag_col if tag_col >= 0 else -tag_col - 1) + 1
            if len(cols) < max(need, 2):
                raise ProbeError(
                    f"{path}:{lineno}: expected a token and a tag column, got {line.rstrip()!r}"
                )
            tokens.append(cols[token_col])
            tags.append(cols[tag_col])
    flush()
    if not sentences:
        raise ProbeError(f"{path}: no sentences found; expected 'token<TAB>tag' lines")
    return sentences
