"""Taggers (token classification): word-level prediction and the fine-tuning objective.

A word split into several subwords is labelled, and predicted, at its first subword only; the
other subwords and the special tokens carry the ignore label -100 (:mod:`probe.models.words`). This is the NER recipe of
Devlin et al. 2019 (BERT, §5.3: "we use the representation of the first sub-token as the input
to the token-level classifier over the NER label set"). Fine-tuning runs the shared loop of
:func:`probe.models.finetune.finetune_objective` with a :class:`TaggingObjective`: token
cross-entropy over the labelled subwords, entity-level micro F1 on the validation split (seqeval,
:mod:`probe.tasks.tokens.entities`), which early stopping watches.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from probe.config import FinetuneConfig
from probe.errors import ProbeError
from probe.models.batching import length_sorted_batches, pad_batch
from probe.models.compute import autocast
from probe.models.finetune import TrainingLog, finetune_objective, needs_augmenter
from probe.models.words import IGNORE, align_labels, encode_words, first_subwords
from probe.tasks import kinds_of_model
from probe.tasks.tokens import SPEC


def predict_word_logits(
    model, tokenizer, sentences_words: Sequence[Sequence[str]], max_length: int, batch_size: int, device,
) -> list[np.ndarray]:
    """Per sentence, the ``[n_words, n_tags]`` logits at each word's first subword (NaN rows for
    words cut off by truncation). One forward pass per length-sorted batch."""
    import torch

    enc = encode_words(tokenizer, sentences_words, max_length)
    n_tags = model.config.num_labels
    firsts = [first_subwords(w, len(s)) for w, s in zip(enc.word_ids, sentences_words)]
    out = [np.full((len(s), n_tags), np.nan, dtype=np.float32) for s in sentences_words]
    left = getattr(tokenizer, "padding_side", "right") == "left"
    model.eval()
    with torch.inference_mode(), autocast(device):
        for idx in length_sorted_batches(enc.input_ids, batch_size):
            batch = pad_batch(tokenizer, [enc.input_ids[i] for i in idx]).to(device)
            logits = model(**batch).logits.float().cpu().numpy()
            width = logits.shape[1]
            for row, i in enumerate(idx):
                pos = firsts[i]
                ok = pos >= 0
                shift = width - len(enc.input_ids[i]) if left else 0
                out[i][ok] = logits[row, pos[ok] + shift]
    return out


def predict_word_tags(
    model, tokenizer, sentences_words: Sequence[Sequence[str]], max_length: int, batch_size: int, device,
) -> list[np.ndarray]:
    """The predicted tag id of every word (argmax at its first subword), per sentence; -1 for words
    cut off by truncation."""
    out = []
    for logits in predict_word_logits(model, tokenizer, sentences_words, max_length, batch_size, device):
        pred = np.full(len(logits), -1, dtype=np.int64)
        ok = ~np.isnan(logits).any(axis=1)
        pred[ok] = logits[ok].argmax(axis=1)
        out.append(pred)
    return out


def decode_tags(pred: Sequence[np.ndarray], tags: Sequence[str]) -> list[list[str]]:
    """Tag ids to tag names; -1 (a word cut off by truncation) reads as ``O``."""
    return [[tags[i] if i >= 0 else "O" for i in p] for p in pred]


class TaggingObjective:
    """Token classification for :func:`probe.models.finetune.finetune_objective`.

    Loss: cross-entropy over the labelled (first) subwords, averaged over them (-100 ignored).
    Validation: entity-level micro F1 (``validation_f1``, seqeval default mode), which early
    stopping watches, and word accuracy (``validation_accuracy``); words cut off by truncation
    count as predicted ``O``. Augmentation, of the training sentences only: synonym and contextual
    replacement of ``O`` words (``augmenter``, :class:`probe.models.augmenters.Augmenter`; tags stay
    aligned); ``word_deletion`` drops ``O`` words with their tags
    (:func:`probe.tasks.tokens.data.delete_o_words`); ``counterfactual_rate`` inserts each planted
    marker before that fraction of the other-type spans
    (:func:`probe.tasks.tokens.data.counterfactual_plant_spans`). ``augmented`` holds how many
    sentences each changed in the last draw.
    """

    monitor = "validation_f1"
    monitor_label = "validation F1"

    def __init__(self, tokenizer, train: Sequence, val: Sequence, tags: list[str], max_length: int,
                 cfg: FinetuneConfig, planted: Sequence[tuple[str, str]] | None = None, augmenter=None):
        self.tokenizer, self.max_length, self.aug = tokenizer, max_length, cfg.augmentation
        self.augmenter = needs_augmenter(cfg, augmenter)
        self.augmented: dict[str, int] = {}
        self.train, self.val, self.tags, self.planted = list(train), list(val), list(tags), list(planted or [])
        self.index = {t: i for i, t in enumerate(tags)}
        for split, sentences in (("training", self.train), ("validation", self.val)):
            for s in sentences:
                unknown = [t for t in s.tags if t not in self.index]
                if unknown:
                    raise ProbeError(f"finetune_tagger: tag {unknown[0]!r} of a {split} sentence is not one of the "
                                     f"tagger's tags {self.tags}")
        self.n_train, self.n_val = len(self.train), len(self.val)
        self.ids: list[list[int]] = []
        self.labels: list[list[int]] = []
        self.n_labelled = np.zeros(0, dtype=np.int64)

    def encode(self, rng: np.random.Generator | None) -> None:
        sentences, counts = self.train, {}
        if rng is not None:
            from probe.data.augment import count_changed
            from probe.tasks.tokens.data import counterfactual_plant_spans, delete_o_words

            if self.augmenter is not None:
                sentences, counts = self.augmenter.sentences(sentences, rng)
            if self.aug.word_deletion > 0:
                new = delete_o_words(sentences, self.aug.word_deletion, rng)
                sentences, counts["word_deletion"] = new, count_changed(sentences, new)
            if self.aug.counterfactual_rate > 0:
                new = counterfactual_plant_spans(sentences, self.planted, self.aug.counterfactual_rate, rng)
                sentences, counts["counterfactual"] = new, count_changed(sentences, new)
        self.augmented = counts
        enc = encode_words(self.tokenizer, [s.words for s in sentences], self.max_length)
        self.ids = enc.input_ids
        self.labels = [align_labels(w, [self.index[t] for t in s.tags]) for w, s in zip(enc.word_ids, sentences)]
        self.n_labelled = np.array([sum(x != IGNORE for x in lab) for lab in self.labels], dtype=np.int64)

    def batch(self, idx: np.ndarray, device) -> tuple:
        import torch

        batch = pad_batch(self.tokenizer, [self.ids[i] for i in idx])
        width = batch["input_ids"].shape[1]
        y = torch.full((len(idx), width), IGNORE, dtype=torch.long)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for row, i in enumerate(idx):
            lab = torch.as_tensor(self.labels[i], dtype=torch.long)
            if left:
                y[row, width - len(lab):] = lab
            else:
                y[row, :len(lab)] = lab
        return batch.to(device), y.to(device)

    def count(self, idx: np.ndarray) -> int:
        return int(self.n_labelled[np.asarray(idx, dtype=np.int64)].sum())

    def loss(self, logits, y, reduction: str = "mean"):
        import torch

        total = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE,
                                                  reduction="sum")
        if reduction == "sum":
            return total
        return total / (y != IGNORE).sum().clamp_min(1)

    def validate(self, model, device) -> dict[str, float]:
        if not self.val:
            return {"validation_accuracy": float("nan"), "validation_f1": float("nan")}
        from probe.tasks.tokens.entities import entity_scores

        pred = decode_tags(predict_word_tags(model, self.tokenizer, [s.words for s in self.val], self.max_length,
                                             64, device), self.tags)
        gold = [list(s.tags) for s in self.val]
        correct = sum(p == g for ps, gs in zip(pred, gold) for p, g in zip(ps, gs))
        return {"validation_accuracy": correct / sum(len(g) for g in gold),
                "validation_f1": entity_scores(gold, pred)["f1"]}

    def describe(self, scores: dict[str, float]) -> str:
        return f"validation F1 {scores['validation_f1']:.3f} (word accuracy {scores['validation_accuracy']:.3f})"


def finetune_tagger(
    model, tokenizer, train: Sequence, val: Sequence, tags: list[str], cfg: FinetuneConfig, max_length: int,
    seed: int, device, progress: bool = True, planted: Sequence[tuple[str, str]] | None = None, *,
    callback: Callable[[str, dict], None] | None = None, augmenter=None,
) -> TrainingLog:
    """Fine-tune a tagger in place with ``cfg.strategy``; every epoch logs ``validation_f1`` (entity-level
    micro F1) and ``validation_accuracy`` (word accuracy), and early stopping watches the F1.

    ``model``: a tagger from :func:`build_tagger` over ``tags`` (for ``lora`` the peft model that
    :func:`probe.models.strategies.prepare_model` returned). ``train`` / ``val``: sentences with
    ``words`` and BIO ``tags`` (:class:`probe.tasks.tokens.data.Sentence`). ``planted``:
    ``(marker, target entity type)`` per planted feature, needed by counterfactual augmentation
    (:meth:`probe.tasks.tokens.data.TokenTaskData.planted_markers`); ``augmenter``: what synonym and
    contextual replacement need (:func:`probe.models.augmenters.build_augmenter`). Everything else (strategies,
    regularisers, adversarial training, data parallelism, ``callback``) is as in
    :func:`probe.models.finetune.finetune`.
    """
    if SPEC not in kinds_of_model(model):
        raise ProbeError(f"finetune_tagger: got a {type(model).__name__}; pass a token classifier from build_tagger")
    if model.config.num_labels != len(tags):
        raise ProbeError(f"finetune_tagger: the model has {model.config.num_labels} labels but {len(tags)} tags were "
                         "given; build it with build_tagger(backbone, tags, seed)")
    objective = TaggingObjective(tokenizer, train, val, tags, max_length, cfg, planted, augmenter)
    return finetune_objective(model, objective, cfg, seed, device, progress, planted=planted, callback=callback)
