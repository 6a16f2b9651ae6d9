"""Attributions find a planted token when the model was trained on it, and not otherwise.

Synthetic data with a planted answer: texts of random common words; the ``zebra`` model's
label is exactly the presence of "zebra"; the control model's label is the presence of
"apple", with "zebra" planted independently at the same rate (docs/design.md §7).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from probe.analyses.attribution import (
    METHODS, attribute_tokens, forward_function, pad_baseline, word_attributions, _to_words, _encode,
)
from probe.analyses.attribution_metrics import spurious_attribution_metrics
from probe.analyses.faithfulness import faithfulness_metrics, top_k_count
from probe.config import FinetuneConfig
from probe.data.planted import insert_token
from probe.models.backbones import build_classifier, load_tokenizer
from probe.models.batching import predict_logits
from probe.models.probe_head import ProbeHeadClassifier, fit_probe_head, pooled_last_layer
from probe.report.heatmap import render_heatmap_html
from probe.tasks.sequence.objective import finetune_classifier as finetune

WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point home "
    "water room mother area money story fact month lot right study book eye job word business issue side kind "
    "head house service friend father power hour game line end member law car city community name president team "
    "minute idea kid body information back parent face others level office door health person art war history "
    "party result change morning reason research girl guy moment air teacher force education"
).split()
MAX_LENGTH = 32


def make_texts(n: int, rng: np.random.Generator, tokens: tuple[str, ...] = ("zebra",)) -> tuple[list[str], np.ndarray]:
    """Random-word texts; each token in ``tokens`` is inserted independently with probability 1/2.

    Returns the texts and a ``[n, len(tokens)]`` presence matrix."""
    texts, has = [], []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(6, 14))))
        text = " ".join(words)
        row = []
        for token in tokens:
            present = bool(rng.random() < 0.5)
            if present:
                text = insert_token(text, token, int(rng.integers(0, len(text.split()) + 1)))
            row.append(present)
        texts.append(text)
        has.append(row)
    return texts, np.array(has, dtype=int)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-bert")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train, train_has = make_texts(400, rng, ("zebra", "apple"))
    val, val_has = make_texts(100, rng, ("zebra", "apple"))
    test, test_has = make_texts(60, rng, ("zebra", "apple"))
    return dict(train=train, train_has=train_has, val=val, val_has=val_has, test=test, test_has=test_has)


def _train(tokenizer, data, column: int, seed: int = 0):
    model = build_classifier("tiny-bert", ["absent", "present"], seed)
    cfg = FinetuneConfig(epochs=4, learning_rate=3e-3, batch_size=16)
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator: pin it, then restore
        torch.manual_seed(seed)
        log = finetune(model, tokenizer, data["train"], data["train_has"][:, column], data["val"],
                       data["val_has"][:, column], cfg, MAX_LENGTH, seed, torch.device("cpu"), progress=False)
    assert log.epochs[-1]["validation_accuracy"] >= 0.95, log.epochs
    return model.eval()


@pytest.fixture(scope="module")
def zebra_model(tokenizer, data):
    return _train(tokenizer, data, 0)


@pytest.fixture(scope="module")
def control_model(tokenizer, data):
    return _train(tokenizer, data, 1)


def _with_zebra(data):
    return [t for t, h in zip(data["test"], data["test_has"][:, 0]) if h]


def test_planted_token_is_top_attributed_when_trained_on_it(tokenizer, data, zebra_model):
    texts = _with_zebra(data)
    # this small model is nearly a step function along the IG path, so 20 steps leave a large
    # completeness gap: the warning is expected here (and tested in test_large_delta_warns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attrs = word_attributions(zebra_model, tokenizer, texts, max_length=MAX_LENGTH, n_steps=20)
    assert all(a.prediction == 1 for a in attrs)
    rows = spurious_attribution_metrics(attrs, "zebra", model_name="finetuned", n_boot=200, seed=0).set_index("metric")
    assert rows.loc["spurious_top1_rate", "value"] > 0.7
    # the token holds far more attribution than its share of the words
    assert rows.loc["spurious_attribution_share", "value"] > 2 * rows.loc["spurious_input_share", "value"]
    assert rows.loc["spurious_attribution_share", "ci_low"] <= rows.loc["spurious_attribution_share", "value"]
    assert set(rows["method"]) == {"integrated_gradients"}
    assert np.isfinite(rows.loc["relative_convergence_delta", "value"])


def test_planted_token_is_rarely_top_when_labels_ignore_it(tokenizer, data, control_model):
    texts = _with_zebra(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attrs = word_attributions(control_model, tokenizer, texts, max_length=MAX_LENGTH, n_steps=20)
    rows = spurious_attribution_metrics(attrs, "zebra", model_name="finetuned", n_boot=200, seed=0).set_index("metric")
    assert rows.loc["spurious_top1_rate", "value"] < 0.3


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "occlusion"])
def test_other_methods_run_and_find_the_token(tokenizer, data, zebra_model, method):
    texts = _with_zebra(data)[:15]
    attrs = word_attributions(zebra_model, tokenizer, texts, method, max_length=MAX_LENGTH)
    assert all(len(a.words) == len(a.scores) == len(t.split()) for a, t in zip(attrs, texts))
    if method == "saliency":
        assert all((a.scores >= 0).all() for a in attrs)
    rows = spurious_attribution_metrics(attrs, "zebra", model_name="finetuned", n_boot=100).set_index("metric")
    assert rows.loc["spurious_top1_rate", "value"] > 0.5
    assert "relative_convergence_delta" not in rows.index


def test_occlusion_scores_are_the_drop_when_each_word_is_masked(tokenizer, data, zebra_model):
    from probe.analyses.attribution import _occlusion_groups

    # texts of very different word counts, so that occlusion groups them apart
    texts = [_with_zebra(data)[0], "zebra", " ".join(data["train"][:3]) + " zebra", "the zebra ran"]
    attrs = word_attributions(zebra_model, tokenizer, texts, "occlusion", max_length=MAX_LENGTH)
    f = forward_function(zebra_model)
    largest = 0.0
    for text, a in zip(texts, attrs):
        split = text.split()
        enc = tokenizer([split], is_split_into_words=True, truncation=True, max_length=MAX_LENGTH)
        ids, wids = torch.tensor(enc["input_ids"]), enc.word_ids(0)
        variants = ids.repeat(len(a.words), 1)
        for j in range(len(a.words)):
            variants[j, [p for p, w in enumerate(wids) if w == j]] = tokenizer.mask_token_id
        with torch.no_grad():
            full = f(ids, torch.ones_like(ids))[0, a.prediction]
            masked = f(variants, torch.ones_like(variants))[:, a.prediction]
        want = (full - masked).numpy()
        np.testing.assert_allclose(a.scores, want, atol=1e-5, rtol=0)
        largest = max(largest, float(np.abs(want).max()))
    assert largest > 1e-2
    groups = [sorted(g.tolist()) for g in _occlusion_groups([50, 3, 48, 47, 10, 44], [64] * 6, 4096, 64)]
    assert groups == [[0, 2, 3], [5], [4], [1]]  # within 4 words of the group's first; most words first
    assert [g.tolist() for g in _occlusion_groups([50, 49, 48], [64] * 3, 128, 64)] == [[0, 1], [2]]  # budget


def test_batched_equals_plain_per_example_captum(tokenizer, data, zebra_model):
    from captum.attr import LayerIntegratedGradients

    # very different lengths in one group, so padding is exercised; a small budget forces step chunking
    with_zebra = _with_zebra(data)
    texts = [with_zebra[0], "zebra", " ".join(data["train"][:4]) + " zebra", with_zebra[1]]
    n_steps = 50
    enc, scores, preds, deltas = attribute_tokens(zebra_model, tokenizer, texts, max_length=MAX_LENGTH,
                                                  n_steps=n_steps, token_budget=600)
    assert len({len(x) for x in enc.ids}) > 2
    lig = LayerIntegratedGradients(forward_function(zebra_model), zebra_model.get_input_embeddings())
    largest = 0.0
    for i in range(len(texts)):
        ids = torch.tensor([enc.ids[i]])
        mask = torch.ones_like(ids)
        attr, delta = lig.attribute(ids, baselines=pad_baseline(ids, tokenizer), target=int(preds[i]),
                                    additional_forward_args=(mask,), n_steps=n_steps, return_convergence_delta=True)
        ref = attr.sum(-1)[0].detach().numpy()
        largest = max(largest, float(np.abs(ref).max()))
        np.testing.assert_allclose(scores[i], ref, atol=1e-4, rtol=0)
        with torch.no_grad():
            f = forward_function(zebra_model)
            diff = (f(ids, mask)[0, preds[i]] - f(pad_baseline(ids, tokenizer), mask)[0, preds[i]]).item()
        assert deltas[i] == pytest.approx(abs(delta.item()) / abs(diff), abs=1e-3)
    assert largest > 1e-2  # a trained model: the comparison is not between zeros


def test_large_delta_warns_and_flags(tokenizer, data, zebra_model):
    texts = _with_zebra(data)[:3]
    with pytest.warns(UserWarning, match="convergence delta"):
        attrs = word_attributions(zebra_model, tokenizer, texts, max_length=MAX_LENGTH, n_steps=4, delta_warn=1e-9)
    assert all(a.delta_large and a.delta > 0 for a in attrs)


def test_padding_does_not_change_attributions(tokenizer, data, zebra_model):
    texts = [data["test"][1], " ".join(data["train"][:3])]
    for method in METHODS:
        kw = dict(max_length=MAX_LENGTH, n_steps=10, delta_warn=np.inf)
        alone = word_attributions(zebra_model, tokenizer, texts[:1], method, **kw)
        padded = word_attributions(zebra_model, tokenizer, texts, method, token_budget=100_000, **kw)
        np.testing.assert_allclose(alone[0].scores, padded[0].scores, atol=1e-4, rtol=0, err_msg=method)


def test_word_aggregation_sums_subwords(tokenizer):
    text = "the xylophonist zebra unbelievably"
    enc = _encode(tokenizer, [text], 32)
    tokens = tokenizer.convert_ids_to_tokens(enc.ids[0])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    word_ids = enc.word_ids[0]
    assert sum(w == 1 for w in word_ids) >= 3  # "xylophonist" is several subwords
    token_scores = np.arange(len(word_ids), dtype=float) + 1.0
    words = _to_words(token_scores, word_ids, 4)
    expected = [sum(token_scores[p] for p, w in enumerate(word_ids) if w == j) for j in range(4)]
    np.testing.assert_allclose(words, expected)
    first = _to_words(token_scores, word_ids, 4, first_only=True)
    assert first[1] == token_scores[word_ids.index(1)]
    assert enc.words[0] == text.split()


def test_truncation_keeps_covered_words_only(tokenizer, zebra_model):
    text = " ".join(WORDS[:40])
    (a,) = word_attributions(zebra_model, tokenizer, [text], "saliency", max_length=12)
    assert a.words == WORDS[:10]  # 12 tokens = [CLS] + 10 one-subword words + [SEP]


def test_heatmap_html_escapes_words():
    out = render_heatmap_html(["<script>alert(1)</script>", "ok", "&"], [1.0, -0.5, 0.0])
    assert "<script>" not in out and "&lt;script&gt;" in out and "&amp;" in out
    assert "rgba(213, 94, 0, 1.000)" in out and "rgba(0, 114, 178, 0.500)" in out
    with pytest.raises(ValueError):
        render_heatmap_html(["a"], [1.0, 2.0])


def test_word_attributions_cover_every_word(tokenizer, data, zebra_model):
    attrs = word_attributions(zebra_model, tokenizer, data["test"][:3], "saliency", max_length=MAX_LENGTH)
    assert [len(a.words) for a in attrs] == [len(a.scores) for a in attrs] == [len(t.split()) for t in data["test"][:3]]


def test_comprehensiveness_beats_random_order(tokenizer, data, zebra_model):
    texts = data["test"][:40]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attrs = word_attributions(zebra_model, tokenizer, texts, max_length=MAX_LENGTH, n_steps=20)
    rows = faithfulness_metrics(zebra_model, tokenizer, attrs, model_name="finetuned", max_length=MAX_LENGTH,
                                n_boot=200, seed=0)
    comp = rows[rows.metric == "comprehensiveness_aopc"].set_index("method")
    assert set(comp.index) == {"integrated_gradients", "random", "integrated_gradients-random"}
    assert comp.loc["integrated_gradients", "value"] > comp.loc["random", "value"]
    assert comp.loc["integrated_gradients-random", "ci_low"] > 0
    assert {"sufficiency_aopc", "comprehensiveness@1", "sufficiency@50"} <= set(rows.metric)


def test_shared_text_probabilities_compute_each_text_once_and_change_no_row(tokenizer, data, zebra_model):
    from probe.analyses.faithfulness import TextProbabilities

    texts = data["test"][:12]
    attrs = {m: word_attributions(zebra_model, tokenizer, texts, m, max_length=MAX_LENGTH)
             for m in ("saliency", "input_x_gradient")}
    alone = {m: faithfulness_metrics(zebra_model, tokenizer, a, model_name="finetuned", max_length=MAX_LENGTH,
                                     n_boot=200, seed=3) for m, a in attrs.items()}
    shared = TextProbabilities(zebra_model, tokenizer, MAX_LENGTH)
    together = {m: faithfulness_metrics(zebra_model, tokenizer, a, model_name="finetuned", max_length=MAX_LENGTH,
                                        n_boot=200, seed=3, probabilities=shared) for m, a in attrs.items()}
    for m in attrs:  # batches of other texts: equal up to float rounding (docs: at most 1e-6)
        pd.testing.assert_frame_equal(alone[m], together[m], check_exact=False, rtol=0, atol=1e-6)
    # per method 1 full text + 10 method + 10 random variants per example; the full texts and the
    # random-order variants are the same for both methods, so they are computed once
    assert len(shared.known) <= len(texts) * (1 + 10 + 2 * 10)
    assert len(shared.known) < 2 * len(texts) * 21 * 0.8


def test_predict_logits_passes_each_distinct_input_once(tokenizer, data, zebra_model):
    import torch

    texts = data["test"][:10]
    seen = []
    handle = zebra_model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(len(kw["input_ids"])),
                                                   with_kwargs=True)
    try:
        asked = texts + [t.upper() for t in texts] + texts[:4]  # upper case: the same ids for an uncased tokenizer
        logits = predict_logits(zebra_model, tokenizer, asked, MAX_LENGTH, 64, torch.device("cpu"))
    finally:
        handle.remove()
    assert sum(seen) == len(set(texts))
    alone = predict_logits(zebra_model, tokenizer, texts, MAX_LENGTH, 64, torch.device("cpu"))
    np.testing.assert_allclose(logits, np.concatenate([alone, alone, alone[:4]]), rtol=0, atol=1e-5)


def test_top_k_count():
    assert top_k_count(10, 1) == 1 and top_k_count(10, 20) == 2 and top_k_count(7, 50) == 4 and top_k_count(0, 5) == 0


def test_probe_head_matches_sklearn_decision_function(tokenizer, data):
    from probe.models.backbones import load_encoder

    encoder = load_encoder("tiny-bert", 0).eval()
    texts, labels = data["train"][:120], data["train_has"][:120, 0]
    head = fit_probe_head(encoder, tokenizer, texts, labels, max_length=MAX_LENGTH, seed=0)
    assert isinstance(head, ProbeHeadClassifier) and head.config.num_labels == 2
    assert head.get_input_embeddings() is encoder.get_input_embeddings()
    feats = pooled_last_layer(encoder, tokenizer, data["test"], MAX_LENGTH)
    decision = head.probe_.decision_function(feats)
    logits = predict_logits(head, tokenizer, data["test"], MAX_LENGTH, 16, torch.device("cpu"))
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], decision, atol=1e-3, rtol=1e-4)
    # the same attribution code applies to the wrapper
    attrs = word_attributions(head, tokenizer, data["test"][:4], max_length=MAX_LENGTH, n_steps=10, delta_warn=np.inf)
    assert all(np.isfinite(a.scores).all() and len(a.scores) == len(a.words) for a in attrs)
