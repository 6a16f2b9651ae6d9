"""Masked-language-model pretraining (Devlin et al. 2019, BERT) with dynamic masking and packed
blocks (Liu et al. 2019, RoBERTa).

15 % of the non-special tokens are chosen; of those 80 % become [MASK], 10 % a random token and
10 % stay (``transformers.DataCollatorForLanguageModeling`` does the drawing). Masks are drawn
afresh every step (dynamic masking, RoBERTa) from ``(seed, step)`` alone, so a run is repeatable
whatever the number of data-loader workers or processes. With ``packing`` the corpus becomes one
token stream cut into full ``max_length`` blocks (no padding, RoBERTa's FULL-SENTENCES); without
it every text is one row and batches are grouped by length. The vocabulary projection runs only
at the chosen positions, the cost that dominates small models otherwise.

A plain, explicit loop rather than ``transformers.Trainer``, for the same reasons as
:mod:`probe.models.finetune`: exact control of seeding (generators derived from the seed, no
global seeding), a tqdm bar with loss and tokens/s, the same data-parallel contract as
fine-tuning (:mod:`probe.distributed`), and nothing written outside the run directory.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from probe.config import ComputeConfig, PretrainConfig
from probe.errors import ProbeError
from probe.models.backbones import BUILTIN_BACKBONES, _not_found, _quiet_transformers

_PEAK_BF16_FLOPS = (("H100", 989e12), ("H200", 989e12), ("A100", 312e12))  # dense bf16, per device
_MAX_HELD_OUT = 2048  # held-out blocks at most: the loss before and after training stays cheap
_LENGTH_WINDOW = 50  # no packing: batches sorted by length together, then shuffled
_LOG_EVERY = 10  # steps per training-loss record (a GPU sync each time)
# independent random streams derived from the seed
_MASK_STREAM, _EVAL_STREAM, _EPOCH_STREAM, _WINDOW_STREAM, _SPLIT_STREAM, _DROPOUT_STREAM = range(6)


@dataclass
class PretrainLog:
    """What MLM pretraining did. ``initial_loss`` / ``final_loss``: masked-token cross-entropy on
    held-out blocks with one fixed masking, before and after training; ``losses``: ``[step, mean
    training loss over the steps since the previous record]``; ``mfu``: model FLOPs utilisation
    (6 * trainable parameters * tokens/s / peak bf16 FLOPs), known GPUs only."""

    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    tokens_per_second: float = 0.0
    initial_loss: float = float("nan")
    final_loss: float = float("nan")
    losses: list[list[float]] = field(default_factory=list)
    mfu: Optional[float] = None
    device: str = "cpu"
    precision: str = "fp32"
    blocks: int = 0
    held_out_blocks: int = 0
    trainable_parameters: int = 0

    def to_dict(self) -> dict:
        """JSON-ready copy of every field."""
        return asdict(self)


# --- the model ---------------------------------------------------------------------------------

def build_mlm(backbone: str, cfg: PretrainConfig, tokenizer, seed: int):
    """A masked-LM model whose new weights are drawn from ``seed``.

    ``cfg.init == "scratch"``: a new BERT of ``cfg.size`` over ``tokenizer``'s vocabulary.
    ``"continue"``: the backbone's weights (``tiny-bert``: random from its config); a checkpoint
    without an MLM head (``minilm``) gets a fresh one, its decoder tied to the word embeddings.
    """
    from transformers import AutoModelForMaskedLM, BertConfig

    _quiet_transformers()
    builtin = BUILTIN_BACKBONES.get(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: nothing global outlives the block
        if cfg.init == "scratch":
            s = cfg.size
            config = BertConfig(
                vocab_size=len(tokenizer), hidden_size=s.hidden, num_hidden_layers=s.layers,
                num_attention_heads=s.heads, intermediate_size=s.intermediate,
                max_position_embeddings=max(512, cfg.max_length),
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            )
            return AutoModelForMaskedLM.from_config(config)
        if builtin is not None and builtin.weights_path is None:
            model = AutoModelForMaskedLM.from_config(builtin.make_config())
        else:
            source = str(builtin.weights_path()) if builtin else backbone
            try:
                model = AutoModelForMaskedLM.from_pretrained(source)
            except (OSError, ValueError) as e:
                raise ProbeError(_not_found(backbone, e)) from None
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and cfg.max_length > limit:
        raise ProbeError(f"pretrain.max_length: got {cfg.max_length}; {backbone!r} takes at most {limit} "
                         f"positions; allowed: 8 to {limit} (or pretrain.init: scratch)")
    return model


class _MaskedLMLoss(nn.Module):
    """Summed cross-entropy over the chosen positions (``labels != -100``).

    For BERT- and RoBERTa-style models the encoder runs on every position and the MLM head only on
    the chosen ones; any other masked LM computes all logits.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.head = next((n for n in ("cls", "lm_head") if isinstance(getattr(model, n, None), nn.Module)), None)

    def forward(self, input_ids, attention_mask, labels):
        chosen = labels != -100
        if self.head is None:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[chosen]
        else:
            hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
            logits = getattr(self.model, self.head)(hidden[chosen])
        return nn.functional.cross_entropy(logits.float(), labels[chosen], reduction="sum")


# --- data: blocks, batches, masking ------------------------------------------------------------

def make_blocks(tokenizer, texts: list[str], max_length: int, packing: bool) -> list[list[int]]:
    """Token-id rows for MLM training.

    ``packing``: the texts are tokenised without special tokens and joined into one stream with
    [SEP] between texts, cut into pieces of ``max_length - 2`` and framed as ``[CLS] piece [SEP]``,
    so every block has exactly ``max_length`` tokens; a shorter remainder is dropped unless it is
    the only block. Otherwise: one row per text, with special tokens, truncated to ``max_length``.
    """
    from probe.models.batching import tokenize

    if not packing:
        return [list(row) for row in tokenize(tokenizer, texts, max_length)]
    cls, sep = _frame_ids(tokenizer)
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


def _frame_ids(tokenizer) -> tuple[int, int]:
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls is None or sep is None:
        raise ProbeError("pretrain.packing: the tokenizer has no [CLS]/[SEP] (or BOS/EOS) token to frame "
                         "packed blocks; allowed: packing false")
    return cls, sep


def _derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (independent streams for independent key tuples)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class _Masker:
    """Pads rows and masks them with ``DataCollatorForLanguageModeling`` (80/10/10), seeded per call."""

    def __init__(self, tokenizer, mlm_probability: float):
        from transformers import DataCollatorForLanguageModeling

        if tokenizer.mask_token_id is None:
            raise ProbeError("pretrain: the tokenizer has no mask token, so it cannot be used for masked-LM "
                             "pretraining; allowed: a BERT-style tokenizer (e.g. model.backbone minilm)")
        self.collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=mlm_probability, mask_replace_prob=0.8, random_replace_prob=0.1)
        # the ids the collator itself treats as special (it would ask get_special_tokens_mask per row)
        ids = list(tokenizer.all_special_ids)
        flags = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        self.special = torch.tensor(sorted({i for i, f in zip(ids, flags) if f}), dtype=torch.long)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, rows: Sequence[Sequence[int]] | np.ndarray, seed: int) -> dict[str, torch.Tensor]:
        if isinstance(rows, np.ndarray) and rows.ndim == 2:  # equal-length rows: nothing to pad
            ids, lengths = rows.astype(np.int64), np.full(len(rows), rows.shape[1])
        else:
            lengths = np.array([len(r) for r in rows])
            ids = np.full((len(rows), int(lengths.max())), self.pad_id, dtype=np.int64)
            for i, row in enumerate(rows):
                ids[i, : len(row)] = row
        input_ids = torch.from_numpy(ids)
        attention_mask = torch.from_numpy(np.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        special = torch.isin(input_ids, self.special) | (attention_mask == 0)
        with torch.random.fork_rng(devices=[]):  # the collator draws from the global CPU generator
            torch.default_generator.manual_seed(seed)
            input_ids, labels = self.collator.torch_mask_tokens(input_ids, special_tokens_mask=special)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def mask_blocks(tokenizer, blocks: Sequence[Sequence[int]], mlm_probability: float, seed: int) -> dict:
    """Pad ``blocks`` and apply BERT masking drawn from ``seed``: ``input_ids`` (masked),
    ``attention_mask`` and ``labels`` (the original id at chosen positions, -100 elsewhere)."""
    return _Masker(tokenizer, mlm_probability)(blocks, _derive_seed(seed, _MASK_STREAM, 0))


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
        gen = torch.Generator().manual_seed(_derive_seed(self.seed, _WINDOW_STREAM, w))
        return idx[torch.randperm(self.window, generator=gen).numpy()]

    def _visit(self, positions: np.ndarray) -> np.ndarray:
        n = len(self.lengths)
        epochs = positions // n
        out = np.empty_like(positions)
        for e in np.unique(epochs):
            if e not in self._perms:
                if len(self._perms) >= 2:
                    self._perms.pop(min(self._perms))
                gen = torch.Generator().manual_seed(_derive_seed(self.seed, _EPOCH_STREAM, int(e)))
                self._perms[int(e)] = torch.randperm(n, generator=gen).numpy()
            sel = epochs == e
            out[sel] = self._perms[int(e)][positions[sel] % n]
        return out


class _StepBatches:
    """Map-style dataset whose item ``k`` is step ``k``'s masked batch, already this process's shard:
    the same global batch and masking on every process and in any worker."""

    def __init__(self, blocks: list[list[int]], masker: _Masker, steps: int, batch_size: int, seed: int,
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
        batch = self.masker(picked, _derive_seed(self.seed, _MASK_STREAM, step))
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


# --- evaluation, training, saving --------------------------------------------------------------

def masked_lm_loss(model, tokenizer, blocks: list[list[int]], mlm_probability: float, seed: int,
                   batch_size: int, device) -> float:
    """Mean cross-entropy over the masked tokens of ``blocks``, with one masking fixed by ``seed``
    (the same for every call with the same arguments); fp32, dropout off."""
    if not blocks:
        return float("nan")
    device = torch.device(device)
    masker = _Masker(tokenizer, mlm_probability)
    loss_fn = _MaskedLMLoss(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for b, start in enumerate(range(0, len(blocks), batch_size)):
            batch = masker(blocks[start: start + batch_size], _derive_seed(seed, _EVAL_STREAM, b))
            n = int((batch["labels"] != -100).sum())
            if n:
                batch = {k: v.to(device) for k, v in batch.items()}
                total += float(loss_fn(**batch))
                count += n
    model.train(was_training)
    return total / count if count else float("nan")


def _resolve_precision(precision: str, device) -> str:
    return "bf16" if precision == "bf16" or (precision == "auto" and device.type == "cuda") else "fp32"


def _autocast(precision: str, device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


@contextmanager
def _seeded_rng(seed: int, device):
    """The global CPU (and ``device``'s CUDA) generator seeded from ``seed`` inside the block and
    restored after it: dropout is repeatable without seeding anything outside."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def peak_flops(device) -> float | None:
    """Dense bf16 peak FLOP/s of a known CUDA device (None elsewhere), for model FLOPs utilisation:
    MFU = 6 · trainable parameters · tokens/s / peak (Chowdhery et al. 2022, PaLM appendix B; an
    upper estimate here, since embedding lookups and the masked-only MLM head cost less than 6N)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    return next((flops for key, flops in _PEAK_BF16_FLOPS if key in name), None)


def _split_held_out(blocks: list[list[int]], fraction: float, seed: int) -> tuple[list, list]:
    """Training and held-out blocks; with too few blocks to spare any, the held-out set is the training set."""
    n = len(blocks)
    n_held = min(max(1, round(fraction * n)), n - 1, _MAX_HELD_OUT) if fraction > 0 and n >= 2 else 0
    if n_held == 0:
        return blocks, blocks[:_MAX_HELD_OUT]
    perm = np.random.default_rng(_derive_seed(seed, _SPLIT_STREAM)).permutation(n)
    held = set(perm[:n_held].tolist())
    return [b for i, b in enumerate(blocks) if i not in held], [blocks[i] for i in sorted(held)]


def pretrain_mlm(
    model, tokenizer, texts: list[str], cfg: PretrainConfig, compute: ComputeConfig, seed: int, device,
    progress: bool = True, held_out_fraction: float = 0.05,
) -> PretrainLog:
    """Train ``model`` (from :func:`build_mlm`) in place for exactly ``cfg.steps`` optimizer steps
    of ``cfg.batch_size`` blocks of ``texts``; returns the log.

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
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from probe.distributed import current
    from probe.models.finetune import _optimizer

    dist = current()
    device = torch.device(device)
    progress = progress and dist.is_main
    blocks = make_blocks(tokenizer, texts, cfg.max_length, cfg.packing)
    if not blocks:
        raise ProbeError("pretrain.corpus: the texts hold no tokens to train on")
    train_blocks, held_out = _split_held_out(blocks, held_out_fraction, seed)
    precision = _resolve_precision(compute.precision, device)
    log = PretrainLog(steps=cfg.steps, device=str(device), precision=precision, blocks=len(train_blocks),
                      held_out_blocks=len(held_out))
    model.to(device)
    log.initial_loss = masked_lm_loss(model, tokenizer, held_out, cfg.mlm_probability, seed, cfg.batch_size, device)

    params = [p for p in model.parameters() if p.requires_grad]
    log.trainable_parameters = sum(p.numel() for p in params)
    optimizer = _optimizer(model, cfg, cfg.learning_rate, device)  # reads only cfg.weight_decay
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * cfg.steps), cfg.steps)
    forward = dist.prepare(_MaskedLMLoss(model))
    if compute.compile:
        forward = torch.compile(forward)
    data = _StepBatches(train_blocks, _Masker(tokenizer, cfg.mlm_probability), cfg.steps, cfg.batch_size, seed,
                        cfg.packing, dist.rank, dist.world)
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=compute.dataloader_workers,
                                         pin_memory=device.type == "cuda")
    with _seeded_rng(_derive_seed(seed, _DROPOUT_STREAM, dist.rank), device):  # dropout; workers' base seed
        bar = tqdm(total=cfg.steps, desc="pretrain (MLM)", unit="step", disable=not progress, leave=False)
        running, since, tokens = torch.zeros((), device=device), 0, 0
        model.train()
        t0 = time.perf_counter()
        for step, item in enumerate(loader, start=1):
            batch = {k: v.to(device, non_blocking=True) for k, v in item["batch"].items()}
            with _autocast(precision, device):
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
    model.eval()
    log.final_loss = masked_lm_loss(model, tokenizer, held_out, cfg.mlm_probability, seed, cfg.batch_size, device)
    if progress:
        tqdm.write(f"[probe] pretraining: held-out masked-token loss {log.initial_loss:.3f} -> {log.final_loss:.3f}, "
                   f"{log.tokens_per_second:.0f} tokens/s", file=sys.stderr)
    return log


def save_pretrained_encoder(model, tokenizer, directory: str | os.PathLike) -> Path:
    """Write ``model`` (safetensors) and ``tokenizer`` as a Hugging Face folder, atomically (a sibling
    temporary folder renamed into place). ``AutoModel`` loads the encoder from it, and the
    classification auto classes put a fresh head (and pooler, if the masked LM had none) on it."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory
