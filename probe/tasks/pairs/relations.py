"""Relational properties of a pair: what holds *between* the two texts, not inside one.

- ``lexical_overlap``: the share of the second text's distinct content words that occur in the
  first (McCoy et al. 2019: NLI models read high overlap as entailment). Words are discovery's
  case-folded, punctuation-stripped words (:func:`probe.discovery.candidates.word_key`); content
  words are alphabetic words outside scikit-learn's English stop-word list and :data:`NEGATIONS`;
  0 when the second text has none.
- ``negation``: how many negation words (:data:`NEGATIONS`) the second text holds (Gururangan et al.
  2018: "no", "never", "nobody" mark contradiction in hypothesis-only models).
- ``length_difference``: words of the second text minus words of the first.
- ``topic_match``: 1 when both texts come from documents of the same source class, where the data
  know it (Lan et al. 2020: next-sentence prediction solved by topic).

:func:`relation_labels` turns them into integer slices for probing and discovery: overlap and length
difference in tertiles (:func:`probe.data.properties.bucket_edges`), negation and topic match 0 / 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from probe.data.properties import bucket_edges
from probe.discovery.candidates import text_words

NEGATIONS = frozenset({"no", "not", "never", "nobody", "none", "nothing", "nowhere", "neither", "nor", "cannot",
                       "n't", "don't", "doesn't", "didn't", "isn't", "wasn't", "aren't", "weren't", "won't",
                       "can't", "couldn't", "shouldn't", "wouldn't", "hasn't", "haven't", "hadn't", "without"})
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) - NEGATIONS
RELATIONS = ("lexical_overlap", "negation", "length_difference", "topic_match")


def is_content(key: str) -> bool:
    """A content word: alphabetic, not a stop word, not a negation."""
    return key.isalpha() and key not in STOP_WORDS and key not in NEGATIONS


def content_words(text: str) -> list[str]:
    """The content words of ``text`` (discovery's word keys), in order."""
    return [w for w in text_words(text) if is_content(w)]


def lexical_overlap(first: str, second: str) -> float:
    """Share of the second text's distinct content words that occur in the first (0 if it has none)."""
    second_words = set(content_words(second))
    if not second_words:
        return 0.0
    return len(second_words & set(content_words(first))) / len(second_words)


def negation_count(text: str) -> int:
    """How many words of ``text`` are negations (:data:`NEGATIONS`)."""
    return sum(w in NEGATIONS for w in text_words(text))


def length_difference(first: str, second: str) -> int:
    """Whitespace words of the second text minus those of the first."""
    return len(second.split()) - len(first.split())


def relation_values(firsts: Sequence[str], seconds: Sequence[str], first_source: Sequence | None = None,
                    second_source: Sequence | None = None) -> dict[str, np.ndarray]:
    """Each relational property's value per pair; ``topic_match`` only where both sources are known."""
    out = {"lexical_overlap": np.array([lexical_overlap(a, b) for a, b in zip(firsts, seconds)]),
           "negation": np.array([negation_count(b) for b in seconds], dtype=float),
           "length_difference": np.array([length_difference(a, b) for a, b in zip(firsts, seconds)], dtype=float)}
    if first_source is not None and second_source is not None and len(first_source) == len(firsts) and \
            all(s is not None for s in list(first_source) + list(second_source)):
        out["topic_match"] = np.array([a == b for a, b in zip(first_source, second_source)], dtype=float)
    return out


def relation_labels(values: dict[str, np.ndarray], edges: dict[str, np.ndarray] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Integer slices of :func:`relation_values` and the tertile edges used (pass the training split's
    ``edges`` to cut the test split the same way): overlap and length difference in tertiles, negation
    present (0 / 1), topic match (0 / 1)."""
    edges = dict(edges or {})
    labels = {}
    for name, v in values.items():
        if name in ("lexical_overlap", "length_difference"):
            cut = edges.setdefault(name, bucket_edges(v, 3))
            labels[name] = np.searchsorted(cut, v, side="right").astype(int)
        else:
            labels[name] = (v > 0).astype(int)
    return labels, edges
