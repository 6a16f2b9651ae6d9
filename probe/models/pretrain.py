"""Pretraining before fine-tuning: the training loop and its data, for either language-model objective.

Masked-language modelling (Devlin et al. 2019, BERT) or causal language modelling (Radford et al.
2019, GPT-2); :mod:`probe.models.lm` has the models, the batches and the loss. Texts become packed
blocks (Liu et al. 2019, RoBERTa): with ``packing`` the corpus
becomes one token stream cut into full ``max_length`` blocks (no padding, RoBERTa's
FULL-SENTENCES); without it every text is one row and batches are grouped by length. Masks are
drawn afresh every step (dynamic masking) from ``(seed, step)`` alone, so a run is repeatable
whatever the number of data-loader workers or processes.

A plain, explicit loop rather than ``transformers.Trainer``, for the same reasons as
:mod:`probe.models.finetune`: exact control of seeding (generators derived from the seed, no
global seeding), a tqdm bar with loss and tokens/s, the same data-parallel contract as
fine-tuning (:mod:`probe.distributed`), and nothing written outside the run directory.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from probe.config import ComputeConfig, PretrainConfig
from probe.errors import ProbeError
from probe.models.compute import adamw, autocast_for, peak_flops, resolve_precision, seeded_rng
from probe.models.lm import MASK_STREAM, LabelledPositionsLoss, batcher, derive_seed, frame_ids, lm_loss
from probe.rundir import atomic_directory

_MAX_HELD_OUT = 2048  # held-out blocks at most: the loss before and after training stays cheap
_LENGTH_WINDOW = 50  # no packing: batches sorted by length together, then shuffled
_LOG_EVERY = 10  # steps per training-loss record (a GPU sync each time)
# independent random streams derived from the seed (0 and 1: masking and evaluation, probe.models.lm)
_EPOCH_STREAM, _WINDOW_STREAM, _SPLIT_STREAM, _DROPOUT_STREAM = range(2, 6)



@dataclass
class PretrainLog:
    """What pretraining did. ``initial_loss`` / ``final_loss``: cross-entropy over the labelled tokens
    (masked tokens, or next tokens) of held-out blocks with one fixed masking, before and after training; ``losses``: ``[step, mean
    training loss over the steps since the previous record]``; ``learning_rates``: ``[step, learning rate after
    that step]`` at the same steps; ``mfu``: model FLOPs utilisation
    (6 * trainable parameters * tokens/s / peak bf16 FLOPs), known GPUs only."""

    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    tokens_per_second: float = 0.0
    initial_loss: float = float("nan")
    final_loss: float = float("nan")
    losses: list[list[float]] = field(default_factory=list)
    learning_rates: list[list[float]] = field(default_factory=list)
    mfu: Optional[float] = None
    device: str = "cpu"
    precision: str = "fp32"
    blocks: int = 0
    held_out_blocks: int = 0
    trainable_parameters: int = 0

    def to_dict(self) -> dict:
        """JSON-ready copy of every field."""
        return asdict(self)



# --- data: blocks and batches ------------------------------------------------------------------

def make_blocks(tokenizer, texts: list[str], max_length: int, packing: bool) -> list[list[int]]:
    """Token-id rows for language-model training (either objective).

    ``packing``: the texts are tokenised without special tokens and joined into one stream with
    [SEP] between texts, cut into pieces of ``max_length - 2`` and framed as ``[CLS] piece [SEP]``,
    so every block has exactly ``max_length`` tokens; a shorter remainder is dropped unless it is
    the only block. Otherwise: one row per text, with special tokens, truncated to ``max_length``.
    """
    from probe.models.batching import tokenize

    if not packing:
        return [list(row) for row in tokenize(tokenizer, texts, max_length)]
    cls, sep = frame_ids(tokenizer)
    pieces = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            stream.append(sep)
        stream.extend(piece)
    body = max_length - 2
    blocks = [[cls, *stream[k: k + body], sep] for k in range(0, len(stream) - body + 1, body)]
    if not blocks and stream:
        blocks = [[cls, *stream, sep]]
    return blocks


class _BatchPlan:
    """Which block rows make up step ``k``'s global batch, as a pure function of ``(seed, k)``.

    Blocks are visited epoch after epoch, each epoch in its own permutation (a generator seeded from
    ``(seed, epoch)``); the visiting order is cut into batches of ``batch_size``. With ``window > 1``
    (no packing) each run of ``window`` batches is sorted by length and the batches are shuffled, so
    a batch holds rows of similar length.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, window: int):
        self.lengths, self.batch_size, self.seed, self.window = lengths, batch_size, seed, window
        self._perms: dict[int, np.ndarray] = {}
        self._batches: tuple[int, np.ndarray] | None = None

    def rows(self, step: int) -> np.ndarray:
        w, j = divmod(step, self.window)
        if self._batches is None or self._batches[0] != w:
            self._batches = (w, self._window(w))
        return self._batches[1][j]

    def _window(self, w: int) -> np.ndarray:
        size = self.window * self.batch_size
        idx = self._visit(np.arange(w * size, (w + 1) * size))
        if self.window == 1:
            return idx.reshape(1, -1)
        idx = idx[np.argsort(-self.lengths[idx], kind="stable")].reshape(self.window, self.batch_size)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, _WINDOW_STREAM, w))
        return idx[torch.randperm(self.window, generator=gen).numpy()]

    def _visit(self, positions: np.ndarray) -> np.ndarray:
        n = len(self.lengths)
        epochs = positions // n
        out = np.empty_like(positions)
        for e in np.unique(epochs):
            if e not in self._perms:
                if len(self._perms) >= 2:
                    self._perms.pop(min(self._perms))
                gen = torch.Generator().manual_seed(derive_seed(self.seed, _EPOCH_STREAM, int(e)))
                self._perms[int(e)] = torch.randperm(n, generator=gen).numpy()
            sel = epochs == e
            out[sel] = self._perms[int(e)][positions[sel] % n]
        return out


class _StepBatches:
    """Map-style dataset whose item ``k`` is step ``k``'s masked batch, already this process's shard:
    the same global batch and masking on every process and in any worker."""

    def __init__(self, blocks: list[list[int]], masker, steps: int, batch_size: int, seed: int,
                 packing: bool, rank: int = 0, world: int = 1):
        self.masker, self.steps, self.seed, self.rank, self.world = masker, steps, seed, rank, world
        lengths = np.array([len(b) for b in blocks])
        self.blocks = np.asarray(blocks, dtype=np.int32) if len(set(lengths.tolist())) == 1 else blocks
        self.plan = _BatchPlan(lengths, batch_size, seed, 1 if packing else _LENGTH_WINDOW)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict:
        rows = self.plan.rows(step)
        picked = self.blocks[rows] if isinstance(self.blocks, np.ndarray) else [self.blocks[i] for i in rows]
        batch = self.masker(picked, derive_seed(self.seed, MASK_STREAM, step))
        count = int((batch["labels"] != -100).sum())
        weight = 1.0
        if self.world > 1:
            n = len(rows)
            lo, hi = self.rank * n // self.world, (self.rank + 1) * n // self.world
            if hi == lo:  # fewer rows than processes: take part in the step with zero weight
                lo, hi, weight = 0, 1, 0.0
            batch = {k: v[lo:hi] for k, v in batch.items()}
            width = int(batch["attention_mask"].sum(1).max())
            batch = {k: v[:, :width] for k, v in batch.items()}
        tokens = int(batch["attention_mask"].sum()) if weight else 0
        return {"batch": batch, "count": count, "tokens": tokens, "weight": weight}



# --- training, saving --------------------------------------------------------------------------

def _split_held_out(blocks: list[list[int]], fraction: float, seed: int) -> tuple[list, list]:
    """Training and held-out blocks; with too few blocks to spare any, the held-out set is the training set."""
    n = len(blocks)
    n_held = min(max(1, round(fraction * n)), n - 1, _MAX_HELD_OUT) if fraction > 0 and n >= 2 else 0
    if n_held == 0:
        return blocks, blocks[:_MAX_HELD_OUT]
    perm = np.random.default_rng(derive_seed(seed, _SPLIT_STREAM)).permutation(n)
    held = set(perm[:n_held].tolist())
    return [b for i, b in enumerate(blocks) if i not in held], [blocks[i] for i in sorted(held)]



def pretrain_lm(
    model, tokenizer, texts: list[str], cfg: PretrainConfig, compute: ComputeConfig, seed: int, device,
    progress: bool = True, held_out_fraction: float = 0.05,
) -> PretrainLog:
    """Train ``model`` (from :func:`probe.models.lm.build_lm`) in place on ``cfg.objective`` for exactly
    ``cfg.steps`` optimizer steps of ``cfg.batch_size`` blocks of ``texts``; returns the log.

    AdamW (no decay on biases and norms; fused on CUDA), linear warmup over ``cfg.warmup_ratio``
    of the steps then linear decay, gradient clipping at ``cfg.max_grad_norm``, bf16 autocast per
    ``compute.precision``, optional ``torch.compile`` and data-loader workers. Under
    ``accelerate launch`` every process builds the same global batch and masking and trains on its
    shard; the loss ``sum of shard CE / masked tokens in the global batch * world`` makes DDP's
    averaged gradient the single-process one. A fraction ``held_out_fraction`` of the blocks
    (at most 2048) is kept out of training to measure the loss before and after.

    Every random draw comes from ``seed``: the held-out split, the block order, the masking of each
    step (``(seed, step)``, whatever the number of workers) and dropout (a generator forked and
    seeded for the loop, ``(seed, rank)``); the global generators are left as they were.
    """
    from probe.distributed import current

    dist = current()
    device = torch.device(device)
    blocks = make_blocks(tokenizer, texts, cfg.max_length, cfg.packing)
    if not blocks:
        raise ProbeError("pretrain.corpus: the texts hold no tokens to train on")
    train_blocks, held_out = _split_held_out(blocks, held_out_fraction, seed)
    precision = resolve_precision(compute.precision, device)
    log = PretrainLog(steps=cfg.steps, device=str(device), precision=precision, blocks=len(train_blocks),
                      held_out_blocks=len(held_out))
    model.to(device)
    log.initial_loss = lm_loss(model, tokenizer, held_out, cfg, seed, cfg.batch_size, device)
    log.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    data = _StepBatches(train_blocks, batcher(tokenizer, cfg), cfg.steps, cfg.batch_size, seed,
                        cfg.packing, dist.rank, dist.world)
    with seeded_rng(derive_seed(seed, _DROPOUT_STREAM, dist.rank), device):  # dropout; workers' base seed
        _train_steps(model, LabelledPositionsLoss(model), data, cfg, compute, precision, device, log,
                     progress and dist.is_main)
    model.eval()
    log.final_loss = lm_loss(model, tokenizer, held_out, cfg, seed, cfg.batch_size, device)
    if progress and dist.is_main:
        from tqdm.auto import tqdm

        tqdm.write(f"[probe] pretraining ({cfg.objective}): held-out loss {log.initial_loss:.3f} -> {log.final_loss:.3f}, "
                   f"{log.tokens_per_second:.0f} tokens/s", file=sys.stderr)
    return log


def _train_steps(model, loss_module, data: "_StepBatches", cfg: PretrainConfig, compute: ComputeConfig,
                 precision: str, device, log: PretrainLog, progress: bool) -> None:
    """The optimizer steps of :func:`pretrain_mlm`: ``loss_module(**batch)`` is the summed loss of a
    shard, scaled to the global mean; fills the log's losses, tokens, seconds, tokens/s and MFU."""
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from probe.distributed import current

    dist = current()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(model, cfg.weight_decay, cfg.learning_rate, device)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * cfg.steps), cfg.steps)
    forward = dist.prepare(loss_module)
    if compute.compile:
        forward = torch.compile(forward)
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=compute.dataloader_workers,
                                         pin_memory=device.type == "cuda")
    bar = tqdm(total=cfg.steps, desc="pretrain", unit="step", disable=not progress, leave=False)
    running, since, tokens = torch.zeros((), device=device), 0, 0
    model.train()
    t0 = time.perf_counter()
    for step, item in enumerate(loader, start=1):
        batch = {k: v.to(device, non_blocking=True) for k, v in item["batch"].items()}
        with autocast_for(precision, device):
            ce_sum = forward(**batch)
        loss = ce_sum * (dist.loss_scale(item["count"]) * item["weight"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.detach() / dist.world  # this shard's part of the global mean
        since += 1
        tokens += item["tokens"]
        bar.update(1)
        if step % _LOG_EVERY == 0 or step == cfg.steps:
            value = dist.sum(float(running)) / since
            log.losses.append([step, value])
            log.learning_rates.append([step, float(scheduler.get_last_lr()[0])])
            running.zero_()
            since = 0
            bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    bar.close()
    log.seconds = time.perf_counter() - t0
    log.tokens = int(dist.sum(tokens))
    log.tokens_per_second = log.tokens / log.seconds if log.seconds else 0.0
    peak = peak_flops(device)
    if peak is not None and log.seconds:
        log.mfu = 6 * log.trainable_parameters * log.tokens_per_second / (peak * dist.world)


def save_pretrained_encoder(model, tokenizer, directory: str | os.PathLike) -> Path:
    """Write ``model`` (safetensors) and ``tokenizer`` as a Hugging Face folder, atomically
    (:func:`probe.rundir.atomic_directory`). ``AutoModel`` loads the encoder from it, and the
    classification auto classes put a fresh head (and pooler, if the masked LM had none) on it."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return directory
