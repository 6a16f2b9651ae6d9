"""Words and their subword pieces: one tokenisation of pre-split words that every word-level step shares.

Taggers label a word at its first piece (Devlin et al. 2019, BERT §5.3), word-level probes read a
word at its first piece (or the mean of its pieces), attributions sum the pieces' scores per word:
all of them tokenise whitespace words with ``is_split_into_words=True`` (special tokens included,
truncated to ``max_length``) and read the fast tokenizer's ``word_ids()``, so they agree on which
piece belongs to which word. For WordPiece tokenizers this gives exactly the ids of tokenising the
joined text.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from probe.errors import ProbeError

IGNORE = -100  # the label of pieces that carry no word label (ignored by the loss)


class EncodedWords(NamedTuple):
    """Tokenised word lists: ``input_ids`` and ``word_ids`` (the word of every token, None for
    special tokens) per input."""

    input_ids: list[list[int]]
    word_ids: list[list[int | None]]


def encode_words(tokenizer, inputs: Sequence[Sequence[str]], max_length: int) -> EncodedWords:
    """Tokenise pre-split word lists (``is_split_into_words=True``, truncated to ``max_length`` tokens,
    special tokens included). Needs a fast tokenizer (``word_ids``)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ProbeError(f"model.backbone: word-level analyses need a fast tokenizer (word_ids()), got "
                         f"{type(tokenizer).__name__}")
    if not len(inputs):
        return EncodedWords([], [])
    enc = tokenizer([list(w) for w in inputs], is_split_into_words=True, truncation=True, max_length=max_length,
                    add_special_tokens=True)
    return EncodedWords(list(enc["input_ids"]), [enc.word_ids(i) for i in range(len(inputs))])


def first_subwords(word_ids: Sequence[int | None], n_words: int) -> np.ndarray:
    """The token position of each word's first subword; -1 for words without a token (cut off by truncation)."""
    pos = np.full(n_words, -1, dtype=np.int64)
    prev = None
    for t, w in enumerate(word_ids):
        if w is not None and w != prev and pos[w] < 0:
            pos[w] = t
        prev = w
    return pos


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Subword labels from word labels: the first subword of each word gets the word's label, the
    other subwords and the special tokens (word id None) get -100 (ignored by the loss)."""
    out, prev = [], None
    for w in word_ids:
        out.append(IGNORE if w is None or w == prev else int(word_labels[w]))
        prev = w
    return out


def covered_words(word_ids: Sequence[int | None]) -> int:
    """How many leading words kept at least one piece after truncation."""
    return max((w for w in word_ids if w is not None), default=-1) + 1
