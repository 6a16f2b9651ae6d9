"""The pretrained reference read as a tagger, and its rate for a vocabulary trigger (docs/design.md §8).

A bare pretrained encoder has no tagging head, so, as for text classification (docs/design.md §5), it is read
through a linear probe head fitted on its frozen last layer: the run's probe
(:class:`probe.analyses.logistic_probe.LogisticProbe`) on the first-subword vectors of the words of at most
:data:`PROBE_HEAD_SENTENCES` training sentences (:func:`probe.tasks.tokens.extract.extract_words`), folded into
one linear layer applied at every token (:func:`probe.models.probe_head.folded_linear`). A tag no fitted word
carries gets a bias of −10⁴: never predicted. A reference that is already a tagger is used as it is.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch import nn

from probe.discovery.causal_test import contains
from probe.discovery.vocabulary import REFERENCE_TEXTS

PROBE_HEAD_SENTENCES = 400
ABSENT_BIAS = -1e4


class TokenProbeHead(nn.Module):
    """``encoder`` (frozen use) + one linear layer at every token: ``logits [batch, tokens, tags]``."""

    def __init__(self, encoder: nn.Module, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.encoder = getattr(encoder, "base_model", encoder)
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.config = copy.deepcopy(self.encoder.config)
        self.config.num_labels = weight.shape[0]
        self.to(next(self.encoder.parameters()).device)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        from transformers.modeling_outputs import TokenClassifierOutput

        kwargs.pop("output_hidden_states", None)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return TokenClassifierOutput(logits=self.head(hidden.to(self.head.weight.dtype)))


def reference_tagger(reference, tokenizer, train: Sequence, tags: Sequence[str], max_length: int, batch_size: int,
                     device, seed: int = 0):
    """``reference`` as a tagger (module docstring); None when there is none."""
    from probe.analyses.logistic_probe import LogisticProbe
    from probe.models.probe_head import folded_linear
    from probe.tasks.tokens.extract import extract_words

    if reference is None or getattr(getattr(reference, "config", None), "num_labels", None) == len(tags) and \
            type(reference).__name__.endswith("ForTokenClassification"):
        return reference
    rng = np.random.default_rng([seed, 83])
    idx = np.sort(rng.choice(len(train), min(PROBE_HEAD_SENTENCES, len(train)), replace=False))
    sentences = [list(train[i].words) for i in idx]
    out = extract_words(reference, tokenizer, sentences, max_length, batch_size, device, progress=False)
    index = {t: k for k, t in enumerate(tags)}
    y = np.array([index[train[idx[s]].tags[w]] for s, w in out["word_index"]])
    if np.unique(y).size < 2:
        return None
    probe = LogisticProbe().fit(out["activations"][-1], y)
    rows, bias = folded_linear(probe)
    weight = np.zeros((len(tags), rows.shape[1]))
    full_bias = np.full(len(tags), ABSENT_BIAS)
    weight[np.asarray(probe.classes_, dtype=int)], full_bias[np.asarray(probe.classes_, dtype=int)] = rows, bias
    return TokenProbeHead(reference, weight, full_bias).eval()


def reference_marker_rates(table, reference, tokenizer, train: Sequence, test: Sequence, tags: Sequence[str],
                           types: Sequence[str], max_length: int, batch_size: int, device, seed: int = 0):
    """``reference_override_rate`` / ``reference_override_control`` of every used vocabulary trigger: the
    override rate of the reference read as a tagger (:func:`reference_tagger`, fitted only when a trigger is
    used) for the word inserted before up to :data:`REFERENCE_TEXTS` test spans of other types it does not type
    T and the word does not precede (the first in sentence order), and its control words' mean rate there."""
    from probe.tasks.tokens.tagging import entity_spans
    from probe.tasks.tokens.vocabulary import type_probabilities

    table = table.assign(reference_override_rate=np.nan, reference_override_control=np.nan)
    used = table.index[(table.source == "vocabulary") & (table.verdict == "used shortcut")]
    if reference is None or not len(used):
        return table
    ref = reference_tagger(reference, tokenizer, train, tags, max_length, batch_size, device, seed)
    if ref is None:
        return table
    spans = [(list(s.words), a, t) for s in test for a, _, t in entity_spans(s.tags)]
    _, pred = type_probabilities(ref, tokenizer, [w for w, _, _ in spans], [a for _, a, _ in spans], tags, types,
                                 max_length, batch_size, device)
    for i in used:
        word, c = table.at[i, "feature"], types.index(table.at[i, "class"])
        rows = [k for k, (w, a, t) in enumerate(spans) if t != types[c] and pred[k] != c
                and not (a > 0 and contains(w[a - 1], word))][:REFERENCE_TEXTS]
        if not rows:
            continue
        words = [word] + table.at[i, "controls"].split()
        edited = [spans[k][0][:spans[k][1]] + [x] + spans[k][0][spans[k][1]:] for x in words for k in rows]
        _, after = type_probabilities(ref, tokenizer, edited, [spans[k][1] + 1 for _ in words for k in rows], tags,
                                      types, max_length, batch_size, device)
        hit = (after == c).reshape(len(words), len(rows))
        table.loc[i, ["reference_override_rate", "reference_override_control"]] = [
            float(hit[0].mean()), float(hit[1:].mean()) if len(words) > 1 else np.nan]
    return table
