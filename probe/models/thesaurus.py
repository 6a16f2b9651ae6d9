"""A thesaurus from a model's own input embeddings: the offline, download-free stand-in for the
WordNet synonyms of EDA (Wei & Zou 2019).

A word's neighbours are the whole-word vocabulary entries nearest to it by cosine similarity of the
input embeddings (embedding neighbours as augmentation: Wang & Yang 2015; Alzantot et al. 2018).
They are related words rather than strict synonyms (football -> soccer, basketball; profit ->
revenue, earnings), which is what an embedding thesaurus gives. Written here rather than taken
from a library because the libraries that do it (nlpaug, TextAttack) download their own word
vectors; this one reads the backbone that is being fine-tuned.

A *whole-word entry* is a vocabulary entry that is a word on its own: letters only (at least two),
not a special token, and tokenised back to exactly that one entry (so WordPiece continuations such
as ``##s`` and pieces of longer words are out). Stop-words (:func:`probe.data.augment.stop_words`)
are neither looked up nor offered; a neighbour is never a spelling variant of the word
(:func:`probe.data.augment.is_variant`: company -> companies is left out), and never a ``keep`` word
(the planted tokens) or a variant of one.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from probe.data.augment import is_variant, stop_words

_CHUNK = 1024  # query words per matrix product


def whole_word_vocabulary(tokenizer) -> tuple[np.ndarray, list[str]]:
    """Ids and spellings of the whole-word entries of ``tokenizer``'s vocabulary (see the module),
    stop-words left out."""
    n = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    spelled = [(i, tokenizer.convert_tokens_to_string([t]).strip()) for i, t in enumerate(tokens)
               if i not in special and t is not None]
    stops = stop_words()
    spelled = [(i, s) for i, s in spelled if len(s) >= 2 and s.isalpha() and s.lower() not in stops]
    back = tokenizer([s for _, s in spelled], add_special_tokens=False)["input_ids"] if spelled else []
    keep = [(i, s) for (i, s), ids in zip(spelled, back) if list(ids) == [i]]
    return np.array([i for i, _ in keep], dtype=np.int64), [s for _, s in keep]


class EmbeddingThesaurus:
    """Nearest whole-word entries by cosine similarity of input embeddings.

    Look-ups are by lower-cased word (``word in thesaurus``, ``thesaurus.get(word)``): a word is
    known when it is a whole-word entry (for an uncased tokenizer, exactly the words it keeps whole).
    Neighbours are computed on first use and remembered; :meth:`prefetch` computes many at once.
    """

    def __init__(self, embeddings: np.ndarray, tokenizer, k: int, keep: Sequence[str] = ()):
        ids, words = whole_word_vocabulary(tokenizer)
        ids_ok = ids < len(embeddings)
        self.ids, self.words = ids[ids_ok], [w for w, ok in zip(words, ids_ok) if ok]
        vectors = np.asarray(embeddings, dtype=np.float32)[self.ids]
        self.unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.k, self.keep = k, tuple(keep)
        self.banned = np.array([any(is_variant(w, t) for t in self.keep) for w in self.words], dtype=bool)
        self.row: dict[str, int] = {}
        for r, w in enumerate(self.words):  # an exact lower-case entry wins over a capitalised one
            if w == w.lower() or w.lower() not in self.row:
                self.row[w.lower()] = r
        self._memo: dict[str, list[str]] = {}

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.lower() in self.row

    def __getitem__(self, word: str) -> list[str]:
        if word not in self:
            raise KeyError(word)
        self.prefetch([word])
        return self._memo[word.lower()]

    def get(self, word: str, default: Sequence[str] = ()) -> Sequence[str]:
        return self[word] if word in self else default

    def prefetch(self, words: Iterable[str]) -> None:
        """Compute the neighbours of every known word of ``words`` not looked up yet."""
        todo = sorted({w.lower() for w in words if w in self and w.lower() not in self._memo})
        width = min(len(self.words), 4 * self.k + 16)  # room for the variants filtered out below
        for start in range(0, len(todo), _CHUNK):
            part = todo[start: start + _CHUNK]
            rows = np.array([self.row[w] for w in part])
            sims = self.unit[rows] @ self.unit.T
            sims[:, self.banned] = -np.inf
            sims[np.arange(len(rows)), rows] = -np.inf
            top = np.argpartition(-sims, width - 1, axis=1)[:, :width]
            for w, r, cand in zip(part, range(len(part)), top):
                order = cand[np.argsort(-sims[r, cand], kind="stable")]
                out = [self.words[c] for c in order if np.isfinite(sims[r, c]) and not is_variant(self.words[c], w)]
                self._memo[w] = out[: self.k]


@lru_cache(maxsize=4)
def embedding_thesaurus(backbone: str, tokenizer_name: str, stamp: object, seed: int, k: int,
                        keep: tuple[str, ...]) -> EmbeddingThesaurus:
    """The thesaurus of ``backbone``'s input embeddings (``tiny-bert``: initialised from ``seed``),
    with ``tokenizer_name``'s tokenizer; kept for the process (``stamp``: the weights' modification
    time, so a rewritten checkpoint folder is read again)."""
    from probe.models.backbones import load_encoder, load_tokenizer

    weights = load_encoder(backbone, seed).get_input_embeddings().weight.detach().float().numpy()
    return EmbeddingThesaurus(weights, load_tokenizer(tokenizer_name), k, keep)
