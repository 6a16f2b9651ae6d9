"""Forward hooks that edit one layer's hidden state, inside context managers only.

Layer ``l`` means what ``output_hidden_states`` calls ``hidden_states[l]`` (docs/design.md §2):
``0`` is the embedding output and ``l >= 1`` the output of transformer block ``l``; which module
produces it is the model adapter's business (:meth:`probe.models.adapter.ModelAdapter.layer_module`).
An edit ``fn`` replaces that output ``h`` (``[batch, seq, hidden]``) by ``fn(h)`` before anything
downstream reads it, so the later blocks, the classifier head and the recorded ``hidden_states``
all see the edited tensor: the intervention of causal probing (Elazar et al. 2021, "Amnesic
Probing"; Belrose et al. 2023, LEACE).

transformers 5 records ``hidden_states`` with its own forward hooks on the blocks, installed
the first time hidden states are requested. The edit hook is registered with ``prepend=True``
so it runs before them whichever came first; ``hidden_states[0]`` is recorded as the input of
the first block, which is the (edited) embeddings output.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from probe.models.adapter import ModelAdapter

Edit = Callable[[torch.Tensor], torch.Tensor]


def encoder_of(model: nn.Module) -> nn.Module:
    """The transformer (embeddings + blocks) of a HF classifier, an ``AutoModel`` or a
    :class:`~probe.models.probe_head.ProbeHeadClassifier`, for any architecture the
    :class:`~probe.models.adapter.ModelAdapter` knows."""
    return ModelAdapter(model).base


def n_layers(model: nn.Module) -> int:
    """Number of hidden states the model returns: blocks + 1 (the embeddings output)."""
    return ModelAdapter(model).n_layers


def layer_module(model: nn.Module, layer: int) -> nn.Module:
    """The module whose output is ``hidden_states[layer]`` (:meth:`ModelAdapter.layer_module`)."""
    return ModelAdapter(model).layer_module(layer)


def _replace_first(output, fn: Edit):
    """``output`` with its hidden state (the tensor itself, or the first element) replaced by ``fn`` of it."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, Mapping):  # ModelOutput: an ordered dict of its non-None fields
        key = next(iter(output.keys()))
        return type(output)(**{**output, key: fn(output[key])})
    if isinstance(output, tuple):
        return (fn(output[0]),) + tuple(output[1:])
    raise TypeError(f"cannot edit a module output of type {type(output).__name__}")


@contextmanager
def edit_hidden_state(model: nn.Module, layer: int, fn: Edit) -> Iterator[None]:
    """Within the block, ``hidden_states[layer]`` of every forward pass is ``fn(h)``.

    ``fn`` maps a ``[batch, seq, hidden]`` tensor to one of the same shape (an eraser from
    :mod:`probe.causal.erasure`, a patch, ...). The hook is removed on exit, also when the
    body raises.
    """
    module = layer_module(model, layer)

    def hook(_module, _args, output):
        return _replace_first(output, fn)

    handle = module.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def edit_hidden_states(model: nn.Module, edits: Mapping[int, Edit]) -> Iterator[None]:
    """Several edits at once: ``{layer: fn}``; all hooks are removed on exit."""
    for layer in edits:  # validate every layer before registering any hook
        layer_module(model, layer)
    with ExitStack() as stack:
        for layer, fn in edits.items():
            stack.enter_context(edit_hidden_state(model, layer, fn))
        yield


@contextmanager
def resume_at(model: nn.Module, layer: int) -> Iterator[None]:
    """Within the block, a forward pass whose inputs were seen before starts at ``hidden_states[layer]``.

    Interventions at or above ``layer`` (an edit of that hidden state, a head ablated in the block
    that reads it) leave everything below it unchanged, so the blocks below need to run once per
    batch: the first pass of a batch (its ``input_ids`` and ``attention_mask``, read by a forward
    pre-hook on ``model``) runs normally and keeps the output of the module that produces
    ``hidden_states[layer]``; a later pass of the same batch returns that output (a copy) from
    every block up to it instead of computing them. Hooks on that module still run on the kept
    output, so an edit applies as before. Inference only (under ``torch.no_grad``): with
    gradients, or for layer 0 (the embeddings, cheap), or where the module is not a block (the
    final norm of a pre-norm decoder), nothing is reused. The outputs of one layer for every
    batch seen are kept in memory until the block ends.
    """
    adapter = ModelAdapter(model)
    adapter.check_layer(layer)
    if layer == 0 or adapter.layer_module(layer) is not adapter.blocks[layer - 1]:
        yield
        return
    blocks = list(adapter.blocks[:layer])
    cache: dict[tuple, object] = {}
    state: dict[str, object] = {"key": None, "hit": False}

    def pre_hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None or torch.is_grad_enabled():
            state["key"], state["hit"] = None, False
            return None
        state["key"] = (tuple(ids.shape), ids.cpu().numpy().tobytes(),
                        None if mask is None else mask.cpu().numpy().tobytes())
        state["hit"] = state["key"] in cache
        return None

    def patched(block: nn.Module, original: Callable, last: bool) -> Callable:
        def forward(*args, **kwargs):
            if state["hit"]:
                return _replace_first(cache[state["key"]], torch.clone)
            out = original(*args, **kwargs)
            if last and state["key"] is not None:
                cache[state["key"]] = _replace_first(out, torch.clone)
            return out
        return forward

    # a block's own forward attribute (accelerate's device hooks wrap forward that way) is kept and restored
    saved = {id(block): vars(block).get("forward") for block in blocks}
    handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        for i, block in enumerate(blocks):
            block.forward = patched(block, block.forward, i == len(blocks) - 1)
        yield
    finally:
        handle.remove()
        for block in blocks:
            if saved[id(block)] is not None:
                block.forward = saved[id(block)]
            elif "forward" in vars(block):
                del block.forward
