"""Token-level properties of an entity span as tagger shortcuts (issue 25; docs/design.md §8), and the edits
that move a held-out span into or out of each, each with a control edit of the same size that leaves the
property unchanged. Every edit keeps the tags aligned: a word is changed in place (its tag kept) or an ``O``
word is inserted with an ``O`` tag; nothing else of the sentence moves.

=================  =================================  =========================================================
property (span)    edit                               control (same size, span's property unchanged)
=================  =================================  =========================================================
span_capitalised   into: the first letter of the      one lower-case letter of the nearest ``O`` word
(its first word's  span's first word upper-cased      upper-cased ("went" -> "Went")
first character    out of: it lower-cased             the same
an upper-case
letter)
span_all_caps      into: every letter of the span     as many lower-case letters of the nearest ``O`` words
(>= 2 letters,     upper-cased                        upper-cased
all upper-case)    out of: every letter but each      the same
                   word's first lower-cased
span_digit         into: a digit 2-9 appended to the  a letter a-z appended instead ("alice7" vs "alicek")
(a digit in a      span's first word                  (a letter may join the word into another subword: a
word of the span)                                     larger change than the digit's, so conservative)
                   out of: every digit of the span    each digit replaced by another digit instead ("win10"
                   deleted ("win10" -> "win"; not     -> "win47"): the same characters touched
                   where a word is digits only)
span_first         out of (first -> later): a         the same word inserted (tag ``O``) right after the span
(the span starts   neutral word inserted (tag ``O``)
the sentence)      at the sentence's start
                   into (later -> first): none        moving a span to the front deletes its left context
                                                      (marker words among it); no control deletes as much
                                                      left context while keeping the span's position
=================  =================================  =========================================================

The digit's controls are on the same word and differ only in leaving the span without (or with) a digit: against
a digit put into a neighbouring ``O`` word, a tagger that reads any digit near a span would show no effect, though
it uses digits.
The case controls change ``O`` words instead: the same-word control ("aLice", as the capitalised word's) splits
a cased tokenizer's word into other subwords, a far larger change than "Alice"; a tagger that reads the case of
the words around a span as well would show a smaller effect (a known limit). *Nearest*: ``O`` words by their
distance from the span (the word before it first on a tie). *Neutral words*:
words with no marker association (|z| < 1 for every type, letters only), as the marker test's controls.
``name=0`` of each 0/1 property uses the same edits reversed (:class:`probe.discovery.property_edits.PropertyEdit`).
An edit returns ``(edited, control)`` as ``(words, position of the span's first word)`` pairs, or None where it
does not apply (the span already in the target slice, or no control of the same size in the sentence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from probe.discovery.candidates import association_rows, empty_table
from probe.discovery.property_edits import PropertyEdit

KIND = "span property"
Read = tuple[list[str], int]  # (words of the sentence, position of the span's first word)
EditPair = tuple[Read, Read]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
ONE_WAY = {"span_first": "only the edit out of the first position runs (a neutral word inserted before the span); "
                         "moving a span to the front would delete its left context, which no same-size control can"}


@dataclass(frozen=True)
class Span:
    """An entity span of a tagged sentence: ``words[s:e]``, tagged ``tags``."""

    words: Sequence[str]
    tags: Sequence[str]
    s: int
    e: int

    def others(self) -> list[int]:
        """Positions of the ``O`` words, nearest the span first (the word before it first on a tie)."""
        outside = [j for j, t in enumerate(self.tags) if t == "O" and not self.s <= j < self.e]
        return sorted(outside, key=lambda j: (self.s - j if j < self.s else j - self.e + 1, j > self.s))

    def replaced(self, new: dict[int, str]) -> list[str]:
        return [new.get(j, w) for j, w in enumerate(self.words)]


@dataclass
class SpanContext:
    """What the span edits need from the training data: neutral words (no marker association)."""

    neutral: list[str]

    def word(self, rng: np.random.Generator) -> str:
        return str(rng.choice(self.neutral)) if self.neutral else "word"


def _first_upper(word: str) -> bool:
    return word[:1].isalpha() and word[:1].isupper()


def _letters(span: Span) -> str:
    return "".join(c for w in span.words[span.s: span.e] for c in w if c.isalpha())


def _capitalised(span: Span, ctx: SpanContext | None = None) -> int:
    return int(_first_upper(span.words[span.s]))


def _all_caps(span: Span, ctx: SpanContext | None = None) -> int:
    letters = _letters(span)
    return int(len(letters) >= 2 and letters.isupper())


def _digit(span: Span, ctx: SpanContext | None = None) -> int:
    return int(any(c.isdigit() for w in span.words[span.s: span.e] for c in w))


def _first(span: Span, ctx: SpanContext | None = None) -> int:
    return int(span.s == 0)


def _upper_elsewhere(span: Span, n: int) -> list[str] | None:
    """The case control: ``n`` lower-case letters of the nearest ``O`` words upper-cased (left to right in each)."""
    new: dict[int, str] = {}
    for j in span.others():
        if n == 0:
            break
        chars = list(span.words[j])
        for k, ch in enumerate(chars):
            if n and ch.islower():
                chars[k], n = ch.upper(), n - 1
        new[j] = "".join(chars)
    return None if n else span.replaced(new)


def _case_pair(span: Span, new_span: list[str]) -> EditPair | None:
    """The span's words replaced by ``new_span`` (a case change) against as many letters' case changed in ``O``
    words."""
    old, new = "".join(span.words[span.s: span.e]), "".join(new_span)
    if len(old) != len(new):
        return None  # a letter whose case pair has another length ("ß" -> "SS"): not one letter's case
    n = sum(a != b for a, b in zip(old, new))
    control = _upper_elsewhere(span, n) if n else None
    if control is None:
        return None
    edited = list(span.words[: span.s]) + new_span + list(span.words[span.e:])
    return (edited, span.s), (control, span.s)


def _capitalised_into(span: Span, v: int, ctx: SpanContext, rng: np.random.Generator) -> EditPair | None:
    w = span.words[span.s]
    if v != 1 or not (w[:1].isalpha() and w[:1].islower()):
        return None
    return _case_pair(span, [w[0].upper() + w[1:]] + list(span.words[span.s + 1: span.e]))


def _capitalised_out_of(span: Span, v: int, ctx: SpanContext, rng: np.random.Generator) -> EditPair | None:
    w = span.words[span.s]
    if v != 1 or not _first_upper(w):
        return None
    return _case_pair(span, [w[0].lower() + w[1:]] + list(span.words[span.s + 1: span.e]))


def _all_caps_into(span: Span, v: int, ctx: SpanContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1 or _all_caps(span) or len(_letters(span)) < 2:
        return None
    return _case_pair(span, [w.upper() for w in span.words[span.s: span.e]])


def _all_caps_out_of(span: Span, v: int, ctx: SpanContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1 or not _all_caps(span):
        return None
    new = [w[:1] + w[1:].lower() for w in span.words[span.s: span.e]]
    return None if _all_caps(Span(new, span.tags[span.s: span.e], 0, len(new))) else _case_pair(span, new)


def _letters_for(k: int, rng: np.random.Generator) -> list[str]:
    return [str(c) for c in rng.choice(list(LETTERS), k)]


def _digit_into(span: Span, v: int, ctx: SpanContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1 or _digit(span):
        return None
    w, d, letter = span.words[span.s], str(int(rng.integers(2, 10))), _letters_for(1, rng)[0]
    return (span.replaced({span.s: w + d}), span.s), (span.replaced({span.s: w + letter}), span.s)


def _digit_out_of(span: Span, v: int, ctx: SpanContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1 or not _digit(span):
        return None
    edited, control = {}, {}
    for j in range(span.s, span.e):
        w = span.words[j]
        others = {k: str((int(c) + int(rng.integers(1, 10))) % 10) for k, c in enumerate(w) if c.isdigit()}
        edited[j] = "".join(c for c in w if not c.isdigit())
        control[j] = "".join(others.get(k, c) for k, c in enumerate(w))  # each digit another digit
    if not all(edited.values()):
        return None  # a word of digits only would vanish and take its tag with it
    return (span.replaced(edited), span.s), (span.replaced(control), span.s)


def _first_into(span: Span, v: int, ctx: SpanContext, rng: np.random.Generator) -> EditPair | None:
    return None  # ONE_WAY: no honest edit moves a later span to the front


def _first_out_of(span: Span, v: int, ctx: SpanContext, rng: np.random.Generator) -> EditPair | None:
    if v != 1 or span.s != 0:
        return None
    w, words = ctx.word(rng), list(span.words)
    return ([w] + words, 1), (words[: span.e] + [w] + words[span.e:], 0)


SPAN_EDITS: dict[str, PropertyEdit] = {
    "span_capitalised": PropertyEdit("span_capitalised", _capitalised, _capitalised_into, _capitalised_out_of),
    "span_all_caps": PropertyEdit("span_all_caps", _all_caps, _all_caps_into, _all_caps_out_of),
    "span_digit": PropertyEdit("span_digit", _digit, _digit_into, _digit_out_of),
    "span_first": PropertyEdit("span_first", _first, _first_into, _first_out_of),
}


def inserted_tags(span: Span, read: Read) -> list[str]:
    """The gold tags of an edited sentence: each kept word keeps its tag, an inserted word is ``O``
    (the edits insert at most one word, never inside the span)."""
    words, pos = read
    if len(words) == len(span.words):
        return list(span.tags)
    j = 0 if pos > span.s else span.e  # the word went before the span (span_first) or right after it
    return list(span.tags[:j]) + ["O"] + list(span.tags[j:])


def span_counts(sentences: Sequence, types: Sequence[str], min_count: int) -> pd.DataFrame:
    """Rows (kind ``span property``) of every slice ``name=v`` with at least ``min_count`` training spans: each
    entity span a trial, its type the outcome, p0 the type's share of the spans (Gardner et al. 2021's z as
    :func:`probe.discovery.candidates.association_rows` computes it per class)."""
    from probe.tasks.tokens.tagging import entity_spans

    spans = [Span(s.words, s.tags, a, b) for s in sentences for a, b, _ in entity_spans(s.tags)]
    labels = np.array([list(types).index(t) for s in sentences for _, _, t in entity_spans(s.tags)], dtype=np.int64)
    presence = {}
    for name, edit in SPAN_EDITS.items():
        values = np.array([edit.value(sp, None) for sp in spans], dtype=np.int64)
        for v in (0, 1):
            if (values == v).sum() >= min_count:
                presence[(f"{name}={v}", KIND)] = values == v
    if not presence or labels.size == 0:
        return empty_table()
    return association_rows(presence, labels, list(types))


def moves(feature: str, ctx: SpanContext) -> tuple[Callable[[Span, np.random.Generator], EditPair | None],
                                                      Callable[[Span, np.random.Generator], EditPair | None]]:
    """``(into, out_of)`` of the slice ``name=v``, each ``(span, rng) -> (edited, control) | None``."""
    name, value = feature.rsplit("=", 1)
    return SPAN_EDITS[name].directions(int(value), ctx)
