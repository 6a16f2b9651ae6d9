"""A linear-probe classifier on a frozen pretrained encoder, shaped like a HF classifier.

docs/design.md §5: the *pretrained* model is explained on the same task as the fine-tuned one
through a linear probe head trained on its frozen representation (Alain & Bengio 2017;
Belinkov 2022 for probing classifiers). :class:`ProbeHeadClassifier` is the encoder + mean
pooling over real tokens (attention mask 1, special tokens included, as in
``probe.representations.extract``) of the last layer + one ``nn.Linear``. Its weights come
from the run's probe (:class:`probe.analyses.logistic_probe.LogisticProbe`: scikit-learn's
``StandardScaler`` + ``LogisticRegression`` objective) fitted on pooled activations, with the
standardisation folded into the layer:

    w·((x − μ) / σ) + b  =  (w / σ)·x + (b − Σ_j w_j μ_j / σ_j).

For two classes the probe has one decision function d(x); the logits are ``[−d(x)/2, d(x)/2]``, so
their softmax is its ``predict_proba`` and ``logits[:, 1] − logits[:, 0]`` is ``decision_function``.
Both logits depend on x: with ``[0, d(x)]`` the class-0 logit would be a constant, with zero gradient,
and every attribution of an example predicted as class 0 would be exactly zero.
The module exposes ``forward(input_ids, attention_mask) -> .logits``,
``get_input_embeddings()`` and ``.config.num_labels``: the attribution code treats it as it
treats a fine-tuned ``AutoModelForSequenceClassification``.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch import nn

from probe.models.adapter import ModelAdapter


class ProbeHeadClassifier(nn.Module):
    """``encoder`` (frozen use) + masked mean pooling of the last layer + a linear head."""

    def __init__(self, encoder: nn.Module, weight: torch.Tensor | np.ndarray, bias: torch.Tensor | np.ndarray,
                 id2label: dict[int, str] | None = None) -> None:
        super().__init__()
        self.encoder = getattr(encoder, "base_model", encoder)
        weight = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
        bias = torch.as_tensor(np.asarray(bias), dtype=torch.float32)
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        self.config = copy.deepcopy(self.encoder.config)
        self.config.num_labels = weight.shape[0]
        if id2label is not None:
            self.config.id2label = dict(id2label)
            self.config.label2id = {v: k for k, v in id2label.items()}
        self.to(next(self.encoder.parameters()).device)

    @property
    def base_model(self) -> nn.Module:
        """The frozen encoder, as a classifier's ``base_model`` is (what the model adapter looks into)."""
        return self.encoder

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def pooled(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
               **kwargs) -> torch.Tensor:
        """The last layer pooled as the model adapter pools it: the mean over tokens with attention
        mask 1 (encoders), or the last such token (decoders)."""
        kwargs.pop("labels", None)
        kwargs.pop("output_hidden_states", None)
        kwargs.pop("return_dict", None)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return ModelAdapter(self.encoder).pool(out.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.head(self.pooled(input_ids, attention_mask, **kwargs)))


def folded_linear(scaler, classifier=None) -> tuple[np.ndarray, np.ndarray]:
    """``(weight [K, H], bias [K])`` of the linear map equal to ``classifier`` after ``scaler``.

    ``scaler`` has ``mean_`` / ``scale_`` (a ``StandardScaler``), ``classifier`` ``coef_`` /
    ``intercept_`` (a ``LogisticRegression``); a fitted one-problem :class:`LogisticProbe` has
    all four and is passed alone. Binary: ``weight = [−w/2, w/2]``, ``bias = [−b/2, b/2]`` (logit
    difference = decision function; both logits depend on the input, see the module docstring).
    """
    classifier = scaler if classifier is None else classifier
    coef = np.asarray(classifier.coef_, dtype=np.float64)
    intercept = np.asarray(classifier.intercept_, dtype=np.float64)
    with_mean, with_std = getattr(scaler, "with_mean", True), getattr(scaler, "with_std", True)
    mean = np.asarray(scaler.mean_ if with_mean else np.zeros(coef.shape[1]), dtype=np.float64)
    scale = np.asarray(scaler.scale_ if with_std else np.ones(coef.shape[1]), dtype=np.float64)
    weight = coef / scale
    bias = intercept - weight @ mean
    if weight.shape[0] == 1:
        weight = np.vstack([-weight / 2, weight / 2])
        bias = np.concatenate([-bias / 2, bias / 2])
    return weight, bias


def pooled_last_layer(encoder: nn.Module, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    """``[n, hidden]`` last-layer activations pooled as the model adapter pools them, in the order of ``texts``."""
    from probe.representations.extract import extract_pooled

    encoder = getattr(encoder, "base_model", encoder)
    was_training = encoder.training
    try:
        out = extract_pooled(encoder, tokenizer, list(texts), max_length, batch_size,
                             next(encoder.parameters()).device, progress=False)
    finally:
        encoder.train(was_training)
    return out["activations"][-1]


def fit_probe_head_on_features(
    encoder: nn.Module, features: np.ndarray, labels: np.ndarray, *, num_labels: int | None = None, C: float = 1.0,
    max_iter: int = 2000, seed: int = 0, id2label: dict[int, str] | None = None, device: str = "auto",
) -> ProbeHeadClassifier:
    """Fit the run's probe (:class:`LogisticProbe`, on ``device``) on pooled ``features`` and fold it
    into a :class:`ProbeHeadClassifier` (the fitted probe kept as ``probe_``). ``seed`` is kept for
    the signature: the fit is deterministic."""
    from probe.analyses.logistic_probe import LogisticProbe

    labels = np.asarray(labels)
    k = int(num_labels if num_labels is not None else labels.max() + 1)
    present = np.unique(labels)
    if present.size != k or present.min() != 0 or present.max() != k - 1:
        raise ValueError(f"probe head: labels must cover classes 0..{k - 1}; found {present.tolist()}")
    probe = LogisticProbe(C=C, max_iter=max_iter, device=device).fit(features, labels)
    weight, bias = folded_linear(probe)
    head = ProbeHeadClassifier(encoder, weight, bias, id2label)
    head.probe_ = probe
    return head


def fit_probe_head(
    encoder: nn.Module, tokenizer, texts: Sequence[str], labels: np.ndarray, *, max_length: int, batch_size: int = 32,
    C: float = 1.0, max_iter: int = 2000, seed: int = 0, num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
) -> ProbeHeadClassifier:
    """Pool the frozen ``encoder``'s last layer on ``texts`` and fit the probe head on ``labels``."""
    feats = pooled_last_layer(encoder, tokenizer, texts, max_length, batch_size)
    return fit_probe_head_on_features(encoder, feats, labels, num_labels=num_labels, C=C, max_iter=max_iter,
                                      seed=seed, id2label=id2label)
