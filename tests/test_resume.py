"""resume_at: repeated passes over the same batches skip the blocks below the layer and give the same
logits, with and without an edit at that layer, for encoder and decoder families."""

import pytest
import torch

from probe.causal.ablation import ablate_heads
from probe.causal.hooks import edit_hidden_state, resume_at
from probe.models.adapter import ModelAdapter


def _models():
    from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification,
                              LlamaConfig, LlamaForSequenceClassification)

    torch.manual_seed(0)
    return {
        "bert": BertForSequenceClassification(BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            num_labels=3)),
        "gpt2": GPT2ForSequenceClassification(GPT2Config(
            vocab_size=100, n_embd=32, n_layer=3, n_head=4, num_labels=3, pad_token_id=0, bos_token_id=1,
            eos_token_id=1)),
        "llama": LlamaForSequenceClassification(LlamaConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, num_labels=3, pad_token_id=0, bos_token_id=1, eos_token_id=1)),
    }


def _batch():
    ids = torch.randint(2, 100, (4, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[0, 7:], mask[0, 7:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("layer", [1, 2])
def test_resumed_passes_equal_full_passes_and_skip_the_blocks_below(family, layer):
    model = _models()[family].eval()
    batch = _batch()
    blocks = ModelAdapter(model).blocks
    calls = []
    inner = next(m for m in blocks[0].modules() if m is not blocks[0] and list(m.parameters()))
    handle = inner.register_forward_hook(lambda *a: calls.append(1))

    def edit(h):
        return 0.5 * h + 1.0

    with torch.no_grad():
        plain = model(**batch).logits
        with edit_hidden_state(model, layer, edit):
            edited = model(**batch).logits
        assert not torch.allclose(plain, edited)  # the edit matters, so equality below means something
        calls.clear()
        with resume_at(model, layer):
            first = model(**batch).logits  # runs everything, keeps hidden_states[layer]
            with edit_hidden_state(model, layer, edit):
                resumed_edit = model(**batch).logits
            resumed = model(**batch).logits
            with ablate_heads(model, [(layer, 0)]) if layer < len(blocks) else torch.no_grad():
                model(**batch)
    handle.remove()
    assert len(calls) == 1  # block 0 ran in the first pass only
    torch.testing.assert_close(first, plain, rtol=0, atol=0)
    torch.testing.assert_close(resumed, plain, rtol=0, atol=0)
    torch.testing.assert_close(resumed_edit, edited, rtol=0, atol=0)
    assert all("forward" not in vars(b) for b in blocks)  # patches removed


def test_resume_is_undone_after_an_error_and_inactive_with_gradients():
    model = _models()["bert"].eval()
    blocks = ModelAdapter(model).blocks
    with pytest.raises(RuntimeError):
        with resume_at(model, 2):
            raise RuntimeError("boom")
    assert all("forward" not in vars(b) for b in blocks)
    calls = []
    inner = next(m for m in blocks[0].modules() if m is not blocks[0] and list(m.parameters()))
    handle = inner.register_forward_hook(lambda *a: calls.append(1))  # hooks on the block itself run either way
    with resume_at(model, 2):
        model(**_batch())
        model(**_batch())  # gradients on: nothing reused
        with torch.no_grad():
            model(**_batch())
            model(**_batch())  # reused
    handle.remove()
    assert len(calls) == 3


def test_a_forward_the_block_already_had_is_kept_and_restored():
    """accelerate's device hooks replace a block's forward by an instance attribute; resume_at wraps it and puts
    it back afterwards instead of deleting it."""
    model = _models()["bert"].eval()
    block = ModelAdapter(model).blocks[0]
    calls = []
    original = block.forward

    def wrapped(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    block.forward = wrapped
    with torch.no_grad(), resume_at(model, 2):
        model(**_batch())
        model(**_batch())
    assert vars(block)["forward"] is wrapped
    assert len(calls) == 1  # the wrapper ran for the first pass and was skipped, like the block, for the second
