"""Concept erasure (LEACE, INLP, random control), hidden-state edit hooks and token activations.

Known answers: synthetic features with a planted linear concept are decodable before erasure
and not after LEACE (Belrose et al. 2023) or INLP (Ravfogel et al. 2020); random directions
of the same rank leave the concept in place (Elazar et al. 2021); a hook's edit is what the
model's ``hidden_states`` report, and the hook is gone after the block, even after an error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe.causal.erasure import concept_decodability, fit_inlp, fit_leace, random_eraser
from probe.causal.hooks import edit_hidden_state, edit_hidden_states, encoder_of, layer_module, n_layers
from probe.causal.token_activations import token_activations, word_spans

D = 32


def planted(k: int, n: int, seed: int = 0, shift: float = 3.0, anisotropic: bool = True):
    """``n`` rows in ``D`` dims: correlated Gaussian noise + a class mean of norm ``shift``."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((D, D)) * np.geomspace(0.3, 3, D) / np.sqrt(D) if anisotropic else np.diag(
        np.geomspace(0.5, 2, D))
    means = rng.standard_normal((k, D))
    means *= shift / np.linalg.norm(means, axis=1, keepdims=True)
    z = rng.integers(0, k, n)
    return rng.standard_normal((n, D)) @ mix + means[z], z


def numerical_rank(M: np.ndarray) -> int:
    s = np.linalg.svd(M, compute_uv=False)
    return int((s > 1e-8 * s[0]).sum()) if s[0] > 0 else 0


@pytest.mark.parametrize("k", [2, 3])
def test_leace_removes_planted_concept_and_random_control_does_not(k):
    X, z = planted(k, 6000, seed=k)
    Xtr, ztr, Xte, zte = X[:3000], z[:3000], X[3000:], z[3000:]
    before = concept_decodability(Xtr, ztr, Xte, zte)
    assert before["accuracy"] > 0.95 and before["majority"] < 0.6

    eraser = fit_leace(Xtr, ztr)
    assert eraser.method == "leace" and eraser.rank == k - 1
    assert numerical_rank(Xtr - eraser(Xtr)) == k - 1  # the edit itself, measured on the data
    after = concept_decodability(eraser(Xtr), ztr, eraser(Xte), zte, seed=1)
    assert after["accuracy"] <= after["majority"] + 0.02
    assert after["balanced_accuracy"] <= after["chance"] + 0.03

    control = random_eraser(Xtr, eraser.rank, seed=0)
    assert control.rank == k - 1 and numerical_rank(Xtr - control(Xtr)) == k - 1
    kept = concept_decodability(control(Xtr), ztr, control(Xte), zte)
    assert kept["accuracy"] > kept["majority"] + 0.3


def test_eraser_keeps_shape_dtype_and_matches_numpy():
    X, z = planted(3, 2000)
    eraser = fit_leace(X, z)
    h = torch.as_tensor(X[:24], dtype=torch.float32).reshape(2, 12, D)
    out = eraser(h)
    assert out.shape == h.shape and out.dtype == torch.float32
    np.testing.assert_allclose(out.reshape(24, D).numpy(), eraser(X[:24]), rtol=1e-4, atol=1e-4)
    half = eraser(h.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    # Idempotent on the concept: erasing twice changes nothing more (LEACE is a projection).
    np.testing.assert_allclose(eraser(eraser(X)), eraser(X), atol=1e-8)
    with pytest.raises(ValueError, match="last dimension"):
        eraser(torch.zeros(3, D + 1))


@pytest.mark.parametrize("k", [2, 3])
def test_inlp_removes_concept_within_tolerance(k):
    X, z = planted(k, 4000, seed=10 + k, anisotropic=False)
    Xtr, ztr, Xte, zte = X[:2000], z[:2000], X[2000:], z[2000:]
    eraser = fit_inlp(Xtr, ztr, max_iterations=20, tolerance=0.02, seed=0)
    assert eraser.method == "inlp" and eraser.converged
    assert 1 <= eraser.iterations < 20 and len(eraser.history) == eraser.iterations + 1
    assert eraser.history[0] > 0.95
    assert all(s > eraser.baseline + 0.02 for s in eraser.history[:-1])
    assert eraser.history[-1] <= eraser.baseline + 0.02
    # Each iteration removes at most classes - 1 directions: one binary weight row, or k multinomial
    # rows that sum to zero at the optimum (the softmax ignores their common part).
    assert eraser.iterations <= eraser.rank <= eraser.iterations * (k - 1)
    Q = eraser.left.numpy()
    np.testing.assert_allclose(Q.T @ Q, np.eye(eraser.rank), atol=1e-8)  # orthonormal subspace
    assert numerical_rank(Xtr - eraser(Xtr)) == eraser.rank
    after = concept_decodability(eraser(Xtr), ztr, eraser(Xte), zte, seed=1)
    assert after["accuracy"] <= after["majority"] + 0.05


def test_inlp_stops_at_once_without_a_concept():
    X, _ = planted(2, 3000, seed=3)
    noise = np.random.default_rng(99).integers(0, 2, len(X))
    eraser = fit_inlp(X, noise, max_iterations=10)
    assert eraser.iterations <= 1 and eraser.converged
    assert eraser.rank == eraser.iterations
    # With no directions removed the eraser is the identity.
    if eraser.iterations == 0:
        np.testing.assert_array_equal(eraser(X), X)


def test_concept_decodability_prior_correction_for_a_rare_class():
    rng = np.random.default_rng(0)
    n = 8000
    z = (rng.random(n) < 0.03).astype(int)  # rare class, undecodable features
    X = rng.standard_normal((n, 8))
    res = concept_decodability(X[:4000], z[:4000], X[4000:], z[4000:])
    # A balanced-weighted probe on noise would predict the rare class half the time; the
    # prior-corrected prediction must not fall far below the majority rate.
    assert res["majority"] > 0.95
    assert res["accuracy"] >= res["majority"] - 0.01
    assert abs(res["balanced_accuracy"] - 0.5) < 0.1
    X[:, 0] += 4 * z  # now the rare class is decodable
    res = concept_decodability(X[:4000], z[:4000], X[4000:], z[4000:])
    assert res["balanced_accuracy"] > 0.9 and res["accuracy"] > res["majority"]


# ---------------------------------------------------------------- hooks (tiny-bert)

TEXTS = [
    "the zebraquokka ran across the field",
    "markets fell sharply today",
    "a zebraquokka and another zebraquokka.",
    "zebraquokkas are not a whole-word match",
    "short",
]


@pytest.fixture(scope="module")
def tiny():
    from probe.models.backbones import load_tokenizer
    from probe.models.backbones import build_classifier

    model = build_classifier("tiny-bert", ["a", "b"], seed=0).eval()
    return model, load_tokenizer("tiny-bert")


def _batch(tokenizer, texts, max_length=32):
    from probe.models.batching import pad_batch, tokenize

    return pad_batch(tokenizer, tokenize(tokenizer, texts, max_length))


def test_layer_indexing_and_encoder_of(tiny):
    from probe.models.backbones import load_encoder
    from probe.models.probe_head import ProbeHeadClassifier

    model, _ = tiny
    assert encoder_of(model) is model.base_model
    assert n_layers(model) == 3
    assert layer_module(model, 0) is model.base_model.embeddings
    assert layer_module(model, 2) is model.base_model.encoder.layer[1]
    with pytest.raises(ValueError, match=r"allowed 0\.\.2"):
        layer_module(model, 3)
    with pytest.raises(ValueError, match="out of range"):
        layer_module(model, -1)
    encoder = load_encoder("tiny-bert", 0)
    assert encoder_of(encoder) is encoder
    head = ProbeHeadClassifier(encoder, np.zeros((2, 32)), np.zeros(2))
    assert encoder_of(head) is encoder


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_edit_hook_sets_hidden_state_and_propagates(tiny, layer):
    model, tokenizer = tiny
    batch = _batch(tokenizer, TEXTS)
    shift = torch.linspace(-1, 1, 32)

    def fn(h):
        return 2 * h + shift

    with torch.inference_mode():
        base = model(**batch, output_hidden_states=True)  # installs transformers' capture hooks first
        with edit_hidden_state(model, layer, fn):
            edited = model(**batch, output_hidden_states=True)
    assert len(edited.hidden_states) == n_layers(model)
    torch.testing.assert_close(edited.hidden_states[layer], fn(base.hidden_states[layer]))
    for earlier in range(layer):
        assert torch.equal(edited.hidden_states[earlier], base.hidden_states[earlier])
    for later in range(layer + 1, n_layers(model)):
        assert not torch.allclose(edited.hidden_states[later], base.hidden_states[later], atol=1e-3)
    assert not torch.allclose(edited.logits, base.logits, atol=1e-6)


def test_hook_removed_after_exception_and_several_edits(tiny):
    model, tokenizer = tiny
    batch = _batch(tokenizer, TEXTS)
    modules = [layer_module(model, layer) for layer in range(3)]
    counts = [len(m._forward_hooks) for m in modules]
    with torch.inference_mode():
        base = model(**batch, output_hidden_states=True)
        with pytest.raises(RuntimeError, match="boom"):
            with edit_hidden_state(model, 1, lambda h: h * 0):
                assert len(modules[1]._forward_hooks) == counts[1] + 1
                raise RuntimeError("boom")
        assert [len(m._forward_hooks) for m in modules] == counts
        after = model(**batch, output_hidden_states=True)
        assert torch.equal(after.logits, base.logits)
        assert all(torch.equal(a, b) for a, b in zip(after.hidden_states, base.hidden_states))

        with edit_hidden_states(model, {0: lambda h: h + 1, 2: lambda h: -h}):
            both = model(**batch, output_hidden_states=True)
        with edit_hidden_state(model, 0, lambda h: h + 1):
            first = model(**batch, output_hidden_states=True)
        torch.testing.assert_close(both.hidden_states[2], -first.hidden_states[2])
        with pytest.raises(ValueError, match="out of range"):
            with edit_hidden_states(model, {1: lambda h: h, 7: lambda h: h}):
                pass
    assert [len(m._forward_hooks) for m in modules] == counts


# ---------------------------------------------------------------- token activations

def test_token_activations_positions_and_values(tiny):
    model, tokenizer = tiny
    pieces = tokenizer.tokenize("zebraquokka")
    assert len(pieces) >= 3  # the test needs a word that splits into several pieces
    piece_ids = tokenizer.convert_tokens_to_ids(pieces)
    acts = token_activations(model, tokenizer, TEXTS, [0, 1, 2], max_length=32, batch_size=2,
                             device="cpu", token="zebraquokka")
    batch = _batch(tokenizer, TEXTS)
    lengths = batch["attention_mask"].sum(1).numpy()
    assert acts.n_positions == lengths.sum()
    np.testing.assert_array_equal(np.bincount(acts.doc_index, minlength=len(TEXTS)), lengths)

    occurrences = [len(word_spans(t, "zebraquokka")) for t in TEXTS]
    assert occurrences == [1, 0, 2, 0, 0]  # "zebraquokkas" is not a whole-word match
    for i, n_occ in enumerate(occurrences):
        rows = acts.doc_index == i
        marked = acts.token_ids[rows & acts.has_token].tolist()
        assert marked == piece_ids * n_occ
    np.testing.assert_array_equal(acts.doc_has_token, np.array(occurrences) > 0)
    assert not acts.has_token[acts.position == 0].any()  # [CLS] never holds the token

    with torch.inference_mode():
        hidden = model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    for layer in (0, 1, 2):
        np.testing.assert_allclose(acts.layers[layer], hidden[layer][mask].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(acts.token_ids, batch["input_ids"][mask].numpy())


def test_token_activations_truncation_and_hooked_model(tiny):
    model, tokenizer = tiny
    texts = ["one two three four five six seven eight nine ten zebraquokka", "zebraquokka first"]
    acts = token_activations(model, tokenizer, texts, [1], max_length=8, batch_size=8, device="cpu",
                             token="zebraquokka")
    assert np.bincount(acts.doc_index).tolist() == [8, 7]  # [CLS] + 4 pieces + "first" + [SEP]
    assert acts.doc_has_token.tolist() == [False, True]  # the first occurrence is truncated away

    # The eraser applied through the hook sees exactly these positions.
    eraser = fit_leace(acts.layers[1], acts.has_token)
    with edit_hidden_state(model, 1, eraser):
        erased = token_activations(model, tokenizer, texts, [1], max_length=8, batch_size=1, device="cpu")
    np.testing.assert_allclose(erased.layers[1], eraser(acts.layers[1]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"allowed 0\.\.2"):
        token_activations(model, tokenizer, texts, [3], max_length=8, batch_size=8, device="cpu")
