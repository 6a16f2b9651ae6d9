"""Natural task-irrelevant properties of single words (docs/design.md §2), for token-level probes.

The word-level counterpart of :mod:`probe.data.properties`: each property maps a list of words
to integer labels and is registered with :func:`register_word_property`. Labels depend on the
word alone (no thresholds fitted on the data), so they mean the same on every split.
:func:`word_types` gives the word types of the control task (Hewitt & Liang 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

WordPropertyFn = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class WordPropertySpec:
    """A registered word property: ``func(words) -> int labels``."""

    name: str
    description: str
    func: WordPropertyFn


_REGISTRY: dict[str, WordPropertySpec] = {}


def register_word_property(name: str, description: str) -> Callable[[WordPropertyFn], WordPropertyFn]:
    """Decorator that registers ``func(words) -> np.ndarray`` of int labels under ``name``."""
    def wrap(func: WordPropertyFn) -> WordPropertyFn:
        if name in _REGISTRY:
            raise ValueError(f"word property {name!r} is already registered")
        _REGISTRY[name] = WordPropertySpec(name, description, func)
        return func
    return wrap


def available_word_properties() -> dict[str, WordPropertySpec]:
    """Registered word properties by name (each with its ``description``)."""
    return dict(_REGISTRY)


def _labels(words: Sequence[str], test: Callable[[str], bool]) -> np.ndarray:
    return np.fromiter((bool(test(w)) for w in words), dtype=np.int64, count=len(words))


@register_word_property("capitalised", "the first character is an upper-case letter")
def capitalised(words: Sequence[str]) -> np.ndarray:
    return _labels(words, lambda w: w[:1].isalpha() and w[:1].isupper())


@register_word_property("all_caps", "at least two letters, all of them upper-case")
def all_caps(words: Sequence[str]) -> np.ndarray:
    def test(w: str) -> bool:
        letters = [c for c in w if c.isalpha()]
        return len(letters) >= 2 and all(c.isupper() for c in letters)
    return _labels(words, test)


@register_word_property("has_digit", "the word contains a digit")
def has_digit(words: Sequence[str]) -> np.ndarray:
    return _labels(words, lambda w: any(c.isdigit() for c in w))


@register_word_property("mention", "an @user mention: starts with @ and has more after it")
def mention(words: Sequence[str]) -> np.ndarray:
    return _labels(words, lambda w: w.startswith("@") and len(w) > 1)


@register_word_property("hashtag", "a #hashtag: starts with # and has more after it")
def hashtag(words: Sequence[str]) -> np.ndarray:
    return _labels(words, lambda w: w.startswith("#") and len(w) > 1)


@register_word_property("url", "a link: starts with http://, https:// or www. (any case)")
def url(words: Sequence[str]) -> np.ndarray:
    return _labels(words, lambda w: w.lower().startswith(("http://", "https://", "www.")))


@register_word_property("length_bucket", "characters: 0 for 1-3, 1 for 4-6, 2 for 7 or more")
def length_bucket(words: Sequence[str]) -> np.ndarray:
    n = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    return np.searchsorted(np.array([3, 6]), n, side="left").astype(np.int64)


def word_types(words: Sequence[str]) -> list[str]:
    """The control task's word type of each word: its lower-cased form (Hewitt & Liang 2019)."""
    return [w.lower() for w in words]


def word_properties(
    words: Sequence[str], names: Sequence[str] | str = "auto", min_count: int = 20,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Labels of each word property on ``words`` and, for each property left out, why.

    ``names="auto"`` takes every registered property. A property is left out when it is
    constant on these words or its rarest class has fewer than ``min_count`` words (a probe
    cannot be trained or scored on it). Unknown names raise ``ValueError`` naming the allowed ones.
    """
    words = list(words)
    names = list(_REGISTRY) if isinstance(names, str) and names == "auto" else list(names)
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown word properties {unknown}; allowed: 'auto' or {', '.join(_REGISTRY)}")
    values: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name in names:
        y = np.asarray(_REGISTRY[name].func(words), dtype=np.int64)
        classes, counts = np.unique(y, return_counts=True)
        if classes.size < 2:
            only = f" (all {classes[0]})" if classes.size else ""
            skipped[name] = f"constant on the {len(words)} words{only}"
        elif counts.min() < min_count:
            skipped[name] = (f"rarest class {classes[np.argmin(counts)]} has {counts.min()} words "
                             f"(fewer than min_count={min_count})")
        else:
            values[name] = y
    return values, skipped
