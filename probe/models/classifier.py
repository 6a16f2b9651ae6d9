"""Sequence classifiers: prediction, and the fine-tuning objective (one label per text).

The counterpart of :mod:`probe.models.tagger` for text classification. The loop both share is
:func:`probe.models.finetune.finetune_objective`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from probe.config import FinetuneConfig
from probe.models.batching import length_sorted_batches, pad_batch, tokenize
from probe.models.compute import autocast
from probe.models.finetune import TrainingLog, finetune_objective


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


class SequenceObjective:
    """Sequence classification: one label per text, cross-entropy on the classifier logits,
    validation accuracy. Augmentation: word deletion and counterfactual planting (:mod:`probe.data.augment`)."""

    monitor = "validation_accuracy"
    monitor_label = "validation accuracy"

    def __init__(self, tokenizer, train_texts: list[str], train_labels: np.ndarray, val_texts: list[str],
                 val_labels: np.ndarray, max_length: int, cfg: FinetuneConfig,
                 planted: list[tuple[str, int, int]] | None = None):
        import torch

        self.tokenizer, self.max_length, self.aug, self.planted = tokenizer, max_length, cfg.augmentation, planted
        self.train_texts, self.train_labels = train_texts, train_labels
        self.val_texts, self.val_labels = val_texts, val_labels
        self.labels = torch.as_tensor(train_labels, dtype=torch.long)
        self.n_train, self.n_val = len(train_texts), len(val_texts)
        self.ids: list[list[int]] = []

    def encode(self, rng: np.random.Generator | None) -> None:
        texts = self.train_texts
        if rng is not None:
            from probe.data.augment import counterfactual_plant, delete_words  # looked up per call (tests patch it)

            texts = delete_words(texts, self.aug.word_deletion, rng)
            if self.aug.counterfactual_rate > 0:
                texts, _ = counterfactual_plant(texts, self.train_labels, self.planted, self.aug.counterfactual_rate,
                                                rng)
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
    callback: Callable[[str, dict], None] | None = None,
) -> TrainingLog:
    """Fine-tune ``model`` in place with ``cfg.strategy``; validation accuracy after every epoch goes into the log.

    ``model`` is a classifier from :func:`probe.models.backbones.build_classifier`, or for ``lora`` the peft model that
    :func:`probe.models.strategies.prepare_model` returned (other strategies are prepared here).
    ``planted``: ``(token, target class index, max_position)`` per planted feature, needed by
    counterfactual augmentation. ``callback(event, info)`` sees ``phase_start`` / ``phase_end``
    (``phase``, ``model``), ``step`` (``phase``, ``loss``, ``l2_sp``), ``perturbation`` (``delta``,
    ``mask``: the adversarial perturbation of a batch) and ``epoch_end`` (``epoch``,
    ``validation_accuracy``, ``model``).

    The loop itself is :func:`probe.models.finetune.finetune_objective` (shared with taggers,
    :func:`probe.models.tagger.finetune_tagger`); see there for the regularisers.
    """
    objective = SequenceObjective(tokenizer, train_texts, train_labels, val_texts, val_labels, max_length, cfg,
                                  planted)
    return finetune_objective(model, objective, cfg, seed, device, progress, planted=planted, callback=callback)
