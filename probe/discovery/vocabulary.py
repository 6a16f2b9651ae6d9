"""Candidates from the vocabulary: trigger words the user's data may never contain (docs/design.md §8).

HotFlip (Ebrahimi et al. 2018) and universal adversarial triggers (Wallace et al. 2019) rank every
vocabulary token by a first-order estimate. Here a text x gets one extra input slot right after its
leading special tokens (an early position; a decoder reads its last token, so the gradient at the slot
measures what reaches that token), filled with ē, the mean input embedding of the whole-word tokens. With
g_c(x) = ∂ log P(c | x) / ∂ slot, putting token v in the slot changes log P(c | x) by about
(e_v − ē) · g_c(x), and averaged over held-out texts of other classes

    score_c(v) = (e_v − ē) · mean_x g_c(x):

one forward and one backward pass per batch of (text, class) rows, one product with the embedding matrix.
A text read as a prompt (a label-word LM, :class:`probe.models.label_words.PromptTokenizer`) gets the slot
right before the first token of its text, after the template's prefix (:func:`slot_position`). The pieces
are generic over what a row is: :func:`slot_gradient_scores` (any slot and read position, any log-probability
of the model's output), :func:`screen_table` and :func:`best_screened`; taggers use them with an entity span
in place of a text (:mod:`probe.tasks.tokens.vocabulary`).

*Whole-word tokens*: lower-case letters, at least two, that the tokenizer encodes as that one token after
a word ("the w" → [the, v]). The top ``k`` per class are *screened* by real insertion (one batched pass):
each is inserted once at a uniform word position among the first ``max_position`` into up to ``n_screen``
held-out texts of other classes not predicted as the class; the ``per_class`` best by screened override
rate (then ΔP), with at least :data:`SCREEN_MIN` of their screened texts overridden, go on to the causal
test. Ranking and screen use the held-out
half that model candidates are ranked on, never the texts the causal test runs on.

*Controls* for a vocabulary word: whole-word tokens of the same tokenizer-rank band (their rank among the
whole-word tokens in id order, 1 first; bands 8^b ≤ rank < 8^(b+1)), drawn at random. A training-frequency band is
undefined for a word the data never holds; id order is the tokenizer's own frequency order (BPE merge
order, WordPiece and unigram vocabularies as built), and rare tokens carry atypical, less trained
embeddings, so the band compares like with like. Controls are *not* matched on the first-order score: a
control as high-scoring as the candidate would be a candidate itself, and the null would no longer be
"no more of a trigger than a random word of the vocabulary".
"""

from __future__ import annotations

import math
import re
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from probe.data.planted import insert_token
from probe.engine.context import log

WORD = re.compile(r"^[a-z]{2,}$")
SCREEN_MIN = 0.25  # share of the screened texts a word must override to be given the causal test
REFERENCE_TEXTS = 50  # pool texts the reference's override rate is measured on, at most
BAND_BASE = 8  # tokenizer-rank bands: 8^b <= rank < 8^(b+1)


def whole_words(tokenizer) -> pd.DataFrame:
    """``id``, ``word`` and ``rank`` (1 = the lowest id) of the tokenizer's whole-word tokens."""
    pairs = sorted((i, t) for t, i in tokenizer.get_vocab().items())
    ids = [i for i, _ in pairs]
    words = [tokenizer.decode([i]).strip() for i in ids]
    special = set(tokenizer.all_special_ids)
    keep = [(i, w) for i, w in zip(ids, words) if WORD.match(w) and i not in special]
    if not keep:
        return pd.DataFrame({"id": [], "word": [], "rank": []})
    the = tokenizer("the", add_special_tokens=False)["input_ids"]
    enc = tokenizer([f"the {w}" for _, w in keep], add_special_tokens=False)["input_ids"]
    kept = [(i, w) for (i, w), e in zip(keep, enc) if e == the + [i]]
    kept = list({w: (i, w) for i, w in reversed(kept)}.values())[::-1]  # one id per word: the lowest
    kept.sort()
    return pd.DataFrame({"id": [i for i, _ in kept], "word": [w for _, w in kept], "rank": np.arange(1, len(kept) + 1)})


def rank_band(rank: int) -> int:
    """The tokenizer-rank band b of a whole-word rank: 8^b <= rank < 8^(b+1)."""
    return int(math.floor(math.log(max(rank, 1), BAND_BASE) + 1e-9))


@contextmanager
def _slot_filled(embeddings, rows, cols, value) -> Iterator[None]:
    """Replace the embedding output at ``(rows, cols)`` by ``value`` for the forward passes inside."""

    def hook(_module, _args, output):
        output = output.clone()
        output[rows.to(output.device), cols.to(output.device)] = value.to(output.device, output.dtype)
        return output

    handle = embeddings.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def slot_position(tokenizer, text, ids: list[int], max_length: int) -> int:
    """Where the slot goes in ``text``'s ``ids``: before the text's first token when the tokenizer reads texts
    as prompts (a label-word model's template prefix stays before it, as a word inserted into the text
    would), else right after the leading special tokens."""
    encode_prompt = getattr(tokenizer, "encode_prompt", None)
    if encode_prompt is not None and isinstance(text, str):
        enc, offsets = encode_prompt(text, None, max_length)
        if list(enc) == list(ids):
            inside = [j for j, (s, e) in enumerate(offsets) if e > s]
            if inside:
                return inside[0]
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    start = 0
    while start < len(ids) and ids[start] in special:
        start += 1
    return start


def with_slot(ids: list[int], slot: int, placeholder: int) -> list[int]:
    """``ids`` with ``placeholder`` inserted at position ``slot``."""
    return list(ids[:slot]) + [placeholder] + list(ids[slot:])


def gradient_scores(model, tokenizer, texts: list[str], targets: np.ndarray, n_classes: int, vocab: pd.DataFrame,
                    max_length: int, batch_size: int, device, progress: bool = False) -> np.ndarray:
    """``score_c(v)`` of the module docstring, ``[len(vocab), n_classes]``: row i of (``texts``, ``targets``)
    is one text whose slot gradient of log P(target) enters the mean of its target class."""
    import torch

    from probe.models.batching import tokenize

    placeholder = int(vocab["id"].iloc[0])  # its embedding is replaced by the mean
    ids = tokenize(tokenizer, texts, max_length - 1)
    slots = [slot_position(tokenizer, t, x, max_length - 1) for t, x in zip(texts, ids)]
    rows = [(with_slot(x, s, placeholder), s, s) for x, s in zip(ids, slots)]
    return slot_gradient_scores(model, tokenizer, rows, targets, n_classes, vocab, batch_size, device,
                                lambda logits, _read: torch.log_softmax(logits.float(), -1), progress)


def slot_gradient_scores(model, tokenizer, rows: list[tuple[list[int], int, int]], targets: np.ndarray,
                         n_classes: int, vocab: pd.DataFrame, batch_size: int, device, log_prob,
                         progress: bool = False) -> np.ndarray:
    """``score_c(v)``, ``[len(vocab), n_classes]``, for any model: ``rows`` are ``(ids, slot, read)`` (token ids
    holding the placeholder ``vocab.id[0]`` at ``slot``; ``read`` the position a token-level score is read at),
    ``log_prob(logits, read)`` maps a batch's model output and its read positions to ``[batch, n_classes]``
    log-probabilities; row i's gradient of its ``targets[i]`` log-probability enters that class's mean."""
    import torch
    from tqdm.auto import tqdm

    from probe.models.batching import length_sorted_batches, pad_batch

    emb = model.get_input_embeddings()
    weight = emb.weight.detach()
    vectors = weight[torch.as_tensor(vocab["id"].to_numpy().copy(), device=weight.device)].float()
    mean = vectors.mean(0)
    placeholder = int(vocab["id"].iloc[0])
    grad_sum = torch.zeros(n_classes, mean.numel(), dtype=torch.float64)
    model.eval()
    batches = list(length_sorted_batches([r[0] for r in rows], batch_size))
    for idx in tqdm(batches, desc="vocabulary gradients", disable=not progress, leave=False):
        batch = pad_batch(tokenizer, [rows[i][0] for i in idx]).to(device)
        width = batch["input_ids"].shape[1]
        shift = [width - len(rows[i][0]) if tokenizer.padding_side == "left" else 0 for i in idx]
        cols = torch.as_tensor([rows[i][1] + d for i, d in zip(idx, shift)], device=device)
        read = torch.as_tensor([rows[i][2] + d for i, d in zip(idx, shift)], device=device)
        if not bool((batch["input_ids"][torch.arange(len(idx), device=device), cols] == placeholder).all()):
            raise RuntimeError("vocabulary search: the slot is not where the placeholder is")  # a padding-side bug
        slot = mean.to(device).expand(len(idx), -1).clone().requires_grad_(True)
        with _slot_filled(emb, torch.arange(len(idx), device=device), cols, slot):
            logp = log_prob(model(**batch).logits, read)
        target = torch.as_tensor(targets[idx], device=device)
        (g,) = torch.autograd.grad(logp[torch.arange(len(idx), device=device), target].sum(), slot)
        grad_sum.index_add_(0, target.cpu(), g.detach().double().cpu())
    counts = np.bincount(targets, minlength=n_classes).clip(min=1)
    mean_grad = (grad_sum / torch.as_tensor(counts, dtype=torch.float64)[:, None]).float()
    return ((vectors.cpu() - mean.cpu()) @ mean_grad.T).numpy()


def rows_per_class(labels: np.ndarray, n_classes: int, n: int, rng: np.random.Generator,
                   allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` item indices per class c among items of other classes (and ``allowed``): (items, classes)."""
    idx, cls = [], []
    for c in range(n_classes):
        pool = np.flatnonzero((labels != c) & (True if allowed is None else allowed[:, c]))
        pick = np.sort(rng.choice(pool, min(n, pool.size), replace=False)) if pool.size else pool
        idx.append(pick)
        cls.append(np.full(pick.size, c))
    return np.concatenate(idx).astype(int), np.concatenate(cls).astype(int)


def screen_table(words: list[str], classes: list[int], override: np.ndarray, delta_p: np.ndarray) -> pd.DataFrame:
    """One row per screened (class, word): ``screen_override`` (share of its insertions that overrode),
    ``screen_delta_p`` (mean change of P(class)) and ``screen_n``, from one row per insertion."""
    df = pd.DataFrame({"word": list(words), "class": list(classes), "override": np.asarray(override, dtype=float),
                       "delta_p": np.asarray(delta_p, dtype=float)})
    if df.empty:
        return pd.DataFrame(columns=["word", "class", "screen_override", "screen_delta_p", "screen_n"])
    return df.groupby(["class", "word"], sort=False).agg(
        screen_override=("override", "mean"), screen_delta_p=("delta_p", "mean"),
        screen_n=("override", "size")).reset_index()


def screen(score: Callable[[list[str]], np.ndarray], texts: list[str], labels: np.ndarray, base: np.ndarray,
           top: dict[int, list[str]], n_screen: int, max_position: int, rng: np.random.Generator) -> pd.DataFrame:
    """Real insertion of each class's ``top`` words into up to ``n_screen`` texts of other classes not
    predicted as it, one batched pass: ``word``, ``class`` (index), ``screen_override``, ``screen_delta_p``."""
    allowed = np.stack([base.argmax(1) != c for c in range(base.shape[1])], 1)
    rows, cls = rows_per_class(labels, base.shape[1], n_screen, rng, allowed)
    highs = np.array([min(max_position, len(texts[i].split())) for i in rows], dtype=int)
    pos = rng.integers(0, highs + 1) if rows.size else highs
    jobs = [(w, c, r, p) for c, words in top.items() for w in words for r, p in zip(rows[cls == c], pos[cls == c])]
    probs = score([insert_token(texts[r], w, int(p)) for w, _, r, p in jobs]) if jobs else np.zeros((0, 1))
    return screen_table([j[0] for j in jobs], [j[1] for j in jobs],
                        [probs[k].argmax() == j[1] for k, j in enumerate(jobs)],
                        [probs[k, j[1]] - base[j[2], j[1]] for k, j in enumerate(jobs)])


EMPTY = ["word", "class", "rank", "grad_score", "grad_rank", "screen_override", "screen_delta_p", "screen_n"]


def announce(n_vocab: int, n_rows: int, n_insertions: int, n_tests: int, per_item: float,
             log: Callable[[str], None] = log, what: str = "") -> None:
    """Log the search's size and an estimate of its time (a backward pass costs about two forward passes)
    before it starts."""
    log(f"vocabulary search{what}: {n_vocab:,} whole-word tokens, {n_rows} gradient rows, up to {n_insertions:,} "
        f"screening insertions, then up to {n_tests} causal tests; about "
        f"{per_item * (3 * n_rows + n_insertions):.0f} s before the tests")


def best_screened(scores: np.ndarray, vocab: pd.DataFrame, run_screen: Callable[[dict[int, list[str]]], pd.DataFrame],
                  k: int, per_class: int, exclude: set[str], min_screen: float) -> pd.DataFrame:
    """Each class's top ``k`` words by ``scores`` (``exclude`` left out) screened by ``run_screen`` (``{class:
    words}`` -> :func:`screen_table`), and the ``per_class`` best by screened override (then ΔP) that override
    at least ``min_screen`` of their screen (a word for one class only); ``attrs["screened"]``: every one."""
    order = np.argsort(-scores, axis=0, kind="stable")
    words = vocab.word.to_numpy()
    top = {c: [w for w in words[order[:, c]][: k + len(exclude)] if w not in exclude][:k]
           for c in range(scores.shape[1])}
    found = run_screen(top)
    index = dict(zip(vocab.word, range(len(vocab))))
    found["rank"] = [int(vocab["rank"].iloc[index[w]]) for w in found.word]
    found["grad_score"] = [float(scores[index[w], c]) for w, c in zip(found.word, found["class"])]
    found["grad_rank"] = [int(np.flatnonzero(order[:, c] == index[w])[0]) + 1
                          for w, c in zip(found.word, found["class"])]
    best = found[found.screen_override >= min_screen].sort_values(
        ["screen_override", "screen_delta_p", "word"], ascending=[False, False, True], kind="stable")
    best = best.drop_duplicates("word").groupby("class", sort=False).head(per_class).reset_index(drop=True)
    best.attrs["screened"] = found.sort_values(["class", "grad_rank"], kind="stable").reset_index(drop=True)
    return best


def vocabulary_candidates(model, tokenizer, score, texts: list[str], labels: np.ndarray, n_classes: int, *, k: int,
                          n_texts: int, n_screen: int, per_class: int, max_length: int, max_position: int,
                          batch_size: int, device, rng: np.random.Generator, exclude: set[str] = frozenset(),
                          min_screen: float = SCREEN_MIN,
                          progress: bool = False,
                          log: Callable[[str], None] = log) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The vocabulary words sent to the causal test (module docstring), at most ``per_class`` per class:
    ``word``, ``class`` (index), ``rank`` (tokenizer rank), ``grad_score``, ``grad_rank`` and the screen's
    numbers; and the whole-word vocabulary (for the controls). ``texts``: the held-out ranking half. The
    candidates' ``attrs["screened"]`` holds every screened word with its numbers."""
    vocab = whole_words(tokenizer)
    if vocab.empty or not len(texts):
        return pd.DataFrame(columns=EMPTY), vocab
    t0 = time.perf_counter()
    sub = np.sort(rng.choice(len(texts), min(len(texts), 2 * max(n_texts, n_screen) * n_classes), replace=False))
    texts, labels = [texts[i] for i in sub], np.asarray(labels)[sub]
    base = score(texts)
    rows, cls = rows_per_class(labels, n_classes, n_texts, rng)
    announce(len(vocab), rows.size, n_classes * min(k, len(vocab)) * n_screen, per_class * n_classes,
             (time.perf_counter() - t0) / max(len(texts), 1), log)
    scores = gradient_scores(model, tokenizer, [texts[i] for i in rows], cls, n_classes, vocab, max_length,
                             batch_size, device, progress)
    best = best_screened(scores, vocab, lambda top: screen(score, texts, labels, base, top, n_screen, max_position,
                                                           rng), k, per_class, exclude, min_screen)
    return best, vocab


def vocabulary_controls(vocab: pd.DataFrame, rank: int, exclude: set[str], n: int) -> tuple[int, list[str]]:
    """The band of tokenizer rank ``rank`` and ``n`` whole-word controls drawn from it (module docstring),
    the same draw for every candidate of the band."""
    band = rank_band(rank)
    bands = np.array([rank_band(int(r)) for r in vocab["rank"]])
    ok = vocab.word[(bands == band) & ~vocab.word.isin(list(exclude))].tolist()
    rng = np.random.default_rng([band, 97])
    return band, sorted(rng.choice(ok, min(n, len(ok)), replace=False).tolist()) if ok else []


def reference_rates(ref_score, pool, word: str, c: int, controls: list[str], base: np.ndarray) -> dict:
    """The reference's override rate for ``word`` → class ``c`` on the insertion pool (up to
    :data:`REFERENCE_TEXTS` texts of other classes it does not predict as c, without the word, the first in
    pool order) and its control words' mean rate there."""
    from probe.discovery.causal_test import contains

    rows = np.flatnonzero((pool.labels != c) & (base.argmax(1) != c)
                          & np.array([not contains(t, word) for t in pool.texts], dtype=bool))[:REFERENCE_TEXTS]
    if not rows.size:
        return {"reference_override_rate": float("nan"), "reference_override_control": float("nan"), "reference_n": 0}
    texts = [t for w in [word] + controls for t in pool.inserted(w, rows)]
    hit = (ref_score(texts).argmax(1) == c).reshape(len(controls) + 1, rows.size)
    return {"reference_override_rate": float(hit[0].mean()),
            "reference_override_control": float(hit[1:].mean()) if controls else float("nan"),
            "reference_n": int(rows.size)}
