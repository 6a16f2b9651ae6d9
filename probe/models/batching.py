"""Tokenise once, then batch by length so that dynamic padding wastes little compute.

Every inference pass of a run (extraction, predictions, attributions, causal tests) keeps a batch
under a budget of padded tokens: 4096 by default, the run's ``analyses.max_batch_tokens`` inside
:func:`token_budget` (the engine sets it for the whole run), so a large model's analyses fit in memory.

Inside :func:`encoding_cache` (the engine opens one for the whole run) :func:`tokenize` keeps the ids
of every text it has tokenised, per tokenizer and ``max_length``, so the many passes over the same
texts (predictions before and after each causal edit, ERASER and invariance edits that leave a text
unchanged) tokenise each text once. A fast tokenizer encodes each text of a batch on its own, so
the cached ids are the ids a fresh call would give.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import numpy as np

from probe.models.pair_tokens import encode_pairs, segment_ids

DEFAULT_TOKEN_BUDGET = 4096
_BUDGET: ContextVar[int] = ContextVar("token_budget", default=DEFAULT_TOKEN_BUDGET)
MAX_CACHED_TEXTS = 200_000  # kept as int32 arrays: ~30 MB at 64 tokens
_ENCODINGS: ContextVar[dict | None] = ContextVar("encodings", default=None)


def current_token_budget() -> int:
    """Padded tokens one inference pass may hold in this run (:func:`token_budget`)."""
    return _BUDGET.get()


@contextmanager
def token_budget(tokens: int) -> Iterator[None]:
    """Within the block, inference batches hold at most ``tokens`` padded tokens."""
    reset = _BUDGET.set(int(tokens))
    try:
        yield
    finally:
        _BUDGET.reset(reset)


@contextmanager
def encoding_cache() -> Iterator[None]:
    """Within the block, :func:`tokenize` tokenises each (tokenizer, ``max_length``, text) once; at
    most :data:`MAX_CACHED_TEXTS` texts are kept (beyond that, new texts are tokenised each time)."""
    reset = _ENCODINGS.set({})
    try:
        yield
    finally:
        _ENCODINGS.reset(reset)


def _words_kept(max_length: int) -> int:
    """Whitespace-separated words kept before tokenising: every word is at least one token, so
    ``max_length`` words already fill the budget; twice that is margin."""
    return 2 * max_length + 8


def truncate_words(texts: list[str], max_length: int, tokenizer=None) -> list[str]:
    """Each text cut after its first :func:`_words_kept` words (the prefix of the original string,
    its spacing kept), so that a 500-word article is not tokenised only to keep 64 tokens. Texts are
    left whole for a ``tokenizer`` that truncates on the left (it keeps the end of a text).

    Tokenisers split at whitespace before anything else (WordPiece, byte-level BPE, SentencePiece's
    metaspace), so the prefix's tokens are the first tokens of the whole text; :func:`tokenize`
    re-tokenises the whole text in the one case where that cannot be relied on (a cut text that came
    out shorter than ``max_length``, e.g. words the normaliser removes entirely).
    """
    if tokenizer is not None and getattr(tokenizer, "truncation_side", "right") != "right":
        return list(texts)
    keep = _words_kept(max_length)
    out = []
    for text in texts:
        parts = text.split(None, keep) if len(text) > keep else ()  # fewer characters than words: nothing to cut
        out.append(text[:len(text) - len(parts[-1])].rstrip() if len(parts) > keep else text)
    return out


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length`` (special tokens included); equal to tokenising
    the whole texts with ``truncation=True``, but long texts are cut to a word budget first, and inside
    :func:`encoding_cache` a text already tokenised is looked up. A text may be a pair ``(first,
    second)``: :func:`probe.models.pair_tokens.encode_pairs` tokenises it, cached by the pair."""
    texts = list(texts)
    cache = _ENCODINGS.get()
    if cache is None:
        return _tokenize(tokenizer, texts, max_length)
    # the tokenizer object is kept in the entry, so its id cannot be reused by another one meanwhile
    key = (id(tokenizer), getattr(tokenizer, "truncation_side", "right"), max_length)
    _, known = cache.setdefault(key, (tokenizer, {}))
    new = list(dict.fromkeys(t for t in texts if t not in known))
    if new:
        ids = _tokenize(tokenizer, new, max_length)
        if sum(len(k) for _, k in cache.values()) + len(new) > MAX_CACHED_TEXTS:
            fresh = dict(zip(new, ids))
            return [known[t].tolist() if t in known else fresh[t] for t in texts]
        known.update((t, np.asarray(x, dtype=np.int32)) for t, x in zip(new, ids))
    return [known[t].tolist() for t in texts]


def _tokenize(tokenizer, texts: list, max_length: int) -> list[list[int]]:
    if texts and isinstance(texts[0], tuple):  # pairs of texts, cached by the pair like a text
        return encode_pairs(tokenizer, texts, max_length, truncate_words)
    cut = truncate_words(texts, max_length, tokenizer)
    ids = tokenizer(cut, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    redo = [i for i, (a, b) in enumerate(zip(texts, cut)) if len(a) != len(b) and len(ids[i]) < max_length]
    if redo:
        full = tokenizer([texts[i] for i in redo], truncation=True, max_length=max_length,
                         add_special_tokens=True)["input_ids"]
        for i, x in zip(redo, full):
            ids[i] = x
    return ids


def pad_batch(tokenizer, ids: list[list[int]]):
    """Pad a list of id lists into ``input_ids`` and ``attention_mask`` tensors (and ``token_type_ids``
    for pairs of texts, :func:`probe.models.pair_tokens.segment_ids`, where the model has them)."""
    segments = segment_ids(tokenizer, ids)
    if segments is not None:
        return tokenizer.pad({"input_ids": ids, "token_type_ids": segments}, padding=True, return_tensors="pt")
    return tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")


def length_sorted_batches(ids: list[list[int]], batch_size: int, max_tokens: int | None = None) -> Iterator[np.ndarray]:
    """Index batches of texts sorted by length (longest first), for inference.

    A batch holds at most ``batch_size`` texts and at most ``max_tokens`` padded tokens (default:
    :func:`current_token_budget`):
    on a CPU, long sequences in wide batches are slower than short ones (attention memory),
    so the token budget keeps every batch in the fast regime.
    """
    max_tokens = current_token_budget() if max_tokens is None else max_tokens
    order = np.argsort([-len(x) for x in ids], kind="stable")
    start = 0
    while start < len(order):
        longest = max(len(ids[order[start]]), 1)
        size = max(1, min(batch_size, max_tokens // longest))
        yield order[start: start + size]
        start += size


def predict_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int, device) -> np.ndarray:
    """Classifier logits for ``texts`` in their given order. Texts with the same token ids (an edit the
    tokenizer does not see, such as lower-casing for an uncased one) are passed through the model once."""
    import torch

    from probe.models.compute import autocast

    ids = tokenize(tokenizer, texts, max_length)
    row: dict[tuple[int, ...], int] = {}
    where = np.array([row.setdefault(tuple(x), len(row)) for x in ids], dtype=np.int64)
    unique = [list(x) for x in row]
    out = np.zeros((len(unique), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode(), autocast(device):
        for idx in length_sorted_batches(unique, batch_size):
            batch = pad_batch(tokenizer, [unique[i] for i in idx]).to(device)
            out[idx] = model(**batch).logits.float().cpu().numpy()
    return out[where]
