"""Forward hooks that edit one layer's hidden state, inside context managers only.

Layer ``l`` means what ``output_hidden_states`` calls ``hidden_states[l]`` (DESIGN.md §2):
``0`` is the output of the embeddings module and ``l >= 1`` the output of transformer block
``l`` (``encoder.layer[l - 1]``). An edit ``fn`` replaces that output ``h`` (``[batch, seq,
hidden]``) by ``fn(h)`` before anything downstream reads it, so the later blocks, the
classifier head and the recorded ``hidden_states`` all see the edited tensor: the intervention
of causal probing (Elazar et al. 2021, "Amnesic Probing"; Belrose et al. 2023, LEACE).

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

Edit = Callable[[torch.Tensor], torch.Tensor]


def encoder_of(model: nn.Module) -> nn.Module:
    """The BERT-like encoder (embeddings + blocks) of a HF classifier, an ``AutoModel`` or a
    :class:`~probe.models.probe_head.ProbeHeadClassifier` (attribute ``encoder``)."""
    base = getattr(model, "base_model", None)
    if base is None and isinstance(getattr(model, "encoder", None), nn.Module):
        base = getattr(model.encoder, "base_model", model.encoder)
    if base is None or _blocks(base) is None or getattr(base, "embeddings", None) is None:
        raise ValueError(
            f"{type(model).__name__}: expected a transformer encoder with `embeddings` and a list of blocks "
            "(`encoder.layer`), a classifier around one (`base_model`), or a probe head (`encoder`)"
        )
    return base


def _blocks(encoder: nn.Module) -> nn.ModuleList | None:
    for path in (("encoder", "layer"), ("transformer", "layer"), ("layers",)):
        obj = encoder
        for name in path:
            obj = getattr(obj, name, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    return None


def n_layers(model: nn.Module) -> int:
    """Number of hidden states the model returns: blocks + 1 (the embeddings output)."""
    return len(_blocks(encoder_of(model))) + 1


def layer_module(model: nn.Module, layer: int) -> nn.Module:
    """The module whose output is ``hidden_states[layer]``: the embeddings for 0, else block ``layer``."""
    encoder = encoder_of(model)
    blocks = _blocks(encoder)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= len(blocks):
        raise ValueError(
            f"layer {layer!r} is out of range: allowed 0..{len(blocks)} "
            f"(0 = embeddings output, l = output of block l; this model has {len(blocks)} blocks)"
        )
    return encoder.embeddings if layer == 0 else blocks[layer - 1]


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
