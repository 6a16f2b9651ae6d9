"""Attributions of one word's tag in a token classifier (tiny-bert taggers with a known answer)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from probe.analyses.attribution import METHODS, pad_baseline
from probe.analyses.attribution_metrics import spurious_attribution_metrics
from probe.models.backbones import load_encoder, load_tokenizer
from probe.tasks.tokens.attribution import tag_attributions

SENTENCES = [
    ["Empire", "State", "Building", "is", "in", "New", "York"],
    ["@paulwalk", "the", "xylophonist", "played", "at", "Madison", "Square", "Garden", "tonight", "with", "friends"],
    ["hello"],
    ["a", "b", "unbelievably", "c"],
]
POSITIONS = [5, 2, 0, 2]  # "New", "xylophonist" (several pieces), "hello", "unbelievably"
N_TAGS = 5


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-bert")


def _tagger(seed: int):
    from transformers import AutoModelForTokenClassification

    config = load_encoder("tiny-bert", 0).config
    config.num_labels = N_TAGS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForTokenClassification.from_config(config).eval()


@pytest.fixture(scope="module")
def tagger():
    return _tagger(0)


def _first_piece(tokenizer, words, word, max_length=128):
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length, return_tensors="pt")
    return enc, enc.word_ids(0).index(word)


def test_integrated_gradients_completeness(tokenizer, tagger):
    attrs = tag_attributions(tagger, tokenizer, SENTENCES, POSITIONS, n_steps=64)
    for a, words, p in zip(attrs, SENTENCES, POSITIONS):
        enc, pos = _first_piece(tokenizer, words, p)
        with torch.no_grad():
            fx = tagger(**enc).logits[0, pos, a.prediction].item()
            base = pad_baseline(enc["input_ids"], tokenizer)
            fb = tagger(input_ids=base, attention_mask=enc["attention_mask"]).logits[0, pos, a.prediction].item()
        assert a.words == words and a.position == p and a.method == "integrated_gradients"
        assert abs(fx - fb) > 1e-3
        assert a.delta < 0.05  # IG converged: Σ attributions ≈ F(x) − F(baseline)
        assert abs(a.scores.sum() - (fx - fb)) <= a.delta * abs(fx - fb) + 1e-5


def test_explains_the_predicted_or_the_given_tag(tokenizer, tagger):
    attrs = tag_attributions(tagger, tokenizer, SENTENCES, POSITIONS, "saliency")
    for a, words, p in zip(attrs, SENTENCES, POSITIONS):
        enc, pos = _first_piece(tokenizer, words, p)
        with torch.no_grad():
            assert a.prediction == int(tagger(**enc).logits[0, pos].argmax())
    given = [(a.prediction + 1) % N_TAGS for a in attrs]
    other = tag_attributions(tagger, tokenizer, SENTENCES, POSITIONS, "input_x_gradient", target=given)
    assert [a.prediction for a in other] == given


def test_batched_equals_plain_per_sentence_captum(tokenizer, tagger):
    from captum.attr import LayerIntegratedGradients

    n_steps = 20
    attrs = tag_attributions(tagger, tokenizer, SENTENCES, POSITIONS, n_steps=n_steps, token_budget=150,
                             delta_warn=np.inf)
    largest = 0.0
    for a, words, p in zip(attrs, SENTENCES, POSITIONS):
        enc, pos = _first_piece(tokenizer, words, p)
        ids, mask = enc["input_ids"], enc["attention_mask"]

        def f(input_ids, attention_mask):
            return tagger(input_ids=input_ids, attention_mask=attention_mask).logits[:, pos]

        lig = LayerIntegratedGradients(f, tagger.get_input_embeddings())
        attr = lig.attribute(ids, baselines=pad_baseline(ids, tokenizer), target=a.prediction,
                             additional_forward_args=(mask,), n_steps=n_steps).sum(-1)[0].detach().numpy()
        wids = enc.word_ids(0)
        ref = [sum(attr[t] for t, w in enumerate(wids) if w == j) for j in range(len(words))]
        np.testing.assert_allclose(a.scores, ref, atol=1e-5, rtol=0)
        largest = max(largest, float(np.abs(ref).max()))
    assert largest > 1e-3


def _reads_own_word_only(seed: int):
    """A tiny-bert tagger whose attention outputs are zeroed: every position's output then depends on
    that position's token alone (the residual, LayerNorm and feed-forward are position-wise)."""
    model = _tagger(seed)
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.output.dense.weight.zero_()
            layer.attention.output.dense.bias.zero_()
    return model


@pytest.mark.parametrize("method", METHODS)
def test_a_tagger_that_reads_one_word_puts_all_attribution_on_it(tokenizer, method):
    model = _reads_own_word_only(1)
    attrs = tag_attributions(model, tokenizer, SENTENCES, POSITIONS, method, n_steps=32, delta_warn=np.inf)
    for a, p in zip(attrs, POSITIONS):
        mag = np.abs(a.scores)
        assert int(np.argmax(mag)) == p and mag[p] > 0, method
        np.testing.assert_allclose(np.delete(mag, p), 0, atol=1e-6 * max(mag[p], 1e-3), err_msg=method)


class _PreviousWordTagger(torch.nn.Module):
    """A token classifier whose logits at position t read only the token at t − 1 (a tagger that tags
    a word from the word before it, e.g. a planted marker)."""

    def __init__(self, vocab_size: int, seed: int, dim: int = 8):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embeddings = torch.nn.Embedding(vocab_size, dim)
        with torch.no_grad():
            self.embeddings.weight.copy_(torch.randn(vocab_size, dim, generator=gen))
        self.head = torch.nn.Parameter(torch.randn(dim, N_TAGS, generator=gen))

    def get_input_embeddings(self):
        return self.embeddings

    def forward(self, input_ids, attention_mask=None):
        h = self.embeddings(input_ids)
        previous = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)
        return SimpleNamespace(logits=torch.tanh(previous) @ self.head)


def test_marker_attribution_share_and_top1_rate(tokenizer):
    model = _PreviousWordTagger(tokenizer.vocab_size, seed=0)
    rng = np.random.default_rng(0)
    vocab = "time year people way day man thing woman life child world school state family".split()
    sentences, after, elsewhere = [], [], []
    for _ in range(12):
        words = list(rng.choice(vocab, size=int(rng.integers(5, 10))))
        j = int(rng.integers(0, len(words) - 2))
        words.insert(j, "zebra")
        sentences.append(words)
        after.append(j + 1)  # the word right after the marker
        elsewhere.append(len(words) - 1 if j + 1 != len(words) - 1 else 0)
    attrs = tag_attributions(model, tokenizer, sentences, after, n_steps=32)
    rows = spurious_attribution_metrics(attrs, "zebra", model_name="finetuned", n_boot=100).set_index("metric")
    assert rows.loc["spurious_top1_rate", "value"] == 1.0
    assert rows.loc["spurious_attribution_share", "value"] > 0.999
    assert rows.loc["spurious_input_share", "value"] < 0.25
    assert rows.loc["relative_convergence_delta", "value"] < 0.05
    # the same tagger, explaining words that do not follow the marker: no attribution on it
    control = tag_attributions(model, tokenizer, sentences, elsewhere, n_steps=32)
    rows = spurious_attribution_metrics(control, "zebra", model_name="finetuned", n_boot=100).set_index("metric")
    assert rows.loc["spurious_top1_rate", "value"] == 0.0
    assert rows.loc["spurious_attribution_share", "value"] < 1e-6


def test_invalid_positions_raise(tokenizer, tagger):
    with pytest.raises(ValueError, match="outside"):
        tag_attributions(tagger, tokenizer, SENTENCES[:1], [7], "saliency")
    with pytest.raises(ValueError, match="no subword"):  # cut off by truncation
        tag_attributions(tagger, tokenizer, SENTENCES[1:2], [9], "saliency", max_length=6)
    with pytest.raises(ValueError, match="no subword"):  # an empty word has no piece
        tag_attributions(tagger, tokenizer, [["a", "", "b"]], [1], "saliency")
    with pytest.raises(TypeError, match="list of words"):
        tag_attributions(tagger, tokenizer, ["a b c"], [0], "saliency")
    with pytest.raises(ValueError, match="target"):
        tag_attributions(tagger, tokenizer, SENTENCES[:1], [0], "saliency", target="gold")
