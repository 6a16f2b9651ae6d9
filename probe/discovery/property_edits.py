"""Edits that move a text into or out of a natural-property slice (:mod:`probe.data.properties`), each with
a control edit of the same size that leaves the property unchanged (issue 25; docs/design.md §8).

An edit returns ``(edited, control)`` texts, or None where it cannot apply to that text (already in the
target slice, or no control of the same size exists). Every edit keeps the text's other words, in order.

=====================  ==========================================  ==========================================
property               edit                                        control (same size, property unchanged)
=====================  ==========================================  ==========================================
length_bucket          shorter: drop the last m words (to the      the same m words replaced by neutral words
                       longest length of the target bucket)        (length unchanged)
                       longer: append m neutral words (to the      the last m words replaced by those m
                       shortest length of the target bucket)       neutral words (only where m < length)
contains_digit         into: a number 2-12 inserted as digits      the same number spelled out ("seven")
                       out of: every word with a digit deleted     as many other words deleted at random
has_exclamation        into: "!!" appended to the last word        ".." appended instead
                       out of: every "!" removed                   as many other punctuation marks removed
has_mention /          into: "@w" / "#w" inserted (w neutral)      "w" inserted at the same position
has_hashtag            out of: the "@" / "#" of each one removed   as many other punctuation marks removed
has_url                into: "www.w.com" inserted                  "w.com" inserted at the same position
                       out of: every URL word deleted              as many other words deleted at random
=====================  ==========================================  ==========================================

Bucketed properties use the bucket edges of the *training* texts (:class:`EditContext`), so a held-out
text's slice is the one discovery counted. *Neutral words* are discovery's control words (letters only,
|z| < 1 for every class). Insertions go at a uniform position among the first ``max_position`` words, as
word insertions do, so truncation to ``max_length`` keeps them. Properties without an honest edit are
listed in :data:`NO_EDIT` with the reason; discovery reports them as *correlational*.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from probe.data.properties import HASHTAG, MENTION, URL, available_properties, bucket_edges

EditPair = tuple[str, str]  # (edited text, control text)
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten",
           11: "eleven", 12: "twelve"}
NO_EDIT = {
    "casing_ratio_bucket": "changing the share of upper-case letters changes the case of letters; no control "
                           "changes as many letters' case while keeping the share (and uncased tokenizers cannot "
                           "see case at all)",
    "punctuation_density_bucket": "any edit of the text's size moves the density; emphasis punctuation is tested "
                                  "by has_exclamation",
}


@dataclass
class EditContext:
    """What property edits need from the training data: bucket edges and neutral words."""

    neutral: list[str]
    edges: dict[str, np.ndarray] = field(default_factory=dict)
    max_position: int = 5

    @classmethod
    def fit(cls, train_texts: Sequence[str], neutral: Sequence[str], max_position: int = 5) -> "EditContext":
        lengths = np.array([len(t.split()) for t in train_texts], dtype=float)
        return cls(list(neutral) or ["word"], {"length_bucket": bucket_edges(lengths, 3)}, max_position)

    def words(self, m: int, rng: np.random.Generator) -> list[str]:
        return [str(w) for w in rng.choice(self.neutral, m, replace=len(self.neutral) < m)]

    def position(self, words: list[str], rng: np.random.Generator) -> int:
        return int(rng.integers(0, min(self.max_position, len(words)) + 1))


Move = Callable[[str, int, EditContext, np.random.Generator], "EditPair | None"]


@dataclass(frozen=True)
class PropertyEdit:
    """How to move a text into (``into``) or out of (``out_of``) the slice ``name=value`` (the item may be other
    than a text: a tagger's entity span in :mod:`probe.tasks.tokens.span_edits`)."""

    name: str
    value: Callable[[str, EditContext], int]
    into: Move
    out_of: Move
    flag: bool = True  # a 0/1 property: into slice 0 is out of slice 1 and back

    def directions(self, value: int, ctx: EditContext) -> tuple[Callable, Callable]:
        """``(into, out_of)`` of the slice ``name=value``, each ``(text, rng) -> (edited, control) | None``."""
        if self.flag and value == 0:
            return (lambda t, rng: self.out_of(t, 1, ctx, rng)), (lambda t, rng: self.into(t, 1, ctx, rng))
        return (lambda t, rng: self.into(t, value, ctx, rng)), (lambda t, rng: self.out_of(t, value, ctx, rng))


def _length_value(text: str, ctx: EditContext) -> int:
    return int(np.searchsorted(ctx.edges["length_bucket"], len(text.split()), side="right"))


def _length_range(v: int, edges: np.ndarray) -> tuple[int, float]:
    """Word counts ``[lo, hi]`` of bucket ``v`` (bucket v holds edges[v-1] <= n < edges[v])."""
    lo = int(np.ceil(edges[v - 1])) if v > 0 else 1
    hi = int(np.ceil(edges[v])) - 1 if v < len(edges) else np.inf
    return max(lo, 1), hi


def _resize(text: str, target: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
    words = text.split()
    n = len(words)
    if target < n:  # shorter: drop the tail; control: the tail replaced by neutral words
        return " ".join(words[:target]), " ".join(words[:target] + ctx.words(n - target, rng))
    m = target - n
    if m <= 0 or m >= n:
        return None
    filler = ctx.words(m, rng)  # longer: neutral words appended; control: they replace the last m words
    return " ".join(words + filler), " ".join(words[: n - m] + filler)


def _length_into(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
    n = len(text.split())
    lo, hi = _length_range(v, ctx.edges["length_bucket"])
    if lo <= n <= hi or (hi < 1):
        return None
    return _resize(text, int(hi) if n > hi else lo, ctx, rng)


def _length_out_of(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
    n = len(text.split())
    edges = ctx.edges["length_bucket"]
    if _length_value(text, ctx) != v:
        return None
    lo, hi = _length_range(v, edges)
    options = []
    if v > 0 and lo - 1 >= 1:
        options.append(lo - 1)  # the longest length of the bucket below
    if v < len(edges):
        options.append(int(hi) + 1)  # the shortest length of the bucket above
    for target in sorted(options, key=lambda t: abs(t - n)):  # the smaller edit first
        out = _resize(text, target, ctx, rng)
        if out is not None:
            return out
    return None


def _flag_value(name: str) -> Callable[[str, EditContext], int]:
    func = available_properties()[name].func
    return lambda text, ctx: int(func([text])[0])


def _insert(words: list[str], j: int, word: str) -> str:
    return " ".join(words[:j] + [word] + words[j:])


def _delete_words(text: str, hit: Callable[[str], bool], rng: np.random.Generator) -> EditPair | None:
    """Delete every word that ``hit``; control: as many other words, at random."""
    words = text.split()
    gone = [j for j, w in enumerate(words) if hit(w)]
    rest = [j for j in range(len(words)) if j not in set(gone)]
    if not gone or len(rest) < len(gone) + 1:
        return None
    ctrl = set(rng.choice(rest, len(gone), replace=False).tolist())
    return (" ".join(w for j, w in enumerate(words) if j not in set(gone)),
            " ".join(w for j, w in enumerate(words) if j not in ctrl))


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def _strip_marks(text: str, marks: list[int], rng: np.random.Generator) -> EditPair | None:
    """Remove the characters at ``marks``; control: as many other punctuation characters, at random."""
    others = [i for i, ch in enumerate(text) if _is_punct(ch) and i not in set(marks) and text[i] not in "!@#"]
    if not marks or len(others) < len(marks):
        return None
    ctrl = set(rng.choice(others, len(marks), replace=False).tolist())

    def without(drop: set[int]) -> str:
        return " ".join("".join(ch for i, ch in enumerate(text) if i not in drop).split())
    return without(set(marks)), without(ctrl)


def _digit_into(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1 or any(ch.isdigit() for ch in text):
        return None
    words = text.split()
    j, k = ctx.position(words, rng), int(rng.choice(list(NUMBERS)))
    return _insert(words, j, str(k)), _insert(words, j, NUMBERS[k])


def _digit_out_of(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1:
        return None
    return _delete_words(text, lambda w: any(ch.isdigit() for ch in w), rng)


def _exclamation_into(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1 or "!" in text or not text.split():
        return None
    return text.rstrip() + "!!", text.rstrip() + ".."


def _exclamation_out_of(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1:
        return None
    return _strip_marks(text, [i for i, ch in enumerate(text) if ch == "!"], rng)


def _marker(pattern: re.Pattern, mark: str) -> tuple[Move, Move]:
    """Edits of a marked word (@mention, #hashtag): insert / strip the mark, the word itself kept."""
    def into(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
        if v != 1 or pattern.search(text):
            return None
        words, w = text.split(), ctx.words(1, rng)[0]
        j = ctx.position(words, rng)
        return _insert(words, j, mark + w), _insert(words, j, w)

    def out_of(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
        if v != 1:
            return None
        return _strip_marks(text, [m.start() for m in pattern.finditer(text)], rng)
    return into, out_of


def _url_into(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1 or URL.search(text):
        return None
    words, w = text.split(), ctx.words(1, rng)[0]
    j = ctx.position(words, rng)
    return _insert(words, j, f"www.{w}.com"), _insert(words, j, f"{w}.com")


def _url_out_of(text: str, v: int, ctx: EditContext, rng: np.random.Generator) -> EditPair | None:
    return _delete_words(text, lambda w: URL.search(w) is not None, rng) if v == 1 else None


EDITS: dict[str, PropertyEdit] = {
    "length_bucket": PropertyEdit("length_bucket", _length_value, _length_into, _length_out_of, flag=False),
    "contains_digit": PropertyEdit("contains_digit", _flag_value("contains_digit"), _digit_into, _digit_out_of),
    "has_exclamation": PropertyEdit("has_exclamation", _flag_value("has_exclamation"), _exclamation_into,
                                    _exclamation_out_of),
    "has_mention": PropertyEdit("has_mention", _flag_value("has_mention"), *_marker(MENTION, "@")),
    "has_hashtag": PropertyEdit("has_hashtag", _flag_value("has_hashtag"), *_marker(HASHTAG, "#")),
    "has_url": PropertyEdit("has_url", _flag_value("has_url"), _url_into, _url_out_of),
}


def slice_of(feature: str) -> tuple[str, int]:
    """``"name=value"`` -> ``(name, value)``."""
    name, value = feature.rsplit("=", 1)
    return name, int(value)


def has_edit(feature: str) -> bool:
    """Whether a property slice ``name=value`` has an edit (else it stays correlational)."""
    return slice_of(feature)[0] in EDITS
