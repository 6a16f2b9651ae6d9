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
