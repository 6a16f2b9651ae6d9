"""Words and their subword pieces: one tokenisation of pre-split words that every word-level step shares.

Taggers label a word at its first piece (Devlin et al. 2019, BERT §5.3), word-level probes read a
word at its first piece (or the mean of its pieces), attributions sum the pieces' scores per word:
all of them go through :func:`encode_words`, so they agree on which piece belongs to which word,
and on every tokenizer family (WordPiece, byte-level BPE, SentencePiece) the ids are those a
prediction on the joined text sees.
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
    """Tokenise word lists as the model reads text: the words joined by single spaces, tokenised as
    one string (special tokens included, truncated to ``max_length`` tokens), each token assigned to
    the word its character offsets overlap. Unlike ``is_split_into_words=True`` this needs no
    ``add_prefix_space`` for byte-level BPE (GPT-2, RoBERTa) and gives the very ids a prediction on
    the joined text sees; for WordPiece tokenizers the two agree. Needs a fast tokenizer (offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ProbeError(f"model.backbone: word-level analyses need a fast tokenizer (offset mapping), got "
                         f"{type(tokenizer).__name__}")
    if not len(inputs):
        return EncodedWords([], [])
    texts, spans = [], []
    for words in inputs:
        starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]) if len(words) else np.zeros(0, int)
        texts.append(" ".join(words))
        spans.append([(int(a), int(a) + len(w)) for a, w in zip(starts, words)])
    enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True,
                    return_offsets_mapping=True)
    word_ids = [word_of_tokens(offsets, word_spans) for offsets, word_spans in zip(enc["offset_mapping"], spans)]
    return EncodedWords(list(enc["input_ids"]), word_ids)


def word_of_tokens(offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int | None]:
    """The word each token's character span overlaps (the first such word); None for special tokens."""
    out: list[int | None] = []
    j = 0
    for s, e in offsets:
        if e <= s:
            out.append(None)
            continue
        while j < len(spans) and spans[j][1] <= s:  # tokens come in text order: words left behind stay behind
            j += 1
        k = j
        while k < len(spans) and not (s < spans[k][1] and e > spans[k][0]):
            k += 1
        out.append(k if k < len(spans) else None)
    return out


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
