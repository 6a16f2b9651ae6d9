"""Activations of every layer, pooled per text, in one forward pass per batch.

Pooling is the model adapter's (:meth:`probe.models.adapter.ModelAdapter.pool`): the mean over real
tokens for bidirectional encoders, the last real token for causal decoders (docs/design.md §8).
"""

from __future__ import annotations

import time

import numpy as np

from probe.models.batching import length_sorted_batches, pad_batch, tokenize
from probe.models.adapter import ModelAdapter
from probe.models.compute import autocast


def extract_pooled(
    model, tokenizer, texts: list[str], max_length: int, batch_size: int, device,
    with_logits: bool = False, progress: bool = True, desc: str = "extract",
) -> dict[str, np.ndarray | float]:
    """Pooled hidden states of the embedding output and every block, for ``texts`` in order.

    ``model`` is an encoder (``AutoModel``) or a classifier; with ``with_logits`` the
    classifier's logits come from the same pass. Batches are length-sorted so padding is
    minimal. Returns ``{"activations": [n_layers + 1, n, hidden] float32, "logits": [n, K],
    "tokens": int, "seconds": float}``.
    """
    import torch
    from tqdm.auto import tqdm

    ids = tokenize(tokenizer, texts, max_length)
    adapter = ModelAdapter(model)
    model.to(device).eval()
    acts = None
    logits = None
    n_tokens = 0
    t0 = time.perf_counter()
    batches = list(length_sorted_batches(ids, batch_size))
    with torch.inference_mode(), autocast(device):
        for idx in tqdm(batches, desc=desc, disable=not progress, unit="batch", leave=False):
            batch = pad_batch(tokenizer, [ids[i] for i in idx]).to(device)
            out = model(**batch, output_hidden_states=True)
            mask = batch["attention_mask"]
            pooled = torch.stack([adapter.pool(h, mask) for h in out.hidden_states]).float().cpu().numpy()
            if acts is None:
                acts = np.zeros((pooled.shape[0], len(texts), pooled.shape[2]), dtype=np.float32)
            acts[:, idx] = pooled
            if with_logits:
                if logits is None:
                    logits = np.zeros((len(texts), out.logits.shape[-1]), dtype=np.float32)
                logits[idx] = out.logits.float().cpu().numpy()
            n_tokens += int(batch["attention_mask"].sum())
    result: dict = {"activations": acts, "tokens": n_tokens, "seconds": time.perf_counter() - t0}
    if with_logits:
        result["logits"] = logits
    return result
