"""Layer Integrated Gradients: probe's batched, memory-bounded attribution vs plain captum per example.

Both explain the predicted class of ``minilm`` (an untrained classification head is fine for
timing) on the same BBC News texts with the same baseline ([PAD] for every real token,
[CLS]/[SEP] kept), the same ``n_steps`` and the same forward function; the plain way is
one ``LayerIntegratedGradients.attribute`` call per example (captum's default: all steps in
one forward pass). The script checks the token attributions agree (max abs difference
≤ 1e-4) and prints examples/s and the speed-up. A second scenario cuts the texts to their
first words (tweet length), where grouping several examples per forward pass matters more.

    python benchmarks/bench_attribution.py --n 40 --max-length 64 --n-steps 50
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from probe.analyses.attribution import attribute_tokens, forward_function, pad_baseline
from probe.data.sources import load_text_classification
from probe.models.backbones import load_tokenizer
from probe.models.backbones import build_classifier


def plain_captum(model, tokenizer, texts, max_length, n_steps):
    """What a notebook usually does: one captum LayerIntegratedGradients call per example."""
    from captum.attr import LayerIntegratedGradients

    f = forward_function(model)
    lig = LayerIntegratedGradients(f, model.get_input_embeddings())
    out = []
    for t in texts:
        enc = tokenizer(t.split(), is_split_into_words=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        with torch.no_grad():
            target = int(f(ids, mask).argmax(-1))
        attr = lig.attribute(ids, baselines=pad_baseline(ids, tokenizer), target=target,
                             additional_forward_args=(mask,), n_steps=n_steps)
        out.append(attr.sum(-1)[0].detach().numpy())
    return out


def _run(model, tok, texts, max_length, n_steps, budgets, label):
    n_tokens = sum(len(x) for x in tok([t.split() for t in texts], is_split_into_words=True, truncation=True,
                                        max_length=max_length)["input_ids"])
    t0 = time.perf_counter()
    plain = plain_captum(model, tok, texts, max_length, n_steps)
    t_plain = time.perf_counter() - t0
    print(f"\n[{label}] {len(texts)} texts, {n_tokens} tokens ({n_tokens / len(texts):.1f} per text), "
          f"max_length {max_length}, n_steps {n_steps}")
    print(f"  plain captum, one call per example:       {t_plain:7.2f} s  {len(texts) / t_plain:6.2f} examples/s")
    worst = 0.0
    for budget in budgets:
        t0 = time.perf_counter()
        _, scores, _, _ = attribute_tokens(model, tok, texts, max_length=max_length, n_steps=n_steps,
                                           token_budget=budget)
        t = time.perf_counter() - t0
        err = max(float(np.abs(a - b).max()) for a, b in zip(scores, plain))
        scale = max(float(np.abs(b).max()) for b in plain)
        worst = max(worst, err)
        print(f"  probe batched, token_budget {budget:6d}:     {t:7.2f} s  {len(texts) / t:6.2f} examples/s  "
              f"speed-up {t_plain / t:4.2f}x  max abs diff {err:.2e} (max |attr| {scale:.2e})")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--n-steps", type=int, default=50)
    ap.add_argument("--budgets", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--short-words", type=int, default=12, help="words per text in the short-text scenario (0: skip)")
    args = ap.parse_args()
    texts, labels, classes = load_text_classification("bbc-news", "text", "label")
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.choice(len(texts), args.n, replace=False)]
    tok = load_tokenizer("minilm")
    model = build_classifier("minilm", classes, 0).eval()
    attribute_tokens(model, tok, texts[:2], max_length=args.max_length, n_steps=4)  # warm-up

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model minilm (untrained head)")
    worst = _run(model, tok, texts, args.max_length, args.n_steps, args.budgets, "bbc-news articles")
    if args.short_words:
        rng = np.random.default_rng(1)
        short = [" ".join(t.split()[: int(rng.integers(args.short_words // 2, args.short_words + 1))]) for t in texts]
        worst = max(worst, _run(model, tok, short, args.max_length, args.n_steps, args.budgets,
                                f"first {args.short_words // 2}-{args.short_words} words (tweet length)"))
    print(f"\nmax abs difference over all runs: {worst:.2e}")
    assert worst <= 1e-4, worst


if __name__ == "__main__":
    main()
