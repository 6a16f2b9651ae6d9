"""Layer swaps, re-initialisation and head ablation: exact effects inside, exact restoration after.

The "fine-tuned" model is tiny-bert's classifier with noise added to every parameter; the
pretrained source is tiny-bert's encoder from the same seed (so before the noise the
classifier's encoder equals the source bit-for-bit).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from probe.causal.ablation import (
    ablate_heads, encoder_blocks, head_ablation_scan, pretrained_encoder_with_head, reinit_layers,
    swap_embeddings, swap_layers,
)
from probe.models.backbones import load_encoder, load_tokenizer
from probe.models.batching import pad_batch, tokenize
from probe.models.backbones import build_classifier

TEXTS = [
    "the cat sat on the mat",
    "markets fell sharply after the announcement of new tariffs on steel",
    "a",
    "football results from the weekend, with three late goals",
]


def perturbed(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """``model`` with N(0, scale²) noise added to every parameter: a stand-in for fine-tuning."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def base_classifier():
    return perturbed(build_classifier("tiny-bert", ["a", "b", "c"], seed=0), seed=1)


@pytest.fixture
def model(base_classifier):
    return copy.deepcopy(base_classifier)


@pytest.fixture(scope="module")
def source():
    return load_encoder("tiny-bert", 0).eval()


@pytest.fixture(scope="module")
def batch():
    tok = load_tokenizer("tiny-bert")
    b = pad_batch(tok, tokenize(tok, TEXTS, 32))
    assert (b["attention_mask"] == 0).any()  # padding present: masks matter
    return dict(b)


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_state_equal(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    now = module.state_dict()
    assert now.keys() == saved.keys()
    for k, v in saved.items():
        assert now[k].dtype == v.dtype, k
        assert torch.equal(now[k], v), k


@torch.no_grad()
def logits(model, batch) -> torch.Tensor:
    return model(**batch).logits


def test_encoder_blocks(model, source):
    assert encoder_blocks(model) is model.bert.encoder.layer
    assert encoder_blocks(source) is source.encoder.layer
    assert len(encoder_blocks(model)) == 2
    with pytest.raises(ValueError, match="cannot find its transformer blocks"):
        encoder_blocks(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("block", [0, 1])
def test_swap_layers_copies_source_block_and_restores(model, source, batch, block):
    before, source_before = state(model), state(source)
    ptrs = [p.data_ptr() for p in model.parameters()]
    ref = logits(model, batch)
    other = 1 - block
    with swap_layers(model, source, [block]) as swapped:
        assert swapped is model
        inside = encoder_blocks(model)[block].state_dict()
        for k, v in encoder_blocks(source)[block].state_dict().items():
            assert torch.equal(inside[k], v), k
        # the other block and the embeddings are untouched (and differ from the source)
        for k, v in encoder_blocks(model)[other].state_dict().items():
            assert torch.equal(v, before[f"bert.encoder.layer.{other}.{k}"]), k
        assert not torch.equal(encoder_blocks(model)[other].attention.self.query.weight,
                               encoder_blocks(source)[other].attention.self.query.weight)
        assert torch.equal(model.bert.embeddings.word_embeddings.weight,
                           before["bert.embeddings.word_embeddings.weight"])
        assert not torch.equal(logits(model, batch), ref)
    assert_state_equal(model, before)
    assert_state_equal(source, source_before)
    assert [p.data_ptr() for p in model.parameters()] == ptrs  # same tensors, copied into
    assert torch.equal(logits(model, batch), ref)


def test_swap_from_another_classifier_and_embeddings(model, base_classifier, source, batch):
    donor = perturbed(copy.deepcopy(base_classifier), seed=7)
    donor_before, before = state(donor), state(model)
    with swap_layers(model, donor, [1]):
        for k, v in encoder_blocks(donor)[1].state_dict().items():
            assert torch.equal(encoder_blocks(model)[1].state_dict()[k], v), k
    assert_state_equal(model, before)
    assert_state_equal(donor, donor_before)
    with swap_embeddings(model, source):
        for k, v in source.embeddings.state_dict().items():
            assert torch.equal(model.bert.embeddings.state_dict()[k], v), k
        assert torch.equal(encoder_blocks(model)[0].output.dense.weight,
                           before["bert.encoder.layer.0.output.dense.weight"])
    assert_state_equal(model, before)


def test_swap_inside_inference_mode_restores(model, source, batch):
    before, ref = state(model), logits(model, batch)
    with torch.inference_mode():
        with pretrained_encoder_with_head(model, source):
            assert not torch.equal(model(**batch).logits, ref)
    assert_state_equal(model, before)
    assert torch.equal(logits(model, batch), ref)


def test_swap_follows_model_dtype(model, source, batch):
    model = model.to(torch.bfloat16)
    before = state(model)
    with swap_layers(model, source, [0]):
        w = encoder_blocks(model)[0].intermediate.dense.weight
        assert w.dtype == torch.bfloat16
        assert torch.equal(w, encoder_blocks(source)[0].intermediate.dense.weight.to(torch.bfloat16))
    assert_state_equal(model, before)
    assert source.encoder.layer[0].intermediate.dense.weight.dtype == torch.float32


@pytest.mark.parametrize("name", ["swap", "embeddings", "pretrained", "reinit", "heads"])
def test_restored_when_the_body_raises(model, source, batch, name):
    contexts = {
        "swap": lambda: swap_layers(model, source, [0, 1]),
        "embeddings": lambda: swap_embeddings(model, source),
        "pretrained": lambda: pretrained_encoder_with_head(model, source),
        "reinit": lambda: reinit_layers(model, [0, 1], seed=3),
        "heads": lambda: ablate_heads(model, [(0, 0), (1, 1)]),
    }
    before, source_before, ref = state(model), state(source), logits(model, batch)
    with pytest.raises(RuntimeError, match="boom"):
        with contexts[name]():
            assert not torch.equal(logits(model, batch), ref)
            raise RuntimeError("boom")
    assert_state_equal(model, before)
    assert_state_equal(source, source_before)
    assert torch.equal(logits(model, batch), ref)
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_swap_rejects_bad_blocks_and_architectures(model, source):
    from transformers import BertConfig, BertModel

    before = state(model)
    for bad in ([2], [-1], [0, 5], ["0"], [True]):
        with pytest.raises(ValueError, match="block"):
            with swap_layers(model, source, bad):
                pass
    deeper = BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64))
    narrower = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    for other in (deeper, narrower):
        for ctx in (lambda: swap_layers(model, other, [0]), lambda: pretrained_encoder_with_head(model, other)):
            with pytest.raises(ValueError, match="mismatched architectures"):
                with ctx():
                    pass
        with pytest.raises(ValueError, match="differ in architecture"):
            with swap_embeddings(model, narrower):
                pass
    wider_ffn = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128))
    with pytest.raises(ValueError, match="differ in architecture"):
        with swap_layers(model, wider_ffn, [1]):
            pass
    assert_state_equal(model, before)


def test_pretrained_encoder_with_head_gives_the_pretrained_hidden_states(model, source, batch):
    with torch.no_grad():
        expected = source(**batch, output_hidden_states=True)
        tuned = model(**batch, output_hidden_states=True)
    assert len(expected.hidden_states) == 3
    head_before = {k: v for k, v in state(model).items() if not k.startswith(("bert.embeddings", "bert.encoder"))}
    assert any(k.startswith("bert.pooler") for k in head_before) and "classifier.weight" in head_before
    with pretrained_encoder_with_head(model, source), torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        assert len(out.hidden_states) == len(expected.hidden_states)
        for got, want, ft in zip(out.hidden_states, expected.hidden_states, tuned.hidden_states):
            assert torch.equal(got, want)
            assert not torch.equal(got, ft)
        # the fine-tuned head (pooler + classifier) is kept and sits on the pretrained encoder
        assert_state_equal(model.bert.pooler, {k[len("bert.pooler."):]: v for k, v in head_before.items()
                                               if k.startswith("bert.pooler.")})
        manual = model.classifier(model.bert.pooler(expected.last_hidden_state))
        assert torch.equal(out.logits, manual)
    with torch.no_grad():
        after = model(**batch, output_hidden_states=True)
    for got, ft in zip(after.hidden_states, tuned.hidden_states):
        assert torch.equal(got, ft)


def test_reinit_is_deterministic_per_seed_and_restored(model, batch):
    before, ref = state(model), logits(model, batch)
    rng = torch.random.get_rng_state()
    with reinit_layers(model, [1], seed=5):
        first = state(encoder_blocks(model)[1])
        out5 = logits(model, batch)
        assert torch.equal(encoder_blocks(model)[0].attention.self.key.weight,
                           before["bert.encoder.layer.0.attention.self.key.weight"])
    assert_state_equal(model, before)
    with reinit_layers(model, [1], seed=5):
        assert_state_equal(encoder_blocks(model)[1], first)
        assert torch.equal(logits(model, batch), out5)
    with reinit_layers(model, [1], seed=6):
        second = state(encoder_blocks(model)[1])
        assert not torch.equal(logits(model, batch), out5)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is untouched
    assert not torch.equal(first["attention.self.query.weight"], second["attention.self.query.weight"])
    assert_state_equal(model, before)
    assert torch.equal(logits(model, batch), ref)

    # the BERT convention: N(0, initializer_range) weights, zero biases, LayerNorm (1, 0)
    weights = torch.cat([v.flatten() for k, v in first.items() if k.endswith("weight") and "LayerNorm" not in k])
    assert abs(float(weights.std()) - model.config.initializer_range) < 0.002
    assert abs(float(weights.mean())) < 0.002
    for k, v in first.items():
        if "LayerNorm" in k:
            assert torch.equal(v, torch.ones_like(v) if k.endswith("weight") else torch.zeros_like(v)), k
        elif k.endswith("bias"):
            assert torch.equal(v, torch.zeros_like(v)), k


def test_reinit_matches_the_models_own_init_weights(model):
    """Same draws as ``model._init_weights`` applied module by module under ``torch.manual_seed``."""
    reference = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        for b in (0, 1):
            for module in encoder_blocks(reference)[b].modules():
                reference._init_weights(module)
    expected = state(reference)
    with reinit_layers(model, [1, 0], seed=11):
        for b in (0, 1):
            got = encoder_blocks(model)[b].state_dict()
            for k, v in got.items():
                assert torch.equal(v, expected[f"bert.encoder.layer.{b}.{k}"]), (b, k)


def zero_columns_reference(model, heads):
    """The ablation done on the weights: columns of ``attention.output.dense`` for the head set to 0."""
    ref = copy.deepcopy(model)
    d = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for b, h in heads:
            encoder_blocks(ref)[b].attention.output.dense.weight[:, h * d:(h + 1) * d] = 0
    return ref


@pytest.mark.parametrize("heads", [[(0, 0)], [(1, 1)], [(0, 1), (1, 0)], [(0, 0), (0, 1)], [(1, 0), (1, 0)]])
def test_ablate_heads_equals_zeroing_weight_columns(model, batch, heads):
    before, ref = state(model), logits(model, batch)
    want = logits(zero_columns_reference(model, heads), batch)
    with ablate_heads(model, heads):
        got = logits(model, batch)
        assert_state_equal(model, before)  # the weights are not touched, only the activations
    assert torch.equal(got, want)
    assert not torch.equal(got, ref)
    assert torch.equal(logits(model, batch), ref)
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_ablate_heads_nothing_and_errors(model, batch):
    ref = logits(model, batch)
    with ablate_heads(model, []):
        assert torch.equal(logits(model, batch), ref)
    for bad in ([(2, 0)], [(0, 2)], [(-1, 0)], [(0,)], [0]):
        with pytest.raises(ValueError):
            with ablate_heads(model, bad):
                pass
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_ablate_heads_keeps_gradients(model, batch):
    """The pre-hook works in training too: the ablated head's query weights get no gradient."""
    with ablate_heads(model, [(0, 1)]):
        model(**batch).logits.sum().backward()
    grad = encoder_blocks(model)[0].attention.self.query.weight.grad
    assert torch.count_nonzero(grad[16:]) == 0 and torch.count_nonzero(grad[:16]) > 0


def test_head_ablation_scan(model, batch):
    def evaluate() -> float:
        return float(logits(model, batch)[:, 0].mean())

    baseline = evaluate()
    df = head_ablation_scan(model, evaluate, n_blocks=2, n_heads=2, progress=False)
    assert list(df.columns) == ["block", "head", "score", "baseline", "change"]
    assert len(df) == 4
    assert list(zip(df["block"], df["head"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert (df["baseline"] == baseline).all()
    for row in df.itertuples():
        with ablate_heads(model, [(row.block, row.head)]):
            assert row.score == evaluate()
    np.testing.assert_array_equal(df["change"], df["score"] - df["baseline"])
    assert (df["change"] != 0).all()
    assert evaluate() == baseline  # restored after the scan
    assert len(head_ablation_scan(model, evaluate, n_blocks=1, n_heads=2, progress=False)) == 2
    for kw in (dict(n_blocks=3, n_heads=2), dict(n_blocks=2, n_heads=3), dict(n_blocks=0, n_heads=2)):
        with pytest.raises(ValueError):
            head_ablation_scan(model, evaluate, progress=False, **kw)
