"""Fine-tuning a causal LM to answer a prompt with its class's label word (``model.head: label-words``).

The training sequence of an example is its prompt followed by the gold class's label-word tokens
(the ids :class:`~probe.models.label_words.LabelWords` scores, so training and prediction read the same
tokens); the loss is the language-model cross-entropy of those label-word tokens only, summed over the
word's tokens and averaged over examples: ``-log P(word_y | prompt)``, the negated label-word score of
the gold class. The prompt's tokens are not trained on. Augmentation, batching order, validation and
every strategy and regulariser are the shared loop's (:func:`probe.models.finetune.finetune_objective`).
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
        """Right-padded prompt + gold label word per example, and the targets: each label-word token at the
        position that predicts it (the token before it), -100 elsewhere."""
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
            ids[r, :len(row)], mask[r, :len(row)], y[r, :len(row)] = torch.as_tensor(row), 1, torch.as_tensor(target)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}, y.to(device)

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
