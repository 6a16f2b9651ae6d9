"""CoNLL column files: one ``word<TAB or spaces>...<TAB or spaces>tag`` line per word, blank lines between sentences.

The format of the CoNLL-2000/2003 shared tasks (Tjong Kim Sang & De Meulder 2003): one word per
line with its annotations in columns, sentences separated by blank lines, documents by
``-DOCSTART-`` lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError


@dataclass(frozen=True)
class Sentence:
    """One sentence as read from a file: ``tokens`` (the words) and their ``tags``, equally long."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def words(self) -> tuple[str, ...]:
        """The words (the same as ``tokens``), the name :mod:`probe.tasks.tokens.data` uses."""
        return self.tokens


def _columns_needed(col: int) -> int:
    """How many columns a line needs for column index ``col`` (negative counts from the end) to exist."""
    return col + 1 if col >= 0 else -col


def _split_columns(line: str) -> list[str]:
    """A line's columns: split on tabs when it holds one (so a word may contain spaces), else on runs of spaces."""
    line = line.strip()
    if "\t" in line:
        return [c.strip() for c in line.split("\t")]
    return line.split()


def read_conll(path: str | Path, token_col: int = 0, tag_col: int = -1) -> list[Sentence]:
    """Parse a CoNLL file into sentences, taking the word from ``token_col`` and the tag from ``tag_col``.

    Column indices are 0-based; negative ones count from the end of each line (``-1``: the last
    column). A line holding a tab is split on tabs (a word may then contain spaces), any other
    line on runs of spaces. Lines holding only whitespace and ``-DOCSTART-`` lines separate
    sentences; trailing blank lines, a byte-order mark and Windows (CRLF) line endings are
    accepted. A line with too few columns for the chosen ones, or whose chosen word or tag
    is empty, is refused with ``path:line`` and the line itself.
    """
    path = Path(path)
    if token_col == tag_col:
        raise ProbeError(f"{path}: the word column and the tag column are both {token_col}; choose two columns")
    need = max(_columns_needed(token_col), _columns_needed(tag_col), 2)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(tuple(tokens), tuple(tags)))
            tokens.clear()
            tags.clear()

    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            cols = _split_columns(line)
            if not cols:
                flush()
                continue
            if cols[0] == "-DOCSTART-":
                flush()
                continue
            n = len(cols)
            if n < need or (token_col % n) == (tag_col % n):
                raise ProbeError(
                    f"{path}:{lineno}: expected a token and a tag column (columns {token_col} and {tag_col}), "
                    f"got {n} column{'s' if n != 1 else ''}: {line.rstrip(chr(10) + chr(13))!r}"
                )
            token, tag = cols[token_col], cols[tag_col]
            if not token or not tag:
                raise ProbeError(
                    f"{path}:{lineno}: the {'word' if not token else 'tag'} column "
                    f"({token_col if not token else tag_col}) is empty: {line.rstrip(chr(10) + chr(13))!r}"
                )
            tokens.append(token)
            tags.append(tag)
    flush()
    if not sentences:
        raise ProbeError(f"{path}: no sentences found; expected 'token<TAB>tag' lines")
    return sentences
