"""Masked-language-model pieces (Devlin et al. 2019, BERT): the model, its masking and its loss.

15 % of the non-special tokens are chosen; of those 80 % become [MASK], 10 % a random token and
10 % stay (``transformers.DataCollatorForLanguageModeling`` does the drawing), afresh for every
batch from a seed (dynamic masking, Liu et al. 2019, RoBERTa). The vocabulary projection runs only
at the chosen positions, the cost that dominates small models otherwise. The training loop is
:mod:`probe.models.pretrain`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from probe.config import PretrainConfig
from probe.errors import ProbeError
from probe.models.backbones import BUILTIN_BACKBONES, not_found, quiet_transformers

MASK_STREAM, EVAL_STREAM = 0, 1  # independent random streams derived from the seed (see derive_seed)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (independent streams for independent key tuples)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def build_mlm(backbone: str, cfg: PretrainConfig, tokenizer, seed: int):
    """A masked-LM model whose new weights are drawn from ``seed``.

    ``cfg.init == "scratch"``: a new BERT of ``cfg.size`` over ``tokenizer``'s vocabulary.
    ``"continue"``: the backbone's weights (``tiny-bert``: random from its config); a checkpoint
    without an MLM head (``minilm``) gets a fresh one, its decoder tied to the word embeddings.
    """
    from transformers import AutoModelForMaskedLM, BertConfig

    quiet_transformers()
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
                raise ProbeError(not_found(backbone, e)) from None
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and cfg.max_length > limit:
        raise ProbeError(f"pretrain.max_length: got {cfg.max_length}; {backbone!r} takes at most {limit} "
                         f"positions; allowed: 8 to {limit} (or pretrain.init: scratch)")
    return model


class MaskedLMLoss(nn.Module):
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
    return Masker(tokenizer, mlm_probability)(blocks, derive_seed(seed, MASK_STREAM, 0))


def masked_lm_loss(model, tokenizer, blocks: list[list[int]], mlm_probability: float, seed: int,
                   batch_size: int, device) -> float:
    """Mean cross-entropy over the masked tokens of ``blocks``, with one masking fixed by ``seed``
    (the same for every call with the same arguments); fp32, dropout off."""
    if not blocks:
        return float("nan")
    device = torch.device(device)
    masker = Masker(tokenizer, mlm_probability)
    loss_fn = MaskedLMLoss(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for b, start in enumerate(range(0, len(blocks), batch_size)):
            batch = masker(blocks[start: start + batch_size], derive_seed(seed, EVAL_STREAM, b))
            n = int((batch["labels"] != -100).sum())
            if n:
                batch = {k: v.to(device) for k, v in batch.items()}
                total += float(loss_fn(**batch))
                count += n
    model.train(was_training)
    return total / count if count else float("nan")


