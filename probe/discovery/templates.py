"""Position templates: the first and last k words of a text (k = 1..4) as candidate shortcuts (issue 25).

A boilerplate prefix or suffix that one source adds to every document ("LONDON (Reuters) -", a signature
line) is not a word the model must read anywhere: it is a pattern at a position. A text *starts with* the
template ``^w1 .. wk`` when its first k words (:func:`probe.discovery.candidates.word_key`, empty keys
skipped) are w1..wk, and *ends with* ``w1 .. wk$`` likewise for its last k. Templates enter discovery's
candidates with Gardner et al. 2021's z like words (kinds ``prefix`` / ``suffix``) and are tested by an edit:

- into (insertion direction): the template's most common surface form in the training texts is added at its
  end of the text; control: a *frequency-matched template with no label association* (same kind and k,
  |z| < 1 for every class, training count within a factor of 2, the closest counts where none) added instead;
- out of (deletion direction): the words that make the template are deleted; control: as many other words
  deleted at random from the next 5 + k words inwards.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd

from probe.discovery.candidates import feature_association, word_key

MAX_K = 4
KINDS = ("prefix", "suffix")


def _keyed(text: str) -> tuple[list[str], list[int]]:
    """A text's non-empty word keys and the index of the whitespace word each came from."""
    keys, where = [], []
    for j, w in enumerate(text.split()):
        k = word_key(w)
        if k:
            keys.append(k)
            where.append(j)
    return keys, where


def name(kind: str, keys: Sequence[str]) -> str:
    return ("^" + " ".join(keys)) if kind == "prefix" else (" ".join(keys) + "$")


def parse(feature: str) -> tuple[str, list[str]]:
    """``"^a b"`` -> ``("prefix", ["a", "b"])``; ``"a b$"`` -> ``("suffix", ["a", "b"])``."""
    if feature.startswith("^"):
        return "prefix", feature[1:].split()
    return "suffix", feature[:-1].split()


def nested(a: str, b: str) -> bool:
    """Whether templates ``a`` and ``b`` of one kind are the same boilerplate at two lengths (one extends the other)."""
    (ka, pa), (kb, pb) = parse(a), parse(b)
    short, long_ = sorted((pa, pb), key=len)
    return ka == kb and (long_[: len(short)] == short if ka == "prefix" else long_[-len(short):] == short)


def template_features(text: str, max_k: int = MAX_K) -> set[tuple[str, str]]:
    """The ``(feature, kind)`` templates of one text: its first and last k word keys, k = 1..max_k."""
    keys, _ = _keyed(text)
    out = set()
    for k in range(1, min(max_k, len(keys)) + 1):
        out.add((name("prefix", keys[:k]), "prefix"))
        out.add((name("suffix", keys[-k:]), "suffix"))
    return out


def template_association(texts: Sequence[str], labels: np.ndarray, classes: Sequence[str],
                         min_count: int) -> pd.DataFrame:
    """z and PMI (:mod:`probe.discovery.candidates`) of every template in at least ``min_count`` of ``texts``."""
    return feature_association([template_features(t) for t in texts], labels, classes, min_count)


def surfaces(texts: Sequence[str], features: set[str], max_k: int = MAX_K) -> dict[str, str]:
    """The most common surface form (the original words, punctuation and case kept) of each template."""
    seen: dict[str, Counter] = {f: Counter() for f in features}
    for t in texts:
        words = t.split()
        keys, where = _keyed(t)
        for k in range(1, min(max_k, len(keys)) + 1):
            pre, suf = name("prefix", keys[:k]), name("suffix", keys[-k:])
            if pre in seen:
                seen[pre][" ".join(words[: where[k - 1] + 1])] += 1
            if suf in seen:
                seen[suf][" ".join(words[where[-k]:])] += 1
    return {f: c.most_common(1)[0][0] for f, c in seen.items() if c}


def has_template(text: str, feature: str) -> bool:
    kind, parts = parse(feature)
    keys, _ = _keyed(text)
    return (keys[: len(parts)] if kind == "prefix" else keys[-len(parts):]) == parts and len(keys) >= len(parts)


def add(text: str, surface: str, kind: str) -> str:
    return f"{surface} {text}" if kind == "prefix" else f"{text} {surface}"


def remove(text: str, feature: str, rng: np.random.Generator) -> tuple[str, str] | None:
    """``(text without the template's words, text without as many other words nearby)``; None if it lacks it."""
    if not has_template(text, feature):
        return None
    kind, parts = parse(feature)
    words = text.split()
    _, where = _keyed(text)
    k = len(parts)
    gone = set(range(0, where[k - 1] + 1)) if kind == "prefix" else set(range(where[-k], len(words)))
    inner = sorted(set(range(len(words))) - gone)
    inner = inner[: 5 + k] if kind == "prefix" else inner[-(5 + k):]
    if len(inner) < len(gone) + 1:
        return None
    ctrl = set(rng.choice(inner, len(gone), replace=False).tolist())
    return (" ".join(w for j, w in enumerate(words) if j not in gone),
            " ".join(w for j, w in enumerate(words) if j not in ctrl))


def control_templates(data: pd.DataFrame, feature: str, count: int, n: int, exclude: set[str],
                      rng: np.random.Generator) -> list[str]:
    """``n`` templates of the same kind and length as ``feature`` with |z| < 1 for every class and training
    count within a factor of 2 of ``count`` (the closest counts where too few), drawn at random."""
    kind, parts = parse(feature)
    rows = data[data.kind == kind]
    stats = rows.groupby("feature").agg(count=("count", "first"), zmax=("z", lambda z: np.abs(z).max()))
    same_k = np.array([len(parse(f)[1]) == len(parts) for f in stats.index], dtype=bool)
    ok = stats[same_k & (stats.zmax < 1).to_numpy() & ~stats.index.isin(list(exclude))]
    if ok.empty:
        return []
    dist = np.abs(np.log2(ok["count"].to_numpy(dtype=float) / max(count, 1)))
    near = ok.index[dist <= 1].tolist()
    if len(near) < n:
        near = ok.index[np.argsort(dist, kind="stable")[: max(n, 1)]].tolist()
    return sorted(rng.choice(near, min(n, len(near)), replace=False).tolist())
