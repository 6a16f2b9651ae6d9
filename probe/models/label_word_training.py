"""Fine-tuning a causal LM to answer a prompt with its class's label word (``model.head: label-words``).

The training sequence of an example is its prompt followed by the gold class's label-word tokens
(the ids :class:`~probe.models.label_words.LabelWords` scores, so training and prediction read the same
tokens); the loss is the language-model cross-entropy of those label-word tokens only, summed over the
word's tokens and averaged over examples: ``-log P(word_y | prompt)``, the negated label-word score of
the gold class. The prompt's tokens are not trained on. Augmentation, batching order, validation and
every strategy and regulariser are the shared loop's (:func:`probe.models.finetune.finetune_objective`).

Only the positions that predict a label-word token need the language-model head, whose product with the
vocabulary dominates the cost of a small model and the memory of a large one ([batch, length, vocabulary]
logits). Rows are therefore padded on the left, so the label words end every row, with position ids counted
from each row's first real token (what scoring passes, :class:`probe.models.label_words.LabelWordModel`), and
transformers' ``logits_to_keep`` computes the head on the last ``longest label word + 1`` positions only.
"""

from __future__ import annotations

import numpy as np

IGNORE = -100


class LabelWordObjective:
    """The kind's objective (``base``: its examples, labels and augmentation, tokenised as prompts by the
    prompt tokenizer) trained through the label words; validation reads the label-word predictions."""

    def __init__(self, base, tokenizer) -> None:
        self.base, self.tokenizer, self.words = base, tokenizer, tokenizer.words
        self.monitor, self.monitor_label = base.monitor, base.monitor_label
        self.n_train, self.n_val = base.n_train, base.n_val

    @property
    def augmented(self) -> dict:
        return getattr(self.base, "augmented", {})

    def encode(self, rng: np.random.Generator | None) -> None:
        self.base.encode(rng)

    def count(self, idx: np.ndarray) -> int:
        return len(idx)

    def batch(self, idx: np.ndarray, device) -> tuple:
        """Left-padded prompt + gold label word per example, and the targets of the last ``keep`` positions
        (the module docstring): each label-word token at the position that predicts it (the token before it),
        -100 elsewhere."""
        import torch

        pad = self.tokenizer.pad_token_id
        rows, targets = [], []
        for i in idx:
            prompt, word = list(self.base.ids[i]), list(self.words.ids[int(self.base.labels[i])])
            rows.append(prompt + word)
            targets.append([IGNORE] * (len(prompt) - 1) + word + [IGNORE])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for r, (row, target) in enumerate(zip(rows, targets)):
            start = width - len(row)
            ids[r, start:], mask[r, start:], y[r, start:] = torch.as_tensor(row), 1, torch.as_tensor(target)
        keep = min(width, max(len(w) for w in self.words.ids) + 1)
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp_min(0)}
        return {**{k: v.to(device) for k, v in inputs.items()}, "logits_to_keep": keep}, y[:, -keep:].to(device)

    def loss(self, logits, y, reduction: str = "mean"):
        """``-log P(gold label word | prompt)`` per example (its tokens' cross-entropies summed); mean or sum
        over the examples."""
        import torch

        per_token = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y, ignore_index=IGNORE,
                                                      reduction="none")
        per_example = per_token.sum(1)
        return per_example.sum() if reduction == "sum" else per_example.mean()

    def validate(self, model, device) -> dict[str, float]:
        from probe.models.label_words import LabelWordModel

        return self.base.validate(LabelWordModel(model, self.words), device)

    def describe(self, scores: dict[str, float]) -> str:
        return self.base.describe(scores)
