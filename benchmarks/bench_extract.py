"""Activation extraction: probe's length-sorted batched pass vs the plain per-example loop.

Both compute the mean-pooled hidden states of every layer of ``minilm`` for the same
BBC News texts at the same max_length, in one process, one after the other; the script
checks that they agree and prints texts/s, tokens/s and the speed-up.

    python benchmarks/bench_extract.py --n 400 --max-length 64
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from probe.data.sources import load_text_classification
from probe.models.backbones import load_encoder, load_tokenizer
from probe.representations.extract import extract_pooled


def plain_loop(model, tokenizer, texts, max_length):
    """What a notebook usually does: one text at a time, hidden states pooled by hand."""
    out = []
    with torch.inference_mode():
        for t in texts:
            enc = tokenizer(t, truncation=True, max_length=max_length, return_tensors="pt")
            hs = model(**enc, output_hidden_states=True).hidden_states
            out.append(torch.stack([h[0].mean(0) for h in hs]).numpy())
    return np.stack(out, axis=1)


def padded_batches(model, tokenizer, texts, max_length, batch_size):
    """The other common way: fixed batches in data order, every text padded to max_length."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length,
                            padding="max_length", return_tensors="pt")
            hs = model(**enc, output_hidden_states=True).hidden_states
            m = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.stack([(h * m).sum(1) / m.sum(1) for h in hs]).numpy())
    return np.concatenate(out, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    texts, _, _ = load_text_classification("bbc-news", "text", "label")
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.choice(len(texts), args.n, replace=False)]
    tok = load_tokenizer("minilm")
    model = load_encoder("minilm", 0).eval()
    device = torch.device("cpu")
    extract_pooled(model, tok, texts[:16], args.max_length, args.batch_size, device, progress=False)  # warm-up

    t0 = time.perf_counter()
    res = extract_pooled(model, tok, texts, args.max_length, args.batch_size, device, progress=False)
    t_probe = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = plain_loop(model, tok, texts, args.max_length)
    t_plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    padded = padded_batches(model, tok, texts, args.max_length, args.batch_size)
    t_padded = time.perf_counter() - t0

    err = max(float(np.abs(res["activations"] - plain).max()), float(np.abs(res["activations"] - padded).max()))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"texts: {args.n} bbc-news at max_length {args.max_length}, {res['tokens']} tokens, minilm, all 7 layers")
    print(f"probe extract_pooled (batch {args.batch_size}, length-sorted): {t_probe:.2f} s, "
          f"{args.n / t_probe:.1f} texts/s, {res['tokens'] / t_probe:.0f} tokens/s")
    print(f"plain per-example loop:                      {t_plain:.2f} s, "
          f"{args.n / t_plain:.1f} texts/s, {res['tokens'] / t_plain:.0f} tokens/s")
    print(f"padded fixed batches (batch {args.batch_size}):          {t_padded:.2f} s, "
          f"{args.n / t_padded:.1f} texts/s, {res['tokens'] / t_padded:.0f} tokens/s")
    print(f"speed-up: {t_plain / t_probe:.2f}x over the per-example loop, {t_padded / t_probe:.2f}x over padded "
          f"batches; max abs difference of pooled activations: {err:.2e}")


if __name__ == "__main__":
    main()
