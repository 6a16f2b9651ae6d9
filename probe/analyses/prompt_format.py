"""Prompt-format sensitivity of a label-word classifier (docs/design.md §10): the model under format variants
of its training template, each a paired comparison with the training template on the same texts.

Sclar et al. (2023) found that formatting alone (separators, spacing, casing) moves few-shot accuracy by
tens of points; Zhao et al. (2021) that label words carry their own biases. A model whose predictions
move with a meaning-preserving format change relies on the format, a shortcut of prompted models. Per
variant and model: ``format_accuracy``, ``format_accuracy_change`` (variant minus training template, per example,
paired) and ``format_flip_rate`` (share of texts whose prediction changes), each with a bootstrap interval
over the texts; across the variants and the training template, ``format_spread`` (largest minus smallest
accuracy), its
interval from resampling the texts jointly for all variants.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probe.analyses.stats import bootstrap_indices, bootstrap_mean, metric_row
from probe.data.prompts import template_variants
from probe.errors import ProbeError
from probe.models.batching import predict_logits, tokenize
from probe.models.label_words import LabelWordModel, PromptTokenizer, label_words

TRAINING = "training template"


def _rng(seed: int) -> np.random.Generator:
    """The same resampled texts for every variant and metric of a seed (intervals of one table are paired)."""
    return np.random.default_rng([seed, 11])


def variant_readers(tokenizer: PromptTokenizer, classes: list[str]) -> list[tuple[str, PromptTokenizer]]:
    """The training template's reader and one per format variant (:func:`probe.data.prompts.template_variants`);
    a variant whose label words collide or vanish for this tokenizer is left out."""
    words, out = tokenizer.words, [(TRAINING, tokenizer)]
    synonyms = getattr(tokenizer, "synonyms", None)
    for name, template, ws in template_variants(words.prompt, list(words.words), synonyms):
        try:
            out.append((name, PromptTokenizer(tokenizer.inner, label_words(tokenizer.inner, template, ws, classes,
                                                                           words.pair))))
        except ProbeError:
            continue
    return out


def format_predictions(lm, readers: list[tuple[str, PromptTokenizer]], texts: list[str], classes: list[str],
                       max_length: int, batch_size: int, device) -> dict[str, np.ndarray]:
    """Predicted class per text under each reader's template and label words."""
    return {name: predict_logits(LabelWordModel(lm, r.words, classes), r, texts, max_length, batch_size,
                                 device).argmax(1) for name, r in readers}


def prompt_format_table(models: dict, tokenizer: PromptTokenizer, texts: list[str], labels: np.ndarray,
                        classes: list[str], max_length: int, batch_size: int, device, n_boot: int,
                        seed: int) -> pd.DataFrame:
    """Rows per model (``{"pretrained": lm, "finetuned": lm}``, causal LMs) and variant; ``identical_inputs``
    is the share of texts whose token ids (and label words) the variant leaves unchanged."""
    readers = variant_readers(tokenizer, classes)
    base_ids = tokenize(tokenizer, texts, max_length)
    same = {name: float(np.mean([a == b for a, b in zip(tokenize(r, texts, max_length), base_ids)]))
            if r.words.ids == tokenizer.words.ids else 0.0 for name, r in readers}
    labels = np.asarray(labels)
    rows = []
    for model_name, lm in models.items():
        preds = format_predictions(lm, readers, texts, classes, max_length, batch_size, device)
        correct = {name: (p == labels).astype(float) for name, p in preds.items()}
        for name, _ in readers:
            keys = dict(model=model_name, layer=None, property=name, n=len(texts), identical_inputs=same[name])
            rows.append(metric_row(bootstrap_mean(correct[name], n_boot, _rng(seed)), metric="format_accuracy", **keys))
            if name != TRAINING:
                rows.append(metric_row(bootstrap_mean(correct[name] - correct[TRAINING], n_boot, _rng(seed)),
                                       metric="format_accuracy_change", **keys))
                rows.append(metric_row(bootstrap_mean((preds[name] != preds[TRAINING]).astype(float), n_boot,
                                                      _rng(seed)),
                                       metric="format_flip_rate", **keys))
        matrix = np.stack([correct[name] for name, _ in readers])  # [variants, texts]
        boot = matrix[:, bootstrap_indices(len(texts), n_boot, _rng(seed))].mean(-1)
        spread = boot.max(0) - boot.min(0)
        acc = matrix.mean(1)
        rows.append(metric_row((float(acc.max() - acc.min()), *map(float, np.quantile(spread, [0.025, 0.975]))),
                               model=model_name, layer=None, property="all variants", metric="format_spread",
                               n=len(texts), identical_inputs=float("nan")))
    return pd.DataFrame(rows)
