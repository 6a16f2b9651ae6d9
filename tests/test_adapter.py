"""The model adapter on tiny random models of eight architectures (built offline from their configs):
hooks edit exactly the layer asked, a head ablation equals zeroing that head's slice of the
attention output projection, swaps and re-initialisations restore bit for bit, and pooling reads
what each kind of model reads."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (AutoModel, AutoModelForSequenceClassification, BertConfig, DistilBertConfig, ElectraConfig,
                          GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, RobertaConfig)

from probe.causal.ablation import ablate_heads, pretrained_encoder_with_head, reinit_layers, swap_layers
from probe.causal.hooks import edit_hidden_state, layer_module, n_layers
from probe.models.adapter import ModelAdapter, UnsupportedModel, ensure_pad_token, pool

V = 120
CONFIGS = {
    "bert": lambda: BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                               intermediate_size=32),
    "roberta": lambda: RobertaConfig(vocab_size=V, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=32, pad_token_id=1, max_position_embeddings=40),
    "distilbert": lambda: DistilBertConfig(vocab_size=V, dim=16, n_layers=3, n_heads=4, hidden_dim=32),
    "electra": lambda: ElectraConfig(vocab_size=V, embedding_size=8, hidden_size=16, num_hidden_layers=3,
                                     num_attention_heads=4, intermediate_size=32),
    "gpt2": lambda: GPT2Config(vocab_size=V, n_embd=16, n_layer=3, n_head=4, n_positions=40, pad_token_id=0,
                               bos_token_id=1, eos_token_id=1),
    "llama": lambda: LlamaConfig(vocab_size=V, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                                 num_key_value_heads=2, intermediate_size=32, pad_token_id=0),
    "qwen2": lambda: Qwen2Config(vocab_size=V, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                                 num_key_value_heads=2, intermediate_size=32, pad_token_id=0),
    "mistral": lambda: MistralConfig(vocab_size=V, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=32, pad_token_id=0),
}
FAMILIES = list(CONFIGS)
CAUSAL = {"gpt2", "llama", "qwen2", "mistral"}


def classifier(family: str, seed: int = 0):
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    config.num_labels = 3
    return AutoModelForSequenceClassification.from_config(config).eval()


def batch():
    ids = torch.tensor([[2, 5, 6, 7, 8, 9, 10, 3], [2, 11, 12, 13, 3, 0, 0, 0]])
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    return {"input_ids": ids, "attention_mask": mask}


def hidden(model, b):
    with torch.no_grad():
        return model(**b, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_found(family):
    model = classifier(family)
    a = ModelAdapter(model)
    assert a.family == family and a.n_blocks == 3 and n_layers(model) == 4
    assert a.causal == (family in CAUSAL) and a.pooling == ("last" if family in CAUSAL else "mean")
    assert a.n_heads == 4 and a.head_dim == 4
    assert ModelAdapter(AutoModel.from_config(CONFIGS[family]())).n_blocks == 3  # a bare encoder works too


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [0, 1, 3])
def test_hook_edits_exactly_the_layer_asked(family, layer):
    model, b = classifier(family), batch()
    before = hidden(model, b)
    shift = torch.linspace(-1, 1, before[0].shape[-1])
    with edit_hidden_state(model, layer, lambda h: h + shift):
        after = hidden(model, b)
    for l in range(len(before)):
        if l < layer:
            assert torch.equal(after[l], before[l]), (family, l)
        elif l == layer:
            torch.testing.assert_close(after[l], before[l] + shift)
        else:
            assert not torch.allclose(after[l], before[l]), (family, l)
    assert torch.equal(hidden(model, b)[layer], before[layer])  # hook removed


def _zero_slice(model, block: int, head: int) -> None:
    a = ModelAdapter(model)
    proj, d = a.attention_output(block), a.head_dim
    with torch.no_grad():
        if isinstance(proj, torch.nn.Linear):
            proj.weight[:, head * d:(head + 1) * d] = 0
        else:  # GPT-2 Conv1D: weight is [in, out]
            proj.weight[head * d:(head + 1) * d, :] = 0


@pytest.mark.parametrize("family", FAMILIES)
def test_head_ablation_equals_zeroing_the_heads_slice(family):
    model, b = classifier(family), batch()
    reference = copy.deepcopy(model)
    _zero_slice(reference, 1, 2)
    with torch.no_grad():
        want = reference(**b).logits
        clean = model(**b).logits
        with ablate_heads(model, [(1, 2)]):
            got = model(**b).logits
        torch.testing.assert_close(got, want)
        assert not torch.allclose(got, clean)
        assert torch.equal(model(**b).logits, clean)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_swap_and_reinit_restore_bit_for_bit(family):
    model, b = classifier(family, seed=0), batch()
    source = AutoModel.from_config(CONFIGS[family]()).eval()
    saved = _state(model)
    with torch.no_grad():
        clean = model(**b).logits
        with swap_layers(model, source, [1]):
            a = ModelAdapter(model)
            for k, v in a.blocks[1].state_dict().items():
                assert torch.equal(v, ModelAdapter(source).blocks[1].state_dict()[k])
            assert not torch.allclose(model(**b).logits, clean)
        with reinit_layers(model, [0, 2], seed=3):
            first = {k: v.clone() for k, v in ModelAdapter(model).blocks[2].state_dict().items()}
        with reinit_layers(model, [0, 2], seed=3):
            again = ModelAdapter(model).blocks[2].state_dict()
            assert all(torch.equal(first[k], again[k]) for k in first)
        with pretrained_encoder_with_head(model, source):
            got = model.base_model(**b, output_hidden_states=True).hidden_states[-1]
            want = source(**b, output_hidden_states=True).hidden_states[-1]
            torch.testing.assert_close(got, want)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in saved.items())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decoder_pooling_reads_the_last_real_token_as_the_head_does(family):
    model, b = classifier(family), batch()
    with torch.no_grad():
        last = model.base_model(**b).last_hidden_state
        pooled = ModelAdapter(model).pool(last, b["attention_mask"])
        head = getattr(model, "score")
        torch.testing.assert_close(head(pooled), model(**b).logits)
    # left padding: the last real token is the final position
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    assert torch.equal(pool(h, mask, "last"), h[:, -1])
    assert torch.equal(pool(h, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]), "last"), torch.stack([h[0, 1], h[1, 2]]))


def test_unknown_architecture_is_one_line():
    with pytest.raises(UnsupportedModel, match="cannot find its transformer blocks") as e:
        ModelAdapter(torch.nn.Linear(2, 2))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"allowed 0\.\.3"):
        layer_module(classifier("bert"), 4)


def test_ensure_pad_token_uses_the_models_pad_or_eos():
    from probe.models.backbones import load_tokenizer

    tok = load_tokenizer("tiny-bert")
    tok.pad_token = None
    model = classifier("gpt2")
    ensure_pad_token(tok, model)
    assert tok.pad_token_id == 0 and model.config.pad_token_id == 0
