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


def deepest_resumable(model: nn.Module) -> int:
    """The deepest layer :func:`resume_at` can start from: the last hidden state a block produces (a
    pre-norm decoder's last one is its final norm's output)."""
    adapter = ModelAdapter(model)
    return max(l for l in range(adapter.n_layers) if l == 0 or adapter.layer_module(l) is adapter.blocks[l - 1])


class KeptStates:
    """Hidden states of the unedited model, per batch and layer, shared by the :func:`resume_at` blocks of
    one causal stage, so that each block runs once per batch for all of them (an erasure sweep that
    climbs the layers, then the swaps, then each head's block). At most ``max_bytes`` are kept; past
    that, a :func:`resume_at` block keeps only its own layer for as long as it lasts. Only valid while
    the model's weights below the layers kept stay as they were: one object per model and stage."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.by_batch: dict[tuple, dict[int, object]] = {}

    def keep(self, key: tuple, layer: int, output, required: bool) -> bool:
        """Keep a copy of ``output`` if it fits the budget, or anyway if ``required``; returns whether it
        fitted (a required one that did not is the caller's to :meth:`drop`)."""
        size = _first(output).element_size() * _first(output).nelement()
        fits = self.bytes + size <= self.max_bytes
        if fits or required:
            self.by_batch.setdefault(key, {})[layer] = _replace_first(output, torch.clone)
            self.bytes += size
        return fits

    def drop(self, key: tuple, layer: int) -> None:
        out = self.by_batch[key].pop(layer)
        self.bytes -= _first(out).element_size() * _first(out).nelement()

    def deepest(self, key: tuple, layer: int) -> int:
        """The deepest kept layer of this batch at or below ``layer`` (0: none)."""
        return max((l for l in self.by_batch.get(key, ()) if l <= layer), default=0)


def _first(output) -> torch.Tensor:
    """The hidden state of a module output (the tensor itself, or its first element)."""
    if isinstance(output, torch.Tensor):
        return output
    return next(iter(output.values())) if isinstance(output, Mapping) else output[0]


@contextmanager
def resume_at(model: nn.Module, layer: int, kept: KeptStates | None = None) -> Iterator[None]:
    """Within the block, a forward pass whose inputs were seen before starts at ``hidden_states[layer]``.

    Interventions at or above ``layer`` (an edit of that hidden state, a head ablated in the block
    that reads it) leave everything below it unchanged, so the blocks below need to run once per
    batch: the first pass of a batch (its ``input_ids`` and ``attention_mask``, read by a forward
    pre-hook on ``model``) runs normally and keeps the output of the module that produces
    ``hidden_states[layer]``; a later pass of the same batch returns that output (a copy) from
    every block up to it instead of computing them. Hooks on that module still run on the kept
    output, so an edit applies as before. Inference only (under ``torch.no_grad``): with
    gradients, or for layer 0 (the embeddings, cheap), or where the module is not a block (the
    final norm of a pre-norm decoder), nothing is reused.

    ``kept``: a :class:`KeptStates` shared with other ``resume_at`` blocks of the same model; a first
    pass then starts from the deepest layer any of them kept for the batch and keeps the outputs of
    the blocks it runs, within the store's memory budget. Without it, the outputs of ``layer`` for
    every batch seen are kept until the block ends.
    """
    adapter = ModelAdapter(model)
    adapter.check_layer(layer)
    if layer == 0 or adapter.layer_module(layer) is not adapter.blocks[layer - 1]:
        yield
        return
    blocks = list(adapter.blocks[:layer])
    kept = KeptStates(max_bytes=0) if kept is None else kept
    state: dict[str, object] = {"key": None, "start": 0}
    over_budget: list[tuple] = []  # this block's own layer, kept beyond the budget: dropped when it ends

    def pre_hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None or torch.is_grad_enabled():
            state["key"], state["start"] = None, 0
            return None
        state["key"] = (tuple(ids.shape), ids.cpu().numpy().tobytes(),
                        None if mask is None else mask.cpu().numpy().tobytes())
        state["start"] = kept.deepest(state["key"], layer)
        return None

    def patched(i: int, original: Callable) -> Callable:
        produces = i + 1  # block i's output is hidden_states[i + 1]

        def forward(*args, **kwargs):
            key, start = state["key"], state["start"]
            if produces <= start:  # the blocks below start are skipped (the next block ignores their output)
                return _replace_first(kept.by_batch[key][start], torch.clone)
            out = original(*args, **kwargs)
            if key is not None and not kept.keep(key, produces, out, required=produces == layer) \
                    and produces == layer:
                over_budget.append(key)
            return out
        return forward

    # a block's own forward attribute (accelerate's device hooks wrap forward that way) is kept and restored
    saved = {id(block): vars(block).get("forward") for block in blocks}
    handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        for i, block in enumerate(blocks):
            block.forward = patched(i, block.forward)
        yield
    finally:
        handle.remove()
        for key in over_budget:
            kept.drop(key, layer)
        for block in blocks:
            if saved[id(block)] is not None:
                block.forward = saved[id(block)]
            elif "forward" in vars(block):
                del block.forward
