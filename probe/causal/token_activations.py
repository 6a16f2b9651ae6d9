"""Hidden states at every real token position, with which positions hold a given word.

Token-level activations are what a concept eraser is fitted on and applied to: an edit through
:func:`probe.causal.hooks.edit_hidden_state` acts on every position, so the eraser must be
fitted on the same positions (Belrose et al. 2023, LEACE; Ravfogel et al. 2020, INLP). Texts are
tokenised exactly as :func:`probe.models.batching.tokenize` does (same truncation, special
tokens included), so the rows here are the positions a (hooked) forward pass sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass
class TokenActivations:
    """Rows are real token positions (attention mask 1), text by text in the order given.

    ``layers``: ``{layer: [N, hidden]}`` in the compute dtype: a float32 numpy array on the CPU, a CPU
    torch tensor in bf16 / fp16 under an accelerator's autocast (half the memory; numpy has no bf16);
    ``doc_index``: which text a row belongs to;
    ``position``: its index within the text's token sequence; ``token_ids``: its input id;
    ``has_token`` (only when a token was given): the row is a sub-word piece of a whole-word
    occurrence of the token; ``doc_has_token``: ``[n_texts]``, the truncated input holds at
    least one such piece (an occurrence cut off by truncation does not count).
    """

    layers: dict[int, np.ndarray]
    doc_index: np.ndarray
    position: np.ndarray
    token_ids: np.ndarray
    has_token: np.ndarray | None = None
    doc_has_token: np.ndarray | None = None
    token: str | None = None

    @property
    def n_positions(self) -> int:
        return len(self.doc_index)


def word_spans(text: str, token: str, ignore_case: bool = False) -> list[tuple[int, int]]:
    """Character spans of ``token`` occurring as a whole word (not inside a longer word) in ``text``."""
    pattern = re.compile(r"(?<!\w)" + re.escape(token) + r"(?!\w)", re.IGNORECASE if ignore_case else 0)
    return [m.span() for m in pattern.finditer(text)]


def _piece_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> np.ndarray:
    """Which token pieces overlap one of ``spans``; special tokens (empty offsets) never do."""
    mask = np.zeros(len(offsets), dtype=bool)
    for i, (s, e) in enumerate(offsets):
        if e > s:
            mask[i] = any(s < me and e > ms for ms, me in spans)
    return mask


def token_activations(
    model, tokenizer, texts: list[str], layers: list[int], max_length: int, batch_size: int, device,
    token: str | None = None, ignore_case: bool = False, side: str = "first",
) -> TokenActivations:
    """Hidden states of ``layers`` (0 = embeddings output) at every real token of ``texts``.

    One forward pass per length-sorted batch through the model's encoder (a classifier, an
    ``AutoModel`` or a probe head), so hooks registered on it apply. With ``token``, marks the
    pieces of its whole-word occurrences using the fast tokenizer's offset mapping; for pairs of texts
    (tuples), only those in the text ``side`` (``first`` or ``second``) (its offsets into that text).
    """
    import torch

    from probe.causal.hooks import encoder_of, n_layers
    from probe.models.batching import length_sorted_batches, pad_batch, tokenize
    from probe.models.compute import autocast

    texts = list(texts)
    total = n_layers(model)
    layers = [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer < total]
    if bad:
        raise ValueError(f"layers {bad} are out of range: allowed 0..{total - 1} (0 = embeddings output)")
    ids = tokenize(tokenizer, texts, max_length)
    has_token = None if token is None else _token_mask(tokenizer, texts, ids, max_length, token, side, ignore_case)

    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    n = int(starts[-1])
    doc_index = np.repeat(np.arange(len(texts)), lengths)
    position = np.arange(n) - starts[doc_index]
    token_ids = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=n)

    device = torch.device(device)
    encoder = encoder_of(model)
    model.to(device)
    was_training = encoder.training
    out_layers: dict[int, np.ndarray | torch.Tensor] = {}
    try:
        encoder.eval()
        with torch.inference_mode(), autocast(device):
            for idx in length_sorted_batches(ids, batch_size):
                batch = pad_batch(tokenizer, [ids[i] for i in idx]).to(device)
                segments = {k: v for k, v in batch.items() if k == "token_type_ids"}  # pairs: as the classifier reads them
                hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 output_hidden_states=True, **segments).hidden_states
                mask = batch["attention_mask"].bool().cpu().numpy()
                rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in idx])
                for layer in layers:
                    h = hidden[layer].cpu()
                    half = h.dtype in (torch.bfloat16, torch.float16)  # kept as computed
                    h = h if half else h.float().numpy()
                    if layer not in out_layers:
                        out_layers[layer] = (torch.zeros((n, h.shape[-1]), dtype=h.dtype) if half
                                             else np.zeros((n, h.shape[-1]), dtype=np.float32))
                    # Boolean indexing is row-major: each text's real positions, in order (either padding side).
                    out_layers[layer][torch.as_tensor(rows) if half else rows] = h[torch.as_tensor(mask) if half else mask]
    finally:
        encoder.train(was_training)

    doc_has_token = None
    if has_token is not None:
        doc_has_token = np.zeros(len(texts), dtype=bool)
        doc_has_token[doc_index[has_token]] = True
    return TokenActivations(out_layers, doc_index, position, token_ids, has_token, doc_has_token, token)


def _token_mask(tokenizer, texts: list, ids: list[list[int]], max_length: int, token: str, side: str,
                ignore_case: bool) -> np.ndarray:
    """Which pieces of ``texts`` (as tokenised into ``ids``) overlap a whole-word ``token``, from the fast
    tokenizer's offset mapping; for pairs of texts, only in the text ``side``."""
    from probe.models.batching import truncate_words

    if texts and isinstance(texts[0], tuple):
        return _pair_piece_mask(tokenizer, texts, ids, max_length, token, side, ignore_case)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("token_activations(token=...) needs a fast tokenizer (offset mapping)")
    enc = tokenizer(truncate_words(texts, max_length, tokenizer), truncation=True, max_length=max_length,
                    add_special_tokens=True, return_offsets_mapping=True)  # offsets into a prefix of each text
    if enc["input_ids"] != ids:  # a text the word budget did not cover (see batching.tokenize): whole texts
        enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True,
                        return_offsets_mapping=True)
    if enc["input_ids"] != ids:
        raise RuntimeError("tokenisation with offsets differs from probe.models.batching.tokenize")
    return np.concatenate([
        _piece_mask(offsets, word_spans(text, token, ignore_case))
        for text, offsets in zip(texts, enc["offset_mapping"])
    ]) if texts else np.zeros(0, dtype=bool)


def _pair_piece_mask(tokenizer, pairs: list[tuple[str, str]], ids: list[list[int]], max_length: int, token: str,
                     side: str, ignore_case: bool) -> np.ndarray:
    """Which pieces of the pairs overlap a whole-word ``token`` (:func:`word_spans`) in the text ``side``, with
    :func:`probe.models.pair_tokens.pair_offsets` (the same ids as :func:`probe.models.batching.tokenize`)."""
    from probe.models.pair_tokens import pair_offsets

    if side not in ("first", "second"):
        raise ValueError(f"side: {side!r}; allowed: 'first', 'second'")
    k = ("first", "second").index(side)
    enc, offsets = pair_offsets(tokenizer, pairs, max_length)
    if enc != ids:
        raise RuntimeError("pair tokenisation with offsets differs from probe.models.batching.tokenize")
    masks = []
    for pair, spans in zip(pairs, offsets):
        masks.append(_piece_mask([(s, e) if j == k else (0, 0) for j, s, e in spans], word_spans(pair[k], token,
                                                                                                  ignore_case)))
    return np.concatenate(masks)
