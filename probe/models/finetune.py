"""Full fine-tuning for sequence classification: AdamW, linear warmup/decay, clipping.

A plain, explicit loop rather than ``transformers.Trainer``: the run needs exact control of
seeding (one ``torch.Generator`` for shuffling), a per-epoch validation pass, a tqdm bar with
loss and tokens/s, and nothing written outside the run directory.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from probe.config import FinetuneConfig
from probe.models.backbones import BUILTIN_BACKBONES, _not_found, _quiet_transformers, load_encoder
from probe.models.batching import length_sorted_batches, pad_batch, tokenize
from probe.errors import ProbeError


@dataclass
class TrainingLog:
    epochs: list[dict] = field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0


def build_classifier(backbone: str, classes: list[str], seed: int):
    """The pretrained encoder with a fresh classification head (initialised from ``seed``)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    _quiet_transformers()
    labels = dict(id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)})
    builtin = BUILTIN_BACKBONES.get(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if builtin is not None and builtin.weights_path is None:
            encoder = load_encoder(backbone, seed)
            config = encoder.config
            config.num_labels = len(classes)
            config.update(labels)
            model = AutoModelForSequenceClassification.from_config(config)
            missing, _ = model.base_model.load_state_dict(encoder.state_dict(), strict=False)
            if missing:
                raise RuntimeError(f"classifier encoder is missing weights: {missing[:3]}")
            return model
        source = str(builtin.weights_path()) if builtin else backbone
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=len(classes), **labels
            )
        except (OSError, ValueError) as e:
            raise ProbeError(_not_found(backbone, e)) from None


def autocast(device):
    """bf16 autocast on CUDA, nothing elsewhere (CPU bf16 is slower and less exact here)."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def predict_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int, device) -> np.ndarray:
    """Classifier logits for ``texts`` in their given order."""
    import torch

    ids = tokenize(tokenizer, texts, max_length)
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode(), autocast(device):
        for idx in length_sorted_batches(ids, batch_size):
            batch = pad_batch(tokenizer, [ids[i] for i in idx]).to(device)
            out[idx] = model(**batch).logits.float().cpu().numpy()
    return out


def finetune(
    model, tokenizer, train_texts: list[str], train_labels: np.ndarray,
    val_texts: list[str], val_labels: np.ndarray, cfg: FinetuneConfig,
    max_length: int, seed: int, device, progress: bool = True,
) -> TrainingLog:
    """Fine-tune ``model`` in place; validation accuracy after every epoch goes into the log."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    model.to(device)
    ids = tokenize(tokenizer, train_texts, max_length)
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, **fused)
    steps_per_epoch = math.ceil(len(ids) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(seed)
    log = TrainingLog()

    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(ids), generator=generator).numpy()
        bar = tqdm(range(steps_per_epoch), desc=f"fine-tune epoch {epoch}/{cfg.epochs}", disable=not progress,
                   unit="step", leave=False)
        losses, tokens, t0 = [], 0, time.perf_counter()
        for step in bar:
            idx = order[step * cfg.batch_size: (step + 1) * cfg.batch_size]
            batch = pad_batch(tokenizer, [ids[i] for i in idx]).to(device)
            with autocast(device):
                logits = model(**batch).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[idx].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += int(batch["attention_mask"].sum())
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", tok_s=f"{tokens / max(elapsed, 1e-9):.0f}")
        bar.close()
        seconds = time.perf_counter() - t0
        log.train_tokens += tokens
        log.train_seconds += seconds
        val_pred = predict_logits(model, tokenizer, val_texts, max_length, 64, device).argmax(1)
        val_acc = float((val_pred == val_labels).mean())
        log.epochs.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "validation_accuracy": val_acc,
                           "seconds": seconds, "tokens_per_second": tokens / seconds if seconds else 0.0})
        tqdm.write(f"[probe] epoch {epoch}: train loss {np.mean(losses):.3f}, validation accuracy {val_acc:.3f}, "
                   f"{tokens / seconds:.0f} tokens/s", file=sys.stderr)
    model.eval()
    return log
