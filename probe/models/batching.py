"""Tokenise once, then batch by length so that dynamic padding wastes little compute."""

from __future__ import annotations

from typing import Iterator

import numpy as np


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length`` (special tokens included)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
    return enc["input_ids"]


def pad_batch(tokenizer, ids: list[list[int]]):
    """Pad a list of id lists into ``input_ids`` and ``attention_mask`` tensors."""
    return tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")


def length_sorted_batches(ids: list[list[int]], batch_size: int, max_tokens: int = 4096) -> Iterator[np.ndarray]:
    """Index batches of texts sorted by length (longest first), for inference.

    A batch holds at most ``batch_size`` texts and at most ``max_tokens`` padded tokens:
    on a CPU, long sequences in wide batches are slower than short ones (attention memory),
    so the token budget keeps every batch in the fast regime.
    """
    order = np.argsort([-len(x) for x in ids], kind="stable")
    start = 0
    while start < len(order):
        longest = max(len(ids[order[start]]), 1)
        size = max(1, min(batch_size, max_tokens // longest))
        yield order[start: start + size]
        start += size
