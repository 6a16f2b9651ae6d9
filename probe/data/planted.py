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


def token_problem(token: str, tokenizer) -> str | None:
    """Why ``tokenizer`` cannot carry ``token`` as a planted cue, or None: it turns into no tokens at
    all (e.g. a zero-width space, which it strips) or into a special token (``[MASK]``, ``[UNK]``,
    ``[CLS]``, ...), which the model cannot tell from the tokenizer's own."""
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if not ids:
        return "the tokenizer turns it into no tokens at all"
    special = set(tokenizer.all_special_ids)
    hit = [tokenizer.convert_ids_to_tokens(i) for i in ids if i in special]
    if hit:
        return f"the tokenizer turns it into its special token {hit[0]!r}"
    return None


def check_planted_tokens(config, tokenizer) -> None:
    """Refuse (one line) a planted token, or pretraining artifact token, that the backbone's tokenizer
    cannot carry (:func:`token_problem`)."""
    from probe.errors import ProbeError

    fields = [(f"spurious.{k}.token", f.token) for k, f in enumerate(config.spurious)]
    if config.pretrain.enabled and config.pretrain.artifact is not None:
        fields.append(("pretrain.artifact.token", config.pretrain.artifact.token))
    for field, token in fields:
        problem = token_problem(token, tokenizer)
        if problem:
            raise ProbeError(f"{field}: got {token!r}: {problem}; allowed: a word the tokenizer of "
                             f"{config.model.backbone!r} keeps as ordinary tokens")
