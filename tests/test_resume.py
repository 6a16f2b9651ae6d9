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


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_a_shared_store_runs_each_block_once_per_batch_across_resume_blocks(family):
    from probe.causal.hooks import KeptStates

    model = _models()[family].eval()
    batch = _batch()
    blocks = ModelAdapter(model).blocks
    calls = {i: 0 for i in range(len(blocks))}
    handles = [next(m for m in b.modules() if m is not b and list(m.parameters())).register_forward_hook(
        lambda *a, i=i: calls.__setitem__(i, calls[i] + 1)) for i, b in enumerate(blocks)]

    def edit(h):
        return 0.5 * h + 1.0

    kept = KeptStates()
    outs = {}
    with torch.no_grad():
        for layer in (1, 2, 1, 2):  # climbing, then back down and up again
            with resume_at(model, layer, kept):
                model(**batch)  # first pass of this block: starts from the deepest layer kept so far
                with edit_hidden_state(model, layer, edit):
                    outs[layer] = model(**batch).logits
        # block 0 runs once; block 1 above layer 1 (2 passes, twice) and once below layer 2; block 2 every time
        # above (4 contexts × 2 passes), never again below
        assert calls == {0: 1, 1: 5, 2: 8}
        for layer, got in outs.items():
            with edit_hidden_state(model, layer, edit):
                torch.testing.assert_close(got, model(**batch).logits, rtol=0, atol=0)
    for h in handles:
        h.remove()
    assert set(kept.by_batch[next(iter(kept.by_batch))]) == {1, 2}


def test_a_store_over_its_budget_keeps_only_the_resume_layer_while_its_block_lasts():
    from probe.causal.hooks import KeptStates

    model = _models()["bert"].eval()
    kept = KeptStates(max_bytes=0)
    with torch.no_grad():
        with resume_at(model, 2, kept):
            plain = model(**_batch()).logits
            assert kept.bytes > 0 and set(next(iter(kept.by_batch.values()))) == {2}
            torch.testing.assert_close(model(**_batch()).logits, plain, rtol=0, atol=0)
    assert kept.bytes == 0 and not any(kept.by_batch.values())
