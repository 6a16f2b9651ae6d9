"""Language-model pieces for the pretraining stage: the model, its batches and its loss.

- ``mlm``, masked-language modelling (Devlin et al. 2019, BERT): 15 % of the non-special tokens are
  chosen; of those 80 % become [MASK], 10 % a random token and 10 % stay
  (``transformers.DataCollatorForLanguageModeling`` does the drawing), afresh for every batch from a
  seed (dynamic masking, Liu et al. 2019, RoBERTa) — :class:`Masker`.
- ``clm``, causal language modelling (Radford et al. 2019, GPT-2): every position predicts the next
  token — :class:`NextToken`; a GPT-2 of ``pretrain.size`` from scratch, or a decoder backbone continued.

Either way a batch's ``labels`` hold the token to predict at each labelled position (-100 elsewhere),
so one loss serves both (:class:`LabelledPositionsLoss`): the vocabulary projection runs only at the
labelled positions, the cost that dominates small models otherwise. The training loop is
:mod:`probe.models.pretrain`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from probe.config import PretrainConfig
from probe.errors import ProbeError
from probe.models.adapter import adapter
from probe.models.backbones import BUILTIN_BACKBONES, not_found, quiet_transformers

MASK_STREAM, EVAL_STREAM = 0, 1  # independent random streams derived from the seed (see derive_seed)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (independent streams for independent key tuples)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def build_lm(backbone: str, cfg: PretrainConfig, tokenizer, seed: int):
    """A language model for ``cfg.objective`` whose new weights are drawn from ``seed``.

    ``cfg.init == "scratch"``: a new BERT (``mlm``) or GPT-2 (``clm``) of ``cfg.size`` over
    ``tokenizer``'s vocabulary. ``"continue"``: the backbone's weights (built-ins without weights:
    random from their config); a checkpoint without an LM head (``minilm``) gets a fresh one, tied to
    the word embeddings.
    """
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    quiet_transformers()
    auto = AutoModelForMaskedLM if cfg.objective == "mlm" else AutoModelForCausalLM
    builtin = BUILTIN_BACKBONES.get(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: nothing global outlives the block
        if cfg.init == "scratch":
            return auto.from_config(_scratch_config(cfg, tokenizer))
        if builtin is not None and builtin.weights_path is None:
            model = _from_config(auto, builtin.make_config(), backbone, cfg)
        else:
            source = str(builtin.weights_path()) if builtin else backbone
            try:
                model = auto.from_pretrained(source, dtype=torch.float32)
            except (OSError, ValueError) as e:
                raise ProbeError(_objective_mismatch(backbone, cfg, e) or not_found(backbone, e)) from None
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    if adapter(model).causal != (cfg.objective == "clm"):
        # transformers builds a BERT "causal LM" that still attends both ways: it would read the answer
        raise ProbeError(_wrong_objective(backbone, cfg))
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit is not None and cfg.max_length > limit:
        raise ProbeError(f"pretrain.max_length: got {cfg.max_length}; {backbone!r} takes at most {limit} "
                         f"positions; allowed: 8 to {limit} (or pretrain.init: scratch)")
    return model


def _scratch_config(cfg: PretrainConfig, tokenizer):
    from transformers import BertConfig, GPT2Config

    s = cfg.size
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if cfg.objective == "mlm":
        return BertConfig(vocab_size=len(tokenizer), hidden_size=s.hidden, num_hidden_layers=s.layers,
                          num_attention_heads=s.heads, intermediate_size=s.intermediate,
                          max_position_embeddings=max(512, cfg.max_length), pad_token_id=pad)
    bos, eos = frame_ids(tokenizer)
    return GPT2Config(vocab_size=len(tokenizer), n_embd=s.hidden, n_layer=s.layers, n_head=s.heads, n_inner=s.intermediate,
                      n_positions=max(512, cfg.max_length), pad_token_id=pad, bos_token_id=bos, eos_token_id=eos)


def _from_config(auto, config, backbone: str, cfg: PretrainConfig):
    try:
        return auto.from_config(config)
    except ValueError as e:
        raise ProbeError(_objective_mismatch(backbone, cfg, e) or not_found(backbone, e)) from None


def _objective_mismatch(backbone: str, cfg: PretrainConfig, e: Exception) -> str | None:
    return _wrong_objective(backbone, cfg) if "Unrecognized configuration class" in str(e) else None


def _wrong_objective(backbone: str, cfg: PretrainConfig) -> str:
    kind = "a masked-language model (a BERT-style encoder)" if cfg.objective == "mlm" else "a causal decoder"
    return (f"pretrain.objective: {cfg.objective!r} continues {kind}, and {backbone!r} is not one; allowed: "
            f"the other objective, or pretrain.init: scratch")


def frame_ids(tokenizer) -> tuple[int, int]:
    """The ids that open and close a text: [CLS] / [SEP], or BOS / EOS."""
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls is None or sep is None:
        raise ProbeError("pretrain.packing: the tokenizer has no [CLS]/[SEP] (or BOS/EOS) token to frame "
                         "packed blocks; allowed: packing false")
    return cls, sep


class LabelledPositionsLoss(nn.Module):
    """Summed cross-entropy over the labelled positions (``labels != -100``).

    For models whose LM head is ``cls`` (BERT) or ``lm_head`` (RoBERTa, GPT-2, Llama) the transformer
    runs on every position and the head only on the labelled ones; any other LM computes all logits.
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



class Masker:
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
        ids, lengths = _padded(rows, self.pad_id)
        input_ids = torch.from_numpy(ids)
        attention_mask = torch.from_numpy(np.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        special = torch.isin(input_ids, self.special) | (attention_mask == 0)
        with torch.random.fork_rng(devices=[]):  # the collator draws from the global CPU generator
            torch.default_generator.manual_seed(seed)
            input_ids, labels = self.collator.torch_mask_tokens(input_ids, special_tokens_mask=special)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _padded(rows: Sequence[Sequence[int]] | np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``[rows, longest]`` int64 ids right-padded with ``pad_id``, and each row's length."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2:  # equal-length rows: nothing to pad
        return rows.astype(np.int64), np.full(len(rows), rows.shape[1])
    lengths = np.array([len(r) for r in rows])
    ids = np.full((len(rows), int(lengths.max())), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, lengths


def mask_blocks(tokenizer, blocks: Sequence[Sequence[int]], mlm_probability: float, seed: int) -> dict:
    """Pad ``blocks`` and apply BERT masking drawn from ``seed``: ``input_ids`` (masked),
    ``attention_mask`` and ``labels`` (the original id at chosen positions, -100 elsewhere)."""
    return Masker(tokenizer, mlm_probability)(blocks, derive_seed(seed, MASK_STREAM, 0))


class NextToken:
    """Pads rows; each position's label is the next token (-100 at the last real token and on padding):
    causal language modelling's targets, arranged for :class:`LabelledPositionsLoss`."""

    def __init__(self, tokenizer):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, rows: Sequence[Sequence[int]] | np.ndarray, seed: int = 0) -> dict[str, torch.Tensor]:
        ids, lengths = _padded(rows, self.pad_id)
        input_ids = torch.from_numpy(ids)
        attention_mask = torch.from_numpy(np.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        labels = torch.full_like(input_ids, -100)
        labels[:, :-1] = torch.where(attention_mask[:, 1:].bool(), input_ids[:, 1:], torch.full_like(input_ids[:, 1:], -100))
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batcher(tokenizer, cfg: PretrainConfig):
    """The batches of ``cfg.objective``: :class:`Masker` (mlm) or :class:`NextToken` (clm)."""
    return Masker(tokenizer, cfg.mlm_probability) if cfg.objective == "mlm" else NextToken(tokenizer)


def lm_loss(model, tokenizer, blocks: list[list[int]], cfg: PretrainConfig, seed: int, batch_size: int,
            device) -> float:
    """Mean cross-entropy over the labelled tokens of ``blocks`` for ``cfg.objective``, with one masking
    fixed by ``seed`` (the same for every call with the same arguments); fp32, dropout off."""
    if not blocks:
        return float("nan")
    device = torch.device(device)
    make = batcher(tokenizer, cfg)
    loss_fn = LabelledPositionsLoss(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for b, start in enumerate(range(0, len(blocks), batch_size)):
            batch = make(blocks[start: start + batch_size], derive_seed(seed, EVAL_STREAM, b))
            n = int((batch["labels"] != -100).sum())
            if n:
                batch = {k: v.to(device) for k, v in batch.items()}
                total += float(loss_fn(**batch))
                count += n
    model.train(was_training)
    return total / count if count else float("nan")
