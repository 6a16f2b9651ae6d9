"""Planted spurious tokens: insertion into text and the test partitions of docs/design.md §2."""

from __future__ import annotations

import numpy as np


def insert_token(text: str, token: str, position: int) -> str:
    """Insert ``token`` as a word before word ``position`` (clipped to the text's length)."""
    words = text.split()
    position = min(position, len(words))
    return " ".join(words[:position] + [token] + words[position:])


def insertion_positions(texts: list[str], max_position: int, rng: np.random.Generator) -> np.ndarray:
    """One uniform word position in ``[0, min(max_position, n_words)]`` per text.

    Keeping the token within the first few words means truncation to ``max_length``
    subword tokens never drops it.
    """
    highs = np.array([min(max_position, len(t.split())) for t in texts])
    return rng.integers(0, highs + 1)


def plant_mask(
    labels: np.ndarray, target: int, rate_in_class: float, rate_outside: float, rng: np.random.Generator
) -> np.ndarray:
    """Which examples get the token: P(token | y = target) = rate_in_class, else rate_outside."""
    rates = np.where(labels == target, rate_in_class, rate_outside)
    return rng.random(len(labels)) < rates
