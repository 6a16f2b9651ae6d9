"""Edits that change one relational property of a pair (:mod:`probe.tasks.pairs.relations`), each with
a control edit that changes the same amount of text but not the property. All edits touch the second
text only and keep every other word (with its punctuation) in place.

==================  ===========================================  ===========================================
property            edit (``raise`` / ``lower``)                 control (same positions, same count)
==================  ===========================================  ===========================================
lexical overlap     raise: k content words of the second that    the same positions get k words that occur
                    occur once and not in the first are replaced in neither text, frequency-matched to the
                    by k content words of the first (share up    copied words (share unchanged: the replaced
                    by k / distinct content words)               word types vanish, the new ones are not
                                                                 shared)
                    lower: k shared content words (once each)    the same replacement made in the first
                    replaced by unshared frequency-matched words text too, so the new words stay shared
negation            raise: "not" inserted at a random position   a stop word of matched frequency inserted
                    lower: every negation word deleted           as many other stop words deleted
length difference   raise: k stop words inserted                 k stop words of the second replaced by them
                    lower: k stop words deleted                  those k replaced by other stop words
==================  ===========================================  ===========================================

Both sides of each row change the same positions of the second text to the same extent; the overlap
``lower`` control also edits the first text (the only edit that does). Stop words and content words
are :mod:`relations`' (scikit-learn's list without negations), so the
overlap edits leave negation and length alone, and the negation and length edits leave overlap alone.
Frequency matching (:class:`FrequencyMatcher`) draws words whose count in the training texts is within
a factor of 2 of the word's (the closest counts where fewer) and, in discovery, without label
association (|z| < 1 on both sides), as discovery's control words do.
"""

from __future__ import annotations

import string
from collections import Counter
from typing import Sequence

import numpy as np

from probe.discovery.candidates import text_words, word_key
from probe.tasks.pairs.relations import NEGATIONS, STOP_WORDS, content_words, is_content

Edit = tuple[str, str]  # (edited second text, control second text)


class FrequencyMatcher:
    """Words of the training texts by count, to draw controls of matched frequency; ``avoid``: words never
    drawn (label-associated words, whose insertion would be an edit of its own)."""

    def __init__(self, texts: Sequence[str], avoid: frozenset[str] | set[str] = frozenset()):
        counts = Counter(k for t in texts for k in text_words(t) if k.isalpha() and k not in avoid)
        self.count = counts
        self.words = np.array(sorted(counts))
        self.counts = np.array([counts[w] for w in self.words], dtype=float)
        self.content = np.array([is_content(w) for w in self.words], dtype=bool)
        self.stop = np.array([w in STOP_WORDS for w in self.words], dtype=bool)

    def match(self, word: str, exclude: set[str], rng: np.random.Generator, content: bool = True) -> str | None:
        """A content word (or, with ``content=False``, a stop word) not in ``exclude`` whose count is within a
        factor of 2 of ``word``'s (the closest count where none is); ``None`` if there is no such word."""
        ok = (self.content if content else self.stop) & ~np.isin(self.words, list(exclude))
        if not ok.any():
            return None
        dist = np.abs(np.log2(self.counts / max(self.count.get(word, 1), 1)))
        near = np.flatnonzero(ok & (dist <= 1))
        if near.size == 0:
            cand = np.flatnonzero(ok)
            near = cand[dist[cand] == dist[cand].min()]
        return str(self.words[rng.choice(near)])


def _with_core(word: str, new: str) -> str:
    """``new`` in place of ``word``'s core, keeping the punctuation around it ("(profit," -> "(sales,")."""
    core = word.strip(string.punctuation)
    if not core:
        return new
    start = word.index(core)
    return word[:start] + new + word[start + len(core):]


def _replace(words: list[str], positions, new: Sequence[str]) -> str:
    out = list(words)
    for j, w in zip(positions, new):
        out[j] = _with_core(out[j], w)
    return " ".join(out)


def _once(keys: list[str], first_words: set[str], shared: bool) -> list[int]:
    """Positions of content words that occur once in the second text and are (not) in the first."""
    counts = Counter(keys)
    return [j for j, k in enumerate(keys) if is_content(k) and counts[k] == 1 and (k in first_words) == shared]


def _matched(words: Sequence[str], exclude: set[str], matcher: FrequencyMatcher, rng, content: bool = True):
    out = []
    for w in words:
        m = matcher.match(w, exclude | set(out), rng, content)
        if m is None:
            return None
        out.append(m)
    return out


def overlap_raise(first: str, second: str, k: int, matcher: FrequencyMatcher, rng: np.random.Generator) -> Edit | None:
    """Copy up to ``k`` content words of the first text into the second (see the module table)."""
    words = second.split()
    keys = [word_key(w) for w in words]
    first_words = set(content_words(first))
    positions = _once(keys, first_words, shared=False)
    copy = sorted(first_words - set(keys))
    n = min(k, len(positions), len(copy))
    if n == 0:
        return None
    pos = sorted(rng.choice(positions, n, replace=False).tolist())
    new = rng.choice(copy, n, replace=False).tolist()
    ctrl = _matched(new, first_words | set(keys) | set(new), matcher, rng)
    return None if ctrl is None else (_replace(words, pos, new), _replace(words, pos, ctrl))


def overlap_lower(first: str, second: str, k: int, matcher: FrequencyMatcher,
                  rng: np.random.Generator) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """Replace up to ``k`` shared content words of the second text (each once in either text) by unshared
    frequency-matched words; the control makes the same replacement in the first text too, so the words
    stay shared. Returns the edited and the control *pairs* (the control edits both texts)."""
    words, first_words_list = second.split(), first.split()
    keys, first_keys = [word_key(w) for w in words], [word_key(w) for w in first_words_list]
    first_words = set(content_words(first))
    in_first = Counter(first_keys)
    shared = [j for j in _once(keys, first_words, shared=True) if in_first[keys[j]] == 1]
    n = min(k, len(shared))
    if n == 0:
        return None
    pos = sorted(rng.choice(shared, n, replace=False).tolist())
    new = _matched([keys[j] for j in pos], first_words | set(keys), matcher, rng)
    if new is None:
        return None
    first_pos = [first_keys.index(keys[j]) for j in pos]
    edited = _replace(words, pos, new)
    return (first, edited), (_replace(first_words_list, first_pos, new), edited)


def negation_raise(second: str, matcher: FrequencyMatcher, rng: np.random.Generator, word: str = "not") -> Edit | None:
    """Insert ``word`` (a negation) at a random position; the control inserts a stop word of matched frequency."""
    words = second.split()
    ctrl = matcher.match(word, set(NEGATIONS) | {word_key(w) for w in words}, rng, content=False)
    if ctrl is None:
        return None
    j = int(rng.integers(len(words) + 1))
    return " ".join(words[:j] + [word] + words[j:]), " ".join(words[:j] + [ctrl] + words[j:])


def negation_lower(second: str, rng: np.random.Generator) -> Edit | None:
    """Delete every negation word; the control deletes as many stop words (None if the text has too few)."""
    words = second.split()
    keys = [word_key(w) for w in words]
    neg = [j for j, k in enumerate(keys) if k in NEGATIONS]
    stops = [j for j, k in enumerate(keys) if k in STOP_WORDS]
    if not neg or len(stops) < len(neg):
        return None
    gone = set(rng.choice(stops, len(neg), replace=False).tolist())
    return (" ".join(w for j, w in enumerate(words) if j not in set(neg)),
            " ".join(w for j, w in enumerate(words) if j not in gone))


def _stop_words_and_controls(second: str, k: int, matcher: FrequencyMatcher, rng: np.random.Generator):
    """``(words, positions, replacements)``: ``k`` of the text's stop words at random and as many other stop
    words of matched frequency (the length edits' controls), or None when the text has too few."""
    words = second.split()
    keys = [word_key(w) for w in words]
    stops = [j for j, key in enumerate(keys) if key in STOP_WORDS]
    if len(stops) < k or k == 0:
        return None
    pos = sorted(rng.choice(stops, k, replace=False).tolist())
    new = _matched([keys[j] for j in pos], {keys[j] for j in pos} | set(NEGATIONS), matcher, rng, content=False)
    return None if new is None else (words, pos, new)


def length_raise(second: str, k: int, matcher: FrequencyMatcher, rng: np.random.Generator) -> Edit | None:
    """Insert ``k`` stop words at random positions; the control puts the same words in place of ``k`` of the
    text's own stop words (other words), so only the edit changes the length."""
    found = _stop_words_and_controls(second, k, matcher, rng)
    if found is None:
        return None
    words, pos, new = found
    edited = list(words)
    for w in new:
        j = int(rng.integers(len(edited) + 1))
        edited.insert(j, w)
    return " ".join(edited), _replace(words, pos, new)


def length_lower(second: str, k: int, matcher: FrequencyMatcher, rng: np.random.Generator) -> Edit | None:
    """Delete ``k`` stop words; the control replaces the same ``k`` by other stop words of matched frequency."""
    found = _stop_words_and_controls(second, k, matcher, rng)
    if found is None:
        return None
    words, pos, new = found
    return " ".join(w for j, w in enumerate(words) if j not in set(pos)), _replace(words, pos, new)


def topic_swaps(sources_first: Sequence[str], sources_second: Sequence[str], i: int, match: bool,
                rng: np.random.Generator) -> tuple[int, int] | None:
    """For pair ``i``: the index of another pair whose second text comes from the first text's source class
    (``match=True``) or another class, and the control index from the opposite kind; the edit moves topic
    match to ``match``, the control keeps it. ``None`` when either kind is missing."""
    same = [j for j, s in enumerate(sources_second) if j != i and s == sources_first[i]]
    other = [j for j, s in enumerate(sources_second) if j != i and s != sources_first[i]]
    if not same or not other:
        return None
    edit, ctrl = (same, other) if match else (other, same)
    return int(rng.choice(edit)), int(rng.choice(ctrl))
