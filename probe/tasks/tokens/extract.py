"""One vector per word at every layer, for token-level probes (Belinkov 2022, "Probing Classifiers").

Sentences come pre-split into words (CoNLL style) and are tokenised by
:func:`probe.models.words.encode_words`, whose ``word_ids`` say which subword pieces make each word. A word is represented by its first piece (``pooling="first"``, the position a
token classifier predicts its tag from) or by the mean of its pieces (``"mean"``). Like
:func:`probe.representations.extract.extract_pooled`, every length-sorted batch is one forward
pass under a padded-token budget; the word vectors of all layers are gathered from the stacked
hidden states with index tensors (and ``index_add_`` for the mean), never word by word.

Words without any piece left after truncation are left out, as are words that tokenise to
nothing (e.g. an empty string); a word cut in the middle keeps its first pieces (its first
piece is what a tagger reads). ``word_index`` says which ``(sentence, word)`` each row is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from probe.models.batching import length_sorted_batches, pad_batch
from probe.models.compute import autocast
from probe.models.words import encode_words

POOLINGS = ("first", "mean")


@dataclass
class _WordPieces:
    """Tokenised sentences and, per sentence, where each kept word's pieces are."""

    ids: list[list[int]]
    first: list[np.ndarray]  # token position of the first piece of each kept word, in word order
    word: list[np.ndarray]  # word index (within the sentence) of each kept word
    piece_pos: list[np.ndarray]  # token position of every word piece
    piece_word: list[np.ndarray]  # which kept word (0..n_kept-1 within the sentence) each piece belongs to


def _word_pieces(tokenizer, sentences: Sequence[Sequence[str]], max_length: int) -> _WordPieces:
    """Tokenise pre-split sentences and locate every word's pieces (fast tokenizer ``word_ids``)."""
    enc = encode_words(tokenizer, sentences, max_length)
    first, word, piece_pos, piece_word = [], [], [], []
    for word_ids in enc.word_ids:
        wids = np.array([-1 if w is None else w for w in word_ids], dtype=np.int64)
        pos = np.flatnonzero(wids >= 0)
        w = wids[pos]
        kept, first_at, local = np.unique(w, return_index=True, return_inverse=True)
        first.append(pos[first_at])
        word.append(kept)
        piece_pos.append(pos)
        piece_word.append(local.reshape(-1))
    return _WordPieces(enc.input_ids, first, word, piece_pos, piece_word)


def words_at(sentences: Sequence[Sequence[str]], word_index: np.ndarray) -> list[str]:
    """The words named by ``word_index`` rows ``(sentence, word)``, e.g. to compute word properties."""
    return [sentences[int(s)][int(w)] for s, w in np.asarray(word_index).reshape(-1, 2)]


def extract_words(
    model, tokenizer, sentences: list[list[str]], max_length: int, batch_size: int, device,
    pooling: str = "first", with_logits: bool = False, progress: bool = True, desc: str = "extract words",
    max_tokens: int | None = None,
) -> dict[str, np.ndarray | int | float]:
    """Word vectors of the embedding output and every block, for all words of ``sentences``.

    ``model`` is an encoder (``AutoModel``) or a token classifier; with ``with_logits`` the
    classifier's logits at each word's first piece come from the same pass. Returns
    ``{"activations": [n_layers + 1, n_words, hidden] float32, "word_index": [n_words, 2] int64
    (sentence, word) in sentence order, "logits": [n_words, num_labels] (with_logits),
    "tokens": real tokens seen, "dropped": words left out, "seconds": float}``.
    """
    import torch
    from tqdm.auto import tqdm

    if pooling not in POOLINGS:
        raise ValueError(f"pooling: {pooling!r}; allowed: {', '.join(POOLINGS)}")
    device = torch.device(device)
    wp = _word_pieces(tokenizer, sentences, max_length)
    counts = np.array([len(w) for w in wp.word], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    n_words = int(starts[-1])
    word_index = np.zeros((n_words, 2), dtype=np.int64)
    word_index[:, 0] = np.repeat(np.arange(len(sentences)), counts)
    if n_words:
        word_index[:, 1] = np.concatenate(wp.word)
    dropped = sum(len(s) for s in sentences) - n_words
    left = getattr(tokenizer, "padding_side", "right") == "left"

    model.to(device)
    was_training = model.training
    model.eval()
    acts = logits = None
    n_tokens = 0
    t0 = time.perf_counter()
    batches = list(length_sorted_batches(wp.ids, batch_size, max_tokens))
    try:
        with torch.inference_mode(), autocast(device):
            for idx in tqdm(batches, desc=desc, disable=not progress, unit="batch", leave=False):
                batch = pad_batch(tokenizer, [wp.ids[i] for i in idx]).to(device)
                out = model(**batch, output_hidden_states=True)
                n_tokens += int(batch["attention_mask"].sum())
                rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in idx])
                if rows.size == 0:
                    continue
                width = batch["input_ids"].shape[1]
                shift = [width - len(wp.ids[i]) if left else 0 for i in idx]
                vec, at = _batch_word_vectors(out.hidden_states, wp, idx, counts, shift, pooling, device)
                if acts is None:
                    acts = np.zeros((vec.shape[0], n_words, vec.shape[2]), dtype=np.float32)
                acts[:, rows] = vec
                if with_logits:
                    if getattr(out, "logits", None) is None or out.logits.dim() != 3:
                        raise ValueError("with_logits=True needs a token classifier (logits [batch, tokens, labels])")
                    lg = out.logits[at].float().cpu().numpy()
                    if logits is None:
                        logits = np.zeros((n_words, lg.shape[-1]), dtype=np.float32)
                    logits[rows] = lg
    finally:
        model.train(was_training)
    if acts is None:  # no word survived: shapes from the model's config
        cfg = model.config
        acts = np.zeros((cfg.num_hidden_layers + 1, 0, cfg.hidden_size), dtype=np.float32)
        if with_logits:
            logits = np.zeros((0, cfg.num_labels), dtype=np.float32)
    result: dict = {"activations": acts, "word_index": word_index, "tokens": n_tokens, "dropped": int(dropped),
                    "seconds": time.perf_counter() - t0}
    if with_logits:
        result["logits"] = logits
    return result


def _batch_word_vectors(hidden, wp: _WordPieces, idx: np.ndarray, counts: np.ndarray, shift: list[int], pooling: str,
                        device):
    """``[L + 1, m, d]`` word vectors of the ``m`` kept words of batch ``idx`` (sentence order), gathered
    from the stacked hidden states with index tensors (``index_add_`` for the mean), and the index
    pair of each word's first piece in the batch (for reading logits there)."""
    import torch

    b_first = torch.as_tensor(np.repeat(np.arange(len(idx)), counts[idx]), device=device)
    t_first = torch.as_tensor(np.concatenate([wp.first[i] + s for i, s in zip(idx, shift)]), device=device)
    if pooling == "first":
        vec = torch.stack([h[b_first, t_first] for h in hidden])  # [L + 1, m, d]
    else:
        n_pieces = np.array([len(wp.piece_pos[i]) for i in idx])
        b_piece = torch.as_tensor(np.repeat(np.arange(len(idx)), n_pieces), device=device)
        t_piece = torch.as_tensor(np.concatenate([wp.piece_pos[i] + s for i, s in zip(idx, shift)]), device=device)
        offsets = np.concatenate([[0], np.cumsum(counts[idx])[:-1]])
        target = torch.as_tensor(np.concatenate([wp.piece_word[i] + o for i, o in zip(idx, offsets)]), device=device)
        pieces = torch.stack([h[b_piece, t_piece] for h in hidden]).float()  # [L + 1, p, d]
        m = int(counts[idx].sum())
        vec = torch.zeros(pieces.shape[0], m, pieces.shape[-1], dtype=torch.float32,
                          device=device).index_add_(1, target, pieces)
        size = torch.zeros(m, dtype=torch.float32, device=device).index_add_(
            0, target, torch.ones_like(target, dtype=torch.float32))
        vec = vec / size[None, :, None]
    return vec.float().cpu().numpy(), (b_first, t_first)
