"""Training throughput of probe's loops against a plain ``transformers.Trainer`` doing the same work.

Two workloads, both on BBC News and on a BERT of ``--model-size`` built from the same initial weights
for both contenders:

* **MLM pretraining**: ``probe.models.pretrain.pretrain_lm`` against ``Trainer`` with
  ``DataCollatorForLanguageModeling`` (80/10/10 masking), on the same packed blocks of
  ``--max-length`` tokens, the same batch size and number of steps.
* **fine-tuning**: ``probe.models.finetune.finetune`` against ``Trainer`` with
  ``AutoModelForSequenceClassification`` and dynamic padding, one epoch over the same
  ``--steps * --batch-size`` texts truncated to ``--max-length`` (BBC News has 2,225 texts; a longer
  run cycles through them again, so that several hundred steps measure the steady state).

Tokens/s counts real (non-padding) tokens over each loop's own training time (probe's log;
Trainer's ``train_runtime``); on CUDA also the model FLOPs utilisation, 6 · parameters · tokens/s over the
device's dense bf16 peak (:func:`probe.models.compute.peak_flops`; every parameter counted, embeddings
included, so an upper estimate). Both use AdamW, linear warmup/decay, clipping at 1.0, no evaluation,
no saving, no logging, no data-loader workers; fp32 on the CPU, bf16 on CUDA. An untimed warm-up
run of each comes first; with ``--repeats`` > 1 each keeps its fastest run (other jobs on a shared
machine only ever slow a run down). Prints a markdown table; ``--out FILE`` appends it there.

    python benchmarks/bench_pretrain.py [--model-size small] [--steps 30] [--batch-size 16] \\
        [--max-length 128] [--repeats 1] [--only pretrain,finetune] [--out benchmarks/RESULTS_pretrain.md]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from probe.config import ComputeConfig, FinetuneConfig, PretrainConfig, ScratchSize
from probe.data.sources import load_text_classification
from probe.models.backbones import load_tokenizer
from probe.models.compute import peak_flops
from probe.models.lm import build_lm
from probe.models.pretrain import make_blocks, pretrain_lm
from probe.tasks.sequence.objective import finetune_classifier as finetune

SIZES = {  # layers, hidden, heads, intermediate
    "tiny": (2, 64, 2, 128),
    "small": (4, 256, 4, 1024),
    "minilm": (6, 384, 12, 1536),
    "base": (12, 768, 12, 3072),
}
LEARNING_RATE, WARMUP, WEIGHT_DECAY = 5e-4, 0.06, 0.01


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _trainer_args(out_dir: str, steps: int, batch_size: int, device: torch.device, epochs: float | None = None):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=batch_size, max_steps=steps if epochs is None else -1,
        num_train_epochs=epochs or 1, learning_rate=LEARNING_RATE, warmup_steps=int(WARMUP * steps),
        lr_scheduler_type="linear", weight_decay=WEIGHT_DECAY, max_grad_norm=1.0, report_to=[],
        save_strategy="no", logging_strategy="no", eval_strategy="no", dataloader_num_workers=0,
        use_cpu=device.type == "cpu", bf16=device.type == "cuda", disable_tqdm=True, log_level="error", seed=0,
    )


# --- MLM pretraining ---------------------------------------------------------------------------

def _probe_mlm(model, tokenizer, texts, cfg, device) -> float:
    compute = ComputeConfig(precision="bf16" if device.type == "cuda" else "fp32")
    log = pretrain_lm(model, tokenizer, texts, cfg, compute, seed=0, device=device, progress=False,
                       held_out_fraction=0.0)
    return log.tokens_per_second


def _trainer_mlm(model, tokenizer, blocks, cfg, device) -> float:
    from transformers import DataCollatorForLanguageModeling, Trainer

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=_trainer_args(out, cfg.steps, cfg.batch_size, device),
                          train_dataset=[{"input_ids": b} for b in blocks], data_collator=collator)
        runtime = trainer.train().metrics["train_runtime"]
    return cfg.steps * cfg.batch_size * len(blocks[0]) / runtime  # packed: every block is full


# --- fine-tuning -------------------------------------------------------------------------------

def _classifier(size: tuple[int, int, int, int], n_labels: int, tokenizer, seed: int):
    from transformers import AutoModelForSequenceClassification, BertConfig

    layers, hidden, heads, intermediate = size
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, num_labels=n_labels)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return AutoModelForSequenceClassification.from_config(config)


def _probe_finetune(model, tokenizer, texts, labels, batch_size, max_length, device) -> float:
    cfg = FinetuneConfig(epochs=1, batch_size=batch_size, learning_rate=LEARNING_RATE, warmup_ratio=WARMUP,
                         weight_decay=WEIGHT_DECAY)
    log = finetune(model, tokenizer, texts, labels, texts[:4], labels[:4], cfg, max_length, 0, device,
                   progress=False)
    return log.tokens_per_second


def _trainer_finetune(model, tokenizer, texts, labels, batch_size, max_length, device) -> float:
    from transformers import DataCollatorWithPadding, Trainer

    enc = tokenizer(texts, truncation=True, max_length=max_length)
    rows = [{"input_ids": i, "attention_mask": a, "labels": int(y)}
            for i, a, y in zip(enc["input_ids"], enc["attention_mask"], labels)]
    steps = -(-len(rows) // batch_size)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=_trainer_args(out, steps, batch_size, device, epochs=1),
                          train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer))
        runtime = trainer.train().metrics["train_runtime"]
    return sum(len(i) for i in enc["input_ids"]) / runtime


# --- driver ------------------------------------------------------------------------------------

def _best(fn, repeats: int) -> tuple[float, list[float]]:
    runs = [fn() for _ in range(repeats)]
    return max(runs), runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-size", choices=SIZES, default="small")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", default="pretrain,finetune", help="comma-separated: pretrain, finetune")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", default=None, help="append the table (markdown) to this file")
    args = parser.parse_args()
    only = set(args.only.split(","))
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    size = SIZES[args.model_size]
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"{os.cpu_count()} cores ({_cpu_model()}), {torch.get_num_threads()} threads")
    header = (f"{platform.machine()}, {hardware}, torch {torch.__version__}, load average "
              f"{os.getloadavg()[0]:.2f} at start")
    print(header, file=sys.stderr)

    texts, labels, _ = load_text_classification("bbc-news", "text", "label")
    order = np.random.default_rng(0).permutation(len(texts))
    texts, labels = [texts[i] for i in order], labels[order]
    tokenizer = load_tokenizer("minilm")
    precision = "bf16" if device.type == "cuda" else "fp32"
    rows: list[tuple[str, float, float, list[float], list[float]]] = []
    n_params: dict[str, int] = {}

    if "pretrain" in only:
        layers, hidden, heads, intermediate = size
        scratch = ScratchSize(layers=layers, hidden=hidden, heads=heads, intermediate=intermediate)
        cfg = PretrainConfig(init="scratch", size=scratch, steps=args.steps, batch_size=args.batch_size,
                             max_length=args.max_length, learning_rate=LEARNING_RATE, warmup_ratio=WARMUP,
                             weight_decay=WEIGHT_DECAY)
        corpus = texts[: max(64, 4 * args.steps * args.batch_size * args.max_length // 400)]  # ~400 tokens a text
        blocks = make_blocks(tokenizer, corpus, args.max_length, packing=True)
        initial = build_lm("minilm", cfg, tokenizer, seed=0)
        warm = cfg.model_copy(update={"steps": 2})
        _probe_mlm(copy.deepcopy(initial), tokenizer, corpus, warm, device)
        _trainer_mlm(copy.deepcopy(initial), tokenizer, blocks, warm, device)
        probe_best, probe_runs = _best(lambda: _probe_mlm(copy.deepcopy(initial), tokenizer, corpus, cfg, device),
                                       args.repeats)
        hf_best, hf_runs = _best(lambda: _trainer_mlm(copy.deepcopy(initial), tokenizer, blocks, cfg, device),
                                 args.repeats)
        rows.append((f"MLM pretraining ({len(blocks)} packed blocks)", probe_best, hf_best, probe_runs, hf_runs))
        n_params["MLM pretraining"] = sum(p.numel() for p in initial.parameters())

    if "finetune" in only:
        cycle = np.arange(args.steps * args.batch_size) % len(texts)
        tr, ytr = [texts[i] for i in cycle], labels[cycle]
        initial = _classifier(size, int(labels.max()) + 1, tokenizer, seed=0)
        _probe_finetune(copy.deepcopy(initial), tokenizer, tr[:2 * args.batch_size], ytr[:2 * args.batch_size],
                        args.batch_size, args.max_length, device)
        _trainer_finetune(copy.deepcopy(initial), tokenizer, tr[:2 * args.batch_size], ytr[:2 * args.batch_size],
                          args.batch_size, args.max_length, device)
        probe_best, probe_runs = _best(lambda: _probe_finetune(copy.deepcopy(initial), tokenizer, tr, ytr,
                                                               args.batch_size, args.max_length, device), args.repeats)
        hf_best, hf_runs = _best(lambda: _trainer_finetune(copy.deepcopy(initial), tokenizer, tr, ytr,
                                                           args.batch_size, args.max_length, device), args.repeats)
        rows.append((f"fine-tuning ({len(tr)} texts, {args.steps} steps)", probe_best, hf_best, probe_runs, hf_runs))
        n_params["fine-tuning"] = sum(p.numel() for p in initial.parameters())

    layers, hidden, heads, intermediate = size
    lines = [
        f"### probe vs transformers.Trainer: {args.model_size} BERT ({layers} layers, hidden {hidden}), "
        f"{device.type}, {precision} ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{header}. Steps {args.steps}, batch {args.batch_size}, max_length {args.max_length}, "
        f"best of {args.repeats}.",
        "",
        "| workload | probe tokens/s | Trainer tokens/s | probe / Trainer | probe MFU | Trainer MFU |",
        "|---|---|---|---|---|---|",
    ]
    peak = peak_flops(device)
    for name, ours, theirs, ours_runs, their_runs in rows:
        n = next(v for k, v in n_params.items() if name.startswith(k))
        mfu = [f"{6 * n * x / peak:.1%}" if peak else "n/a" for x in (ours, theirs)]
        lines.append(f"| {name} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} | {mfu[0]} | {mfu[1]} |")
        if args.repeats > 1:
            print(f"{name}: probe runs {[round(r) for r in ours_runs]}, Trainer runs {[round(r) for r in their_runs]}",
                  file=sys.stderr)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"[bench_pretrain] {time.perf_counter() - started:.0f} s", file=sys.stderr)
