"""Training-data augmentation for fine-tuning: word deletion, counterfactual planting, EDA's synonym
replacement, random insertion and random swap, contextual replacement and back-translation.

Pure functions of (texts or word lists, rng, ...): they return new lists and never touch their inputs,
and draw only from the ``numpy.random.Generator`` passed in. The fine-tuning loop draws them afresh
every epoch from a generator seeded by (seed, epoch). What needs a model comes in as an argument:
a thesaurus (a mapping from a lower-cased word to its neighbours), a masked-LM ``fill`` and a
``translate`` function (:mod:`probe.models.augmenters` builds them from the backbone, an MLM and
translation models).

Which words may change (:func:`editable_mask`): a *content word* is a whitespace word whose core,
between leading and trailing punctuation, is letters only (at least two), and is not a stop-word
(scikit-learn's English list, as EDA leaves stop-words alone). The ``keep`` words (the planted
tokens) are never changed, moved or introduced, nor are their spelling variants (:func:`is_variant`):
the question these augmentations answer is whether rewriting the text *around* a cue removes a
shortcut, not what happens when a thesaurus happens to know the cue. A replacement is never a
spelling variant of the word it replaces (company -> companies is not a synonym). With ``tags``
(taggers), only words tagged ``O`` change, and inserted words are tagged ``O`` outside entity spans.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Callable, Mapping, Sequence

import numpy as np

from probe.data.planted import insert_token, insertion_positions

_WORD = re.compile(r"^(\W*)([^\W\d_]{2,})(\W*)$")

Thesaurus = Mapping[str, Sequence[str]]  # lower-cased word -> its neighbours, nearest first
# per (word list, chosen positions): for each position, candidate words with their probabilities, best first
Fill = Callable[[list[tuple[list[str], list[int]]]], list[list[list[tuple[str, float]]]]]


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """scikit-learn's English stop-words (318 words, from the Glasgow Information Retrieval Group)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def split_word(word: str) -> tuple[str, str, str] | None:
    """``(prefix, core, suffix)`` of a word whose core is letters only (at least two) between
    punctuation (``"profits,"`` -> ``("", "profits", ",")``); None otherwise (numbers, ``U.S.``, ``don't``)."""
    m = _WORD.match(word)
    return m.groups() if m else None


def is_variant(a: str, b: str) -> bool:
    """Whether two words are spellings of one word: equal but for case, one begins with the other
    (zebra, zebras), or they share a prefix of at least four letters that covers 60 % of the shorter
    (company, companies; elect, election). A crude stemmer, on purpose: it only ever withholds a word."""
    a, b = a.lower(), b.lower()
    if a.startswith(b) or b.startswith(a):
        return True
    n = len(os.path.commonprefix([a, b]))
    return n >= 4 and n >= 0.6 * min(len(a), len(b))


def _kept(word: str, keep: Sequence[str]) -> bool:
    parts = split_word(word)
    core = parts[1] if parts else word.strip()
    return any(is_variant(core, k) for k in keep)


def editable_mask(words: Sequence[str], keep: Sequence[str] = (), tags: Sequence[str] | None = None) -> np.ndarray:
    """Which words an augmentation may change: content words (see the module), not a variant of a
    ``keep`` word, and tagged ``O`` when ``tags`` are given."""
    out = np.zeros(len(words), dtype=bool)
    stops = stop_words()
    for i, w in enumerate(words):
        parts = split_word(w)
        out[i] = (parts is not None and parts[1].lower() not in stops and not any(is_variant(parts[1], k) for k in keep)
                  and (tags is None or tags[i] == "O"))
    return out


def with_case(original: str, word: str) -> str:
    """``word`` in the case pattern of ``original`` (ALL CAPS, Capitalised, or as it is)."""
    if len(original) > 1 and original.isupper():
        return word.upper()
    if original[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def substream(rng: np.random.Generator, *keys: int) -> np.random.Generator:
    """An independent generator from ``rng``'s seed and ``keys``, without drawing from ``rng`` (so
    switching one augmentation on leaves the others' draws as they were)."""
    ss = rng.bit_generator.seed_seq
    return np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, *map(int, keys))))


def _count(rate: float, n: int, rng: np.random.Generator) -> int:
    """``rate * n`` stochastically rounded: its expectation is exactly ``rate * n``."""
    return int(np.floor(rate * n + rng.random()))


def _check(rate: float, name: str) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {rate}")


def on_texts(texts: Sequence[str], edit: Callable[[list[list[str]]], list[list[str]]]) -> list[str]:
    """Apply a word-list augmentation to whitespace-split texts; a text whose words did not change is
    returned exactly as it was."""
    before = [t.split() for t in texts]
    after = edit(before)
    return [t if a == b else " ".join(a) for t, a, b in zip(texts, after, before)]


def count_changed(before: Sequence, after: Sequence) -> int:
    """How many items differ."""
    return sum(a != b for a, b in zip(before, after))


def _neighbours(core: str, thesaurus: Thesaurus, keep: Sequence[str]) -> list[str]:
    stops = stop_words()
    return [w for w in thesaurus.get(core.lower(), ()) if w.lower() not in stops and not is_variant(w, core)
            and not any(is_variant(w, k) for k in keep)]


def replace_synonyms(sentences: Sequence[Sequence[str]], thesaurus: Thesaurus, rate: float,
                     rng: np.random.Generator, *, keep: Sequence[str] = (),
                     tags: Sequence[Sequence[str]] | None = None) -> list[list[str]]:
    """EDA synonym replacement (Wei & Zou 2019): in each word list, ``rate * n_words`` words
    (stochastically rounded, so ``rate`` is the expected share), drawn uniformly among the content
    words the thesaurus knows, are each replaced by a neighbour drawn uniformly, in the replaced
    word's case and punctuation. A word list with fewer such words changes fewer."""
    _check(rate, "synonym replacement rate")
    out = []
    for k, words in enumerate(sentences):
        words = list(words)
        n = _count(rate, len(words), rng)
        if n:
            mask = editable_mask(words, keep, tags[k] if tags is not None else None)
            cand = [i for i in np.flatnonzero(mask) if split_word(words[i])[1].lower() in thesaurus]
            for i in sorted(rng.choice(cand, min(n, len(cand)), replace=False)) if cand else []:
                prefix, core, suffix = split_word(words[i])
                options = _neighbours(core, thesaurus, keep)
                if options:
                    words[i] = prefix + with_case(core, options[rng.integers(len(options))]) + suffix
        out.append(words)
    return out


def insert_synonyms(sentences: Sequence[Sequence[str]], thesaurus: Thesaurus, rate: float,
                    rng: np.random.Generator, *, keep: Sequence[str] = (),
                    tags: Sequence[Sequence[str]] | None = None) -> tuple[list[list[str]], list[list[str]] | None]:
    """EDA random insertion (Wei & Zou 2019): ``rate * n_words`` times (stochastically rounded), a
    neighbour of a random content word of the list is inserted at a uniform position, never right
    after a ``keep`` word (a planted marker stays next to the word it precedes); with ``tags``: tagged
    ``O``, never inside an entity span. Returns the word lists and the tags (None without)."""
    _check(rate, "random insertion rate")
    out, out_tags = [], [] if tags is not None else None
    for k, words in enumerate(sentences):
        words, t = list(words), (list(tags[k]) if tags is not None else None)
        n = _count(rate, len(words), rng)
        if n:
            mask = editable_mask(words, keep, t)
            cores = [split_word(words[i])[1] for i in np.flatnonzero(mask)]
            cores = [c for c in cores if c.lower() in thesaurus]
            for _ in range(n if cores else 0):
                options = _neighbours(cores[rng.integers(len(cores))], thesaurus, keep)
                if not options:
                    continue
                slots = [p for p in range(len(words) + 1) if (p == 0 or not _kept(words[p - 1], keep))
                         and (t is None or p == len(words) or not t[p].startswith("I-"))]
                p = slots[rng.integers(len(slots))]
                words.insert(p, options[rng.integers(len(options))])
                if t is not None:
                    t.insert(p, "O")
        out.append(words)
        if out_tags is not None:
            out_tags.append(t)
    return out, out_tags


def swap_words(sentences: Sequence[Sequence[str]], rate: float, rng: np.random.Generator, *,
               keep: Sequence[str] = (), tags: Sequence[Sequence[str]] | None = None) -> list[list[str]]:
    """EDA random swap (Wei & Zou 2019): ``rate * n_words`` times (stochastically rounded), two
    distinct words drawn uniformly trade places. The ``keep`` words stay where they are (a planted
    token near the start is never moved past the truncation point); with ``tags``, only ``O`` words move."""
    _check(rate, "random swap rate")
    out = []
    for k, words in enumerate(sentences):
        words = list(words)
        n = _count(rate, len(words), rng)
        movable = [i for i, w in enumerate(words)
                   if not _kept(w, keep) and (tags is None or tags[k][i] == "O")]
        for _ in range(n if len(movable) > 1 else 0):
            a, b = rng.choice(movable, 2, replace=False)
            words[a], words[b] = words[b], words[a]
        out.append(words)
    return out


def contextual_replace(sentences: Sequence[Sequence[str]], rate: float, rng: np.random.Generator, fill: Fill, *,
                       top_k: int, keep: Sequence[str] = (),
                       tags: Sequence[Sequence[str]] | None = None) -> list[list[str]]:
    """Contextual augmentation (Kobayashi 2018): in each word list, ``rate * n_words`` words
    (stochastically rounded) are drawn uniformly among the content words, all masked at once, and
    each is replaced by a word drawn from the masked LM's ``top_k`` predictions at its position
    (``fill``), in proportion to their probability.
    Predictions that are a stop-word, a spelling variant of the masked word or a ``keep`` word are
    passed over (the next ones move up). Unlike Kobayashi's, the LM is not conditioned on the label."""
    _check(rate, "contextual replacement rate")
    chosen = []
    for k, words in enumerate(sentences):
        cand = np.flatnonzero(editable_mask(words, keep, tags[k] if tags is not None else None))
        n = min(_count(rate, len(words), rng), len(cand))
        chosen.append(sorted(int(i) for i in rng.choice(cand, n, replace=False)) if n else [])
    items = [(list(words), c) for words, c in zip(sentences, chosen) if c]
    predictions = iter(fill(items) if items else [])
    out, stops = [], stop_words()
    for words, positions in zip(sentences, chosen):
        words = list(words)
        for i, candidates in zip(positions, next(predictions) if positions else []):
            prefix, core, suffix = split_word(words[i])
            options = [(w, p) for w, p in candidates if w.lower() not in stops and not is_variant(w, core)
                       and not any(is_variant(w, x) for x in keep)][:top_k]
            if options:
                p = np.array([max(q, 0.0) for _, q in options], dtype=float)
                p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1 / len(p))
                words[i] = prefix + with_case(core, options[rng.choice(len(options), p=p)][0]) + suffix
        out.append(words)
    return out


def back_translate(texts: Sequence[str], rate: float, rng: np.random.Generator,
                   translate: Callable[[list[str]], list[str]]) -> list[str]:
    """Back-translation (Sennrich et al. 2016; Xie et al. 2020, UDA): each text is replaced with
    probability ``rate`` by ``translate`` of it (a round trip through another language); an empty
    translation leaves the text as it was."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"back-translation rate must be in [0, 1], got {rate}")
    chosen = np.flatnonzero(rng.random(len(texts)) < rate)
    out = list(texts)
    for i, t in zip(chosen, translate([texts[i] for i in chosen]) if len(chosen) else []):
        if t and t.strip():
            out[i] = t
    return out


def delete_words(texts: list[str], p: float, rng: np.random.Generator) -> list[str]:
    """Drop each whitespace-separated word independently with probability ``p``.

    A text never loses all its words: when every word of a non-empty text is drawn for
    deletion, one of them (chosen uniformly) is kept. ``p = 0`` returns the texts unchanged.
    (Random deletion as in EDA, Wei & Zou 2019.)
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"word deletion probability must be in [0, 1), got {p}")
    if p == 0.0:
        return list(texts)
    out = []
    for text in texts:
        words = text.split()
        if not words:
            out.append(text)
            continue
        keep = rng.random(len(words)) >= p
        if not keep.any():
            keep[rng.integers(len(words))] = True
        out.append(" ".join(w for w, k in zip(words, keep) if k))
    return out


def counterfactual_plant(
    texts: list[str], labels: np.ndarray, planted: list[tuple[str, int, int]], rate: float,
    rng: np.random.Generator,
) -> tuple[list[str], np.ndarray]:
    """Insert each planted token into a ``rate`` fraction of the examples of the *other* classes.

    ``planted`` holds ``(token, target class index, max_position)`` per planted feature. For each,
    every example whose label is not the target is chosen independently with probability
    ``rate`` and gets the token inserted at a uniform word position in
    ``[0, min(max_position, n_words)]`` (:func:`probe.data.planted.insert_token`); a chosen text
    that already holds the token as a word is left as it is. Labels are not changed, so the
    token stops predicting its class: counterfactually augmented data in the sense of Kaushik,
    Hovy & Lipton 2020 ("Learning the difference that makes a difference with
    counterfactually-augmented data", ICLR), with the token as the edited attribute.

    Returns the new texts and a boolean matrix ``[len(planted), len(texts)]`` of the examples
    chosen for each token. Examples of the target class are never changed.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"counterfactual rate must be in [0, 1], got {rate}")
    labels = np.asarray(labels)
    texts = list(texts)
    chosen = np.zeros((len(planted), len(texts)), dtype=bool)
    for k, (token, target, max_position) in enumerate(planted):
        mask = (labels != target) & (rng.random(len(texts)) < rate)
        idx = np.flatnonzero(mask)
        positions = insertion_positions([texts[i] for i in idx], max_position, rng)
        for i, pos in zip(idx, positions):
            if token not in texts[i].split():
                texts[i] = insert_token(texts[i], token, int(pos))
        chosen[k] = mask
    return texts, chosen
