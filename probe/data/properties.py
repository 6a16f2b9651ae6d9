"""Natural task-irrelevant properties of texts (docs/design.md §2): a registry of small labelling functions.

Each property maps a list of texts to integer labels and is registered with
:func:`register_property`. Bucketed properties (length, casing ratio, punctuation density)
cut a numeric score into tertiles whose edges are computed once, on the texts given, and
never split equal scores; :func:`compute_properties` drops properties that are constant on
the texts and says why.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

PropertyFn = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class PropertySpec:
    """A registered property: ``func(texts) -> int labels``.

    ``applies_to`` is ``"any"`` or the domain it is meant for, such as ``"social"``.
    """

    name: str
    description: str
    applies_to: str
    func: PropertyFn


_REGISTRY: dict[str, PropertySpec] = {}


def register_property(name: str, description: str, applies_to: str = "any") -> Callable[[PropertyFn], PropertyFn]:
    """Decorator that registers ``func(texts) -> np.ndarray`` of int labels under ``name``."""
    def wrap(func: PropertyFn) -> PropertyFn:
        if name in _REGISTRY:
            raise ValueError(f"property {name!r} is already registered")
        _REGISTRY[name] = PropertySpec(name, description, applies_to, func)
        return func
    return wrap


def available_properties(applies_to: str | None = None) -> dict[str, PropertySpec]:
    """Registered properties by name; with ``applies_to``, those for that domain plus the ``"any"`` ones."""
    return {n: s for n, s in _REGISTRY.items() if applies_to is None or s.applies_to in ("any", applies_to)}


def bucket_edges(values: np.ndarray, n_buckets: int = 3) -> np.ndarray:
    """Edges that cut ``values`` into ``n_buckets`` near-equal groups without splitting ties.

    Cuts are placed only between distinct values, each at the split point closest to the
    ``k / n_buckets`` quantile while leaving enough distinct values for the buckets after it,
    so no bucket is empty unless there are fewer distinct values than buckets (then each
    distinct value is its own bucket). Edges are midpoints between neighbouring distinct
    values; label with ``np.searchsorted(edges, values, side="right")``.
    """
    values = np.asarray(values, dtype=np.float64)
    uniq, counts = np.unique(values, return_counts=True)
    if uniq.size <= n_buckets:
        return (uniq[:-1] + uniq[1:]) / 2
    cum = np.cumsum(counts)  # cum[j] = examples with value <= uniq[j]
    n = cum[-1]
    cuts: list[int] = []  # cut after distinct value j
    for k in range(1, n_buckets):
        lo = cuts[-1] + 1 if cuts else 0
        hi = uniq.size - 1 - (n_buckets - k)
        cand = np.arange(lo, hi + 1)
        cuts.append(int(cand[np.argmin(np.abs(cum[cand] - k * n / n_buckets))]))
    cuts_arr = np.asarray(cuts)
    return (uniq[cuts_arr] + uniq[cuts_arr + 1]) / 2


def _tertiles(scores: Sequence[float]) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return np.zeros(0, dtype=int)
    return np.searchsorted(bucket_edges(scores, 3), scores, side="right").astype(int)


MENTION = re.compile(r"(?<![\w@])@\w+")
URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+")
HASHTAG = re.compile(r"(?<![\w&#])#\w*[^\W\d]\w*")


def _flag(texts: Sequence[str], pattern: re.Pattern) -> np.ndarray:
    return np.array([pattern.search(t) is not None for t in texts], dtype=int)


@register_property("length_bucket", "word count, in tertiles of the given texts (0 short, 2 long)")
def length_bucket(texts: Sequence[str]) -> np.ndarray:
    return _tertiles([len(t.split()) for t in texts])


@register_property("casing_ratio_bucket", "fraction of letters that are upper-case, in tertiles")
def casing_ratio_bucket(texts: Sequence[str]) -> np.ndarray:
    def ratio(t: str) -> float:
        letters = [c for c in t if c.isalpha()]
        return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
    return _tertiles([ratio(t) for t in texts])


@register_property("contains_digit", "the text contains a digit")
def contains_digit(texts: Sequence[str]) -> np.ndarray:
    return np.array([any(c.isdigit() for c in t) for t in texts], dtype=int)


@register_property("punctuation_density_bucket", "punctuation characters per non-space character, in tertiles")
def punctuation_density_bucket(texts: Sequence[str]) -> np.ndarray:
    def density(t: str) -> float:
        chars = [c for c in t if not c.isspace()]
        return sum(unicodedata.category(c).startswith("P") for c in chars) / len(chars) if chars else 0.0
    return _tertiles([density(t) for t in texts])


@register_property("has_exclamation", "the text contains an exclamation mark (emphasis punctuation)")
def has_exclamation(texts: Sequence[str]) -> np.ndarray:
    return np.array(["!" in t for t in texts], dtype=int)


@register_property("has_mention", "the text contains an @user mention", applies_to="social")
def has_mention(texts: Sequence[str]) -> np.ndarray:
    return _flag(texts, MENTION)


@register_property("has_url", "the text contains a URL (http://, https:// or www.)", applies_to="social")
def has_url(texts: Sequence[str]) -> np.ndarray:
    return _flag(texts, URL)


@register_property("has_hashtag", "the text contains a #hashtag", applies_to="social")
def has_hashtag(texts: Sequence[str]) -> np.ndarray:
    return _flag(texts, HASHTAG)


def compute_properties(
    texts: Sequence[str], names: Sequence[str] | None = None, *,
    skip_constant: bool = True, min_count: int = 1, return_skipped: bool = False,
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, str]]:
    """Labels of each property on ``texts``: ``{name: int array [len(texts)]}``.

    ``names`` defaults to every registered property. With ``skip_constant`` a property
    with a single label on these texts, or whose rarest label has fewer than ``min_count``
    examples, is left out; ``return_skipped=True`` also returns ``{name: reason}`` for them.
    Unknown names raise ``ValueError`` naming the allowed ones.
    """
    texts = list(texts)
    names = list(_REGISTRY) if names is None else list(names)
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; allowed: {', '.join(_REGISTRY)}")
    labels: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name in names:
        y = np.asarray(_REGISTRY[name].func(texts), dtype=int)
        values, counts = np.unique(y, return_counts=True)
        if skip_constant and values.size < 2:
            only = f" (all {values[0]})" if values.size else ""
            skipped[name] = f"constant on the {len(texts)} texts{only}"
        elif skip_constant and counts.min() < min_count:
            skipped[name] = f"rarest label {values[np.argmin(counts)]} has {counts.min()} < {min_count} examples"
        else:
            labels[name] = y
    return (labels, skipped) if return_skipped else labels
