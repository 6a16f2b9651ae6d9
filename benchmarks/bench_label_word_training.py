"""Label-word fine-tuning step: the language-model head on every position (the plain way) against the
head on the positions that predict label words only (probe.models.label_word_training: left padding and
``logits_to_keep``). Same batches, same model, alternating, in one process; prints seconds per step and
peak logits size of each, and checks the two losses agree.

    OMP_NUM_THREADS=1 python benchmarks/bench_label_word_training.py [--steps 20] [--length 40]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

IGNORE = -100


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=40, help="prompt + label word tokens per row")
    p.add_argument("--vocab", type=int, default=30522, help="the minilm tokenizer's size (the examples' GPT-2)")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=args.vocab, n_positions=128, n_embd=128, n_layer=2, n_head=4, n_inner=512,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # no dropout: the two losses must agree
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    ids = torch.randint(5, args.vocab, (args.batch, args.length))
    mask = torch.ones_like(ids)
    y = torch.full_like(ids, IGNORE)
    y[:, -2] = ids[:, -1]  # a one-token label word: the position before it predicts it
    plain = dict(input_ids=ids, attention_mask=mask)
    kept = dict(plain, position_ids=(mask.cumsum(1) - 1).clamp_min(0), logits_to_keep=2)
    seconds = {"every position": 0.0, "label-word positions": 0.0}
    losses = {}
    for _ in range(args.steps):
        for name, inputs, target in (("every position", plain, y), ("label-word positions", kept, y[:, -2:])):
            t0 = time.perf_counter()
            logits = model(**inputs).logits
            loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target, ignore_index=IGNORE)
            loss.backward()
            model.zero_grad(set_to_none=True)
            seconds[name] += time.perf_counter() - t0
            losses[name] = (loss.item(), tuple(logits.shape))
    for name, s in seconds.items():
        print(f"{name}: {s / args.steps * 1000:.1f} ms a step, logits {losses[name][1]}, loss {losses[name][0]:.6f}")
    print(f"speed-up {seconds['every position'] / seconds['label-word positions']:.2f}x")


if __name__ == "__main__":
    main()
