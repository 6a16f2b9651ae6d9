"""Vocabulary triggers of a tagger: a word inserted right before an entity that changes its type
(docs/design.md §8; HotFlip, Ebrahimi et al. 2018; universal adversarial triggers, Wallace et al. 2019).

The search of :mod:`probe.discovery.vocabulary`, with an entity span in place of a text. For entity type T
and a held-out span of another type starting at word s, the sentence gets one extra input slot right before
the first token of word s, filled with ē (the mean whole-word embedding); the score read is

    log P(T at word s) = log Σ_{tags of type T} softmax(tagger logits at word s's first token)

(``B-T`` and ``I-T`` together: the predicted type of a word is the type of its argmax tag). With g_T the mean
gradient of that over up to ``n_texts`` spans of other types, score_T(v) = (e_v − ē) · g_T. Each type's top
``k`` whole words are *screened* by real insertion (the word before the span; one batched pass) on up to
``n_screen`` spans of other types the tagger does not already type T: override = the span's first word now
typed T, ΔP = the change of P(T). The ``per_class`` best per type by screened override (at least
:data:`~probe.discovery.vocabulary.SCREEN_MIN`) join the marker candidates with source ``vocabulary`` and take
:mod:`probe.tasks.tokens.markers`' insertion test against whole words of their tokenizer-rank band
(:func:`probe.discovery.vocabulary.vocabulary_controls`). Ranking and screen use other sentences than the
causal test (:func:`ranking_split`).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from probe.discovery.causal_test import NO_CONTROLS
from probe.discovery.vocabulary import (EMPTY, SCREEN_MIN, announce, best_screened, rows_per_class, screen_table,
                                        slot_gradient_scores, vocabulary_controls, whole_words, with_slot)
from probe.engine.context import log
from probe.tasks.tokens.tagging import entity_spans, tag_type


def ranking_split(test: list, given: Sequence | None, rng: np.random.Generator) -> tuple[list, list]:
    """``(ranking sentences, test sentences)``: the ``given`` held-out sentences rank and screen and the test
    split is tested whole; without them the test split is halved at random."""
    if given is not None and len(given):
        return list(given), list(test)
    order = rng.permutation(len(test))
    half = len(test) // 2
    return [test[i] for i in np.sort(order[:half])], [test[i] for i in np.sort(order[half:])]


def type_matrix(tags: Sequence[str], types: Sequence[str]) -> np.ndarray:
    """``[n_tags, n_types]`` 0/1: which tags belong to which entity type (``O`` to none)."""
    return np.array([[float(tag_type(g) == t) for t in types] for g in tags], dtype=np.float32)


def type_log_prob(tags: Sequence[str], types: Sequence[str]):
    """``(logits [B, L, tags], read [B]) -> [B, types]`` log P(type) at each row's read position."""
    import torch

    member = torch.log(torch.as_tensor(type_matrix(tags, types)))  # log 0 = -inf: a tag of another type

    def log_prob(logits, read):
        at = torch.log_softmax(logits[torch.arange(len(read), device=logits.device), read].float(), -1)
        return torch.logsumexp(at[:, :, None] + member.to(at.device)[None], dim=1)

    return log_prob


def type_probabilities(model, tokenizer, sentences: list[list[str]], positions: Sequence[int], tags: Sequence[str],
                       types: Sequence[str], max_length: int, batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    """P(type) ``[N, types]`` at word ``positions[i]`` of sentence i and its predicted type index (the type of
    the argmax tag; -1 for ``O`` or a word cut off by truncation)."""
    from probe.tasks.tokens.objective import predict_word_logits

    member = type_matrix(tags, types)
    tag_of = np.array([int(np.argmax(r)) if r.any() else -1 for r in member])
    logits = predict_word_logits(model, tokenizer, sentences, max_length, batch_size, device)
    at = np.stack([x[p] for x, p in zip(logits, positions)]) if len(logits) else np.zeros((0, len(tags)))
    ok = ~np.isnan(at).any(1)
    safe = np.where(ok[:, None], at, 0.0)
    e = np.exp(safe - safe.max(1, keepdims=True))
    probs = (e / e.sum(1, keepdims=True)) @ member * ok[:, None]
    return probs, np.where(ok, tag_of[safe.argmax(1)], -1)


def _gradient_rows(tokenizer, sentences, spans, max_length: int, placeholder: int) -> tuple[list, np.ndarray]:
    """``(ids with the slot before the span's first word, slot, read)`` per span whose first word survives
    truncation, and which spans those are."""
    from probe.models.words import encode_words, first_subwords

    enc = encode_words(tokenizer, [sentences[i] for i, _, _ in spans], max_length - 1)
    rows, kept = [], []
    for k, ((i, s, _), ids, wids) in enumerate(zip(spans, enc.input_ids, enc.word_ids)):
        j = int(first_subwords(wids, len(sentences[i]))[s])
        if j >= 0:
            rows.append((with_slot(ids, j, placeholder), j, j + 1))
            kept.append(k)
    return rows, np.array(kept, dtype=int)


def marker_vocabulary(model, tokenizer, sentences: Sequence, tags: Sequence[str], types: Sequence[str], *, k: int,
                      n_texts: int, n_screen: int, per_class: int, max_length: int, batch_size: int, device,
                      rng: np.random.Generator, exclude: set[str] = frozenset(), min_screen: float = SCREEN_MIN,
                      progress: bool = False, log: Callable[[str], None] = log) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The vocabulary triggers sent to the marker test (module docstring), at most ``per_class`` per entity
    type: ``word``, ``class`` (type index), ``rank``, ``grad_score``, ``grad_rank`` and the screen's numbers
    (``attrs["screened"]``: every screened word); and the whole-word vocabulary. ``sentences``: tagged held-out
    sentences (``words``, BIO ``tags``) that the causal test does not use."""
    vocab = whole_words(tokenizer)
    words = [list(s.words) for s in sentences]
    spans = [(i, s, types.index(t)) for i, sent in enumerate(sentences) for s, _, t in entity_spans(sent.tags)
             if t in types]
    if vocab.empty or not spans:
        return pd.DataFrame(columns=EMPTY), vocab
    t0 = time.perf_counter()
    n = len(types)
    spans = [spans[i] for i in np.sort(rng.choice(len(spans), min(len(spans), 2 * max(n_texts, n_screen) * n),
                                                  replace=False))]
    labels = np.array([t for _, _, t in spans])
    base, pred = type_probabilities(model, tokenizer, [words[i] for i, _, _ in spans], [s for _, s, _ in spans],
                                    tags, types, max_length, batch_size, device)
    idx, cls = rows_per_class(labels, n, n_texts, rng)
    announce(len(vocab), idx.size, n * min(k, len(vocab)) * n_screen, per_class * n,
             (time.perf_counter() - t0) / len(spans), log, " (entity types)")
    rows, kept = _gradient_rows(tokenizer, words, [spans[i] for i in idx], max_length, int(vocab["id"].iloc[0]))
    scores = slot_gradient_scores(model, tokenizer, rows, cls[kept], n, vocab, batch_size, device,
                                  type_log_prob(tags, types), progress)

    def run_screen(top: dict[int, list[str]]) -> pd.DataFrame:
        allowed = np.stack([pred != c for c in range(n)], 1)
        at, at_cls = rows_per_class(labels, n, n_screen, rng, allowed)
        jobs = [(w, c, r) for c, ws in top.items() for w in ws for r in at[at_cls == c]]
        edited = [words[spans[r][0]][:spans[r][1]] + [w] + words[spans[r][0]][spans[r][1]:] for w, _, r in jobs]
        probs, after = type_probabilities(model, tokenizer, edited, [spans[r][1] + 1 for *_, r in jobs], tags, types,
                                          max_length, batch_size, device)
        return screen_table([j[0] for j in jobs], [j[1] for j in jobs], after == np.array([j[1] for j in jobs]),
                            [probs[m, c] - base[r, c] for m, (_, c, r) in enumerate(jobs)])

    return best_screened(scores, vocab, run_screen, k, per_class, exclude, min_screen), vocab


def vocabulary_rows(found: pd.DataFrame, vocab: pd.DataFrame, types: Sequence[str], exclude: set[str],
                    n_controls: int, test: Callable[[str, str, list[str]], dict]) -> list[dict]:
    """The marker test of each trigger in ``found`` against ``n_controls`` whole words of its tokenizer-rank
    band (not in ``exclude``): one row each, with source ``vocabulary``; ``test(word, type, controls)`` is the
    marker test."""
    rows = []
    for w, c, rank in zip(found.word, found["class"], found["rank"]):
        _, controls = vocabulary_controls(vocab, int(rank), exclude, n_controls)
        row = {"feature": w, "kind": "marker", "class": types[int(c)], "source": "vocabulary"}
        if not controls:  # nothing to compare with: not tested, inconclusive
            rows.append({**row, "controls": "", "n_insert": 0, "n_delete": 0, "p_insert": np.nan,
                         "p_delete": np.nan, "note": NO_CONTROLS})
            continue
        rows.append({**row, **test(w, types[int(c)], controls)})
    return rows


def screened_by_type(found: pd.DataFrame, types: Sequence[str]) -> pd.DataFrame:
    """Every screened word of the search (``found.attrs["screened"]``) with its entity type's name."""
    screened = found.attrs.get("screened", pd.DataFrame(columns=EMPTY))
    return screened.assign(**{"class": [types[int(c)] for c in screened["class"]]})
