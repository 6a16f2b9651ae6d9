"""Word vectors equal the hidden states of a plain per-sentence forward pass at the right pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe.models.backbones import load_encoder, load_tokenizer
from probe.tasks.tokens.extract import extract_words, words_at

SENTENCES = [
    ["The", "xylophonist", "played", "unbelievably", "well", "."],
    ["@paulwalk", "it's", "#throwbackthursday", "http://t.co/abc"],
    ["ok"],
    "a much longer sentence with many ordinary words so that the batch holds very different lengths and "
    "padding matters a lot here".split(),
    ["Empire", "State", "", "Building", "NASA"],  # an empty word has no piece: it is left out
]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-bert")


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-bert", 0).eval()


@pytest.fixture(scope="module")
def tagger(encoder):
    from transformers import AutoModelForTokenClassification

    config = load_encoder("tiny-bert", 0).config
    config.num_labels = 5
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return AutoModelForTokenClassification.from_config(config).eval()


def _reference(model, tokenizer, sentences, max_length, pooling):
    """One sentence at a time, pieces mapped to words in a Python loop."""
    vectors, index, logits = [], [], []
    with torch.inference_mode():
        for s, words in enumerate(sentences):
            enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            out = model(**enc, output_hidden_states=True)
            hs = torch.stack(out.hidden_states)[:, 0]  # [L + 1, T, d]
            wids = enc.word_ids(0)
            for w in range(len(words)):
                pos = [p for p, x in enumerate(wids) if x == w]
                if not pos:
                    continue
                vectors.append(hs[:, pos[0]] if pooling == "first" else hs[:, pos].mean(1))
                index.append((s, w))
                if hasattr(out, "logits") and out.logits.dim() == 3:
                    logits.append(out.logits[0, pos[0]])
    return torch.stack(vectors, 1).numpy(), np.array(index), (torch.stack(logits).numpy() if logits else None)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_matches_per_sentence_forward_at_every_layer(tokenizer, encoder, pooling):
    res = extract_words(encoder, tokenizer, SENTENCES, 64, 8, CPU, pooling=pooling, progress=False)
    ref, index, _ = _reference(encoder, tokenizer, SENTENCES, 64, pooling)
    assert res["activations"].dtype == np.float32
    assert res["activations"].shape == (3, len(index), 32)
    np.testing.assert_array_equal(res["word_index"], index)
    np.testing.assert_allclose(res["activations"], ref, atol=1e-5, rtol=0)
    assert res["dropped"] == 1 and res["tokens"] > 0 and res["seconds"] >= 0


def test_first_and_mean_differ_only_on_multi_piece_words(tokenizer, encoder):
    first = extract_words(encoder, tokenizer, SENTENCES[:1], 64, 8, CPU, pooling="first", progress=False)
    mean = extract_words(encoder, tokenizer, SENTENCES[:1], 64, 8, CPU, pooling="mean", progress=False)
    n_pieces = [len(tokenizer.tokenize(w)) for w in SENTENCES[0]]
    assert n_pieces[1] >= 3 and n_pieces[0] == 1  # "xylophonist" is several pieces, "The" one
    diff = np.abs(first["activations"] - mean["activations"]).max(axis=(0, 2))
    for j, k in enumerate(n_pieces):
        assert (diff[j] > 1e-4) if k > 1 else (diff[j] == 0)


def test_word_index_follows_sentence_order(tokenizer, encoder):
    res = extract_words(encoder, tokenizer, SENTENCES, 64, 2, CPU, progress=False)
    idx = res["word_index"]
    assert (np.diff(idx[:, 0]) >= 0).all()
    same = idx[1:, 0] == idx[:-1, 0]
    assert (np.diff(idx[:, 1])[same] > 0).all()
    assert words_at(SENTENCES, idx)[:6] == SENTENCES[0]
    assert "" not in words_at(SENTENCES, idx)


def test_truncation_drops_trailing_words(tokenizer, encoder):
    words = "one two three four five six seven eight nine ten".split()
    res = extract_words(encoder, tokenizer, [words, ["a", "b"]], 6, 4, CPU, progress=False)
    # 6 tokens = [CLS] + four one-piece words + [SEP]
    np.testing.assert_array_equal(res["word_index"], [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1]])
    assert res["dropped"] == 6
    ref, _, _ = _reference(encoder, tokenizer, [words, ["a", "b"]], 6, "first")
    np.testing.assert_allclose(res["activations"], ref, atol=1e-5, rtol=0)


def test_independent_of_batch_size_and_sentence_order(tokenizer, encoder):
    base = extract_words(encoder, tokenizer, SENTENCES, 64, 16, CPU, pooling="mean", progress=False)
    single = extract_words(encoder, tokenizer, SENTENCES, 64, 1, CPU, pooling="mean", progress=False)
    np.testing.assert_allclose(single["activations"], base["activations"], atol=1e-5, rtol=0)
    perm = [3, 0, 4, 2, 1]
    shuffled = extract_words(encoder, tokenizer, [SENTENCES[i] for i in perm], 64, 3, CPU, pooling="mean",
                             max_tokens=64, progress=False)
    remap = {(s, w): row for row, (s, w) in enumerate(map(tuple, base["word_index"]))}
    rows = [remap[(perm[s], w)] for s, w in shuffled["word_index"]]
    np.testing.assert_allclose(shuffled["activations"], base["activations"][:, rows], atol=1e-5, rtol=0)


def test_token_classifier_logits_at_first_piece(tokenizer, tagger):
    res = extract_words(tagger, tokenizer, SENTENCES, 64, 4, CPU, with_logits=True, progress=False)
    ref, index, ref_logits = _reference(tagger, tokenizer, SENTENCES, 64, "first")
    assert res["logits"].shape == (len(index), 5)
    np.testing.assert_allclose(res["logits"], ref_logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res["activations"], ref, atol=1e-5, rtol=0)
    assert not tagger.training


def test_rejects_unknown_pooling(tokenizer, encoder):
    with pytest.raises(ValueError, match="pooling"):
        extract_words(encoder, tokenizer, SENTENCES, 64, 4, CPU, pooling="max", progress=False)


def test_with_logits_needs_a_token_classifier(tokenizer, encoder):
    with pytest.raises(ValueError, match="token classifier"):
        extract_words(encoder, tokenizer, SENTENCES, 64, 4, CPU, with_logits=True, progress=False)
