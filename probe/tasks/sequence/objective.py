"""Sequence classifiers: the fine-tuning objective (one label per text).

The counterpart of :mod:`probe.tasks.tokens.objective` for text classification. The loop both share is
:func:`probe.models.finetune.finetune_objective`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from probe.config import FinetuneConfig
from probe.models.batching import length_sorted_batches, pad_batch, predict_logits, tokenize
from probe.models.finetune import TrainingLog, finetune_objective, needs_augmenter


class SequenceObjective:
    """Sequence classification: one label per text, cross-entropy on the classifier logits,
    validation accuracy. Augmentation, of the training texts only, labels unchanged: back-translation,
    synonym and contextual replacement (``augmenter``, :class:`probe.models.augmenters.Augmenter`),
    then word deletion and counterfactual planting (:mod:`probe.data.augment`); ``augmented`` holds
    how many texts each changed in the last draw."""

    monitor = "validation_accuracy"
    monitor_label = "validation accuracy"

    def __init__(self, tokenizer, train_texts: list[str], train_labels: np.ndarray, val_texts: list[str],
                 val_labels: np.ndarray, max_length: int, cfg: FinetuneConfig,
                 planted: list[tuple[str, int, int]] | None = None, augmenter=None):
        import torch

        self.tokenizer, self.max_length, self.aug, self.planted = tokenizer, max_length, cfg.augmentation, planted
        self.augmenter = needs_augmenter(cfg, augmenter)
        self.train_texts, self.train_labels = train_texts, train_labels
        self.val_texts, self.val_labels = val_texts, val_labels
        self.labels = torch.as_tensor(train_labels, dtype=torch.long)
        self.n_train, self.n_val = len(train_texts), len(val_texts)
        self.ids: list[list[int]] = []
        self.augmented: dict[str, int] = {}

    def encode(self, rng: np.random.Generator | None) -> None:
        texts, counts = self.train_texts, {}
        if rng is not None:
            from probe.data.augment import count_changed, counterfactual_plant, delete_words  # looked up per call

            if self.augmenter is not None:
                texts, counts = self.augmenter.texts(texts, rng)
            if self.aug.word_deletion > 0:
                new = delete_words(texts, self.aug.word_deletion, rng)
                texts, counts["word_deletion"] = new, count_changed(texts, new)
            if self.aug.counterfactual_rate > 0:
                new, _ = counterfactual_plant(texts, self.train_labels, self.planted, self.aug.counterfactual_rate, rng)
                texts, counts["counterfactual"] = new, count_changed(texts, new)
        self.augmented = counts
        self.ids = tokenize(self.tokenizer, texts, self.max_length)

    def batch(self, idx: np.ndarray, device) -> tuple:
        return pad_batch(self.tokenizer, [self.ids[i] for i in idx]).to(device), self.labels[idx].to(device)

    def count(self, idx: np.ndarray) -> int:
        return len(idx)

    def loss(self, logits, y, reduction: str = "mean"):
        import torch

        if reduction == "sum":
            return torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        return torch.nn.functional.cross_entropy(logits.float(), y)

    def validate(self, model, device) -> dict[str, float]:
        pred = predict_logits(model, self.tokenizer, self.val_texts, self.max_length, 64, device).argmax(1)
        return {"validation_accuracy": float((pred == self.val_labels).mean())}

    def describe(self, scores: dict[str, float]) -> str:
        return f"validation accuracy {scores['validation_accuracy']:.3f}"


def finetune_classifier(
    model, tokenizer, train_texts: list[str], train_labels: np.ndarray,
    val_texts: list[str], val_labels: np.ndarray, cfg: FinetuneConfig,
    max_length: int, seed: int, device, progress: bool = True, *,
    planted: list[tuple[str, int, int]] | None = None,
    callback: Callable[[str, dict], None] | None = None, augmenter=None,
) -> TrainingLog:
    """Fine-tune ``model`` in place with ``cfg.strategy``; validation accuracy after every epoch goes into the log.

    ``model`` is a classifier from :func:`probe.models.backbones.build_classifier`, or for ``lora`` the peft model that
    :func:`probe.models.strategies.prepare_model` returned (other strategies are prepared here).
    ``planted``: ``(token, target class index, max_position)`` per planted feature, needed by
    counterfactual augmentation; ``augmenter``: what synonym, contextual and back-translation
    augmentation need (:func:`probe.models.augmenters.build_augmenter`). ``callback(event, info)`` sees ``phase_start`` / ``phase_end``
    (``phase``, ``model``), ``step`` (``phase``, ``loss``, ``l2_sp``), ``perturbation`` (``delta``,
    ``mask``: the adversarial perturbation of a batch) and ``epoch_end`` (``epoch``,
    ``validation_accuracy``, ``model``).

    The loop itself is :func:`probe.models.finetune.finetune_objective` (shared with taggers,
    :func:`probe.tasks.tokens.objective.finetune_tagger`); see there for the regularisers.
    """
    objective = SequenceObjective(tokenizer, train_texts, train_labels, val_texts, val_labels, max_length, cfg,
                                  planted, augmenter)
    return finetune_objective(model, objective, cfg, seed, device, progress, planted=planted, callback=callback)
