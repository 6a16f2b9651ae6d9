"""Layer swaps, re-initialisation and attention-head ablation inside a fine-tuned classifier.

Every intervention is a context manager that edits the model in place and restores it
bit-for-bit on exit, also when the body raises:

* :func:`swap_layers` / :func:`swap_embeddings` copy blocks (or the embedding module) of a
  ``source`` model (the pretrained encoder) into the fine-tuned one, to localise where
  fine-tuning changed what matters (cf. Merchant et al. 2020, "What Happens To BERT Embeddings
  During Fine-tuning?"; Mosbach et al. 2020 on re-initialising/resetting upper layers);
* :func:`reinit_layers` replaces blocks by a fresh, seeded initialisation;
* :func:`pretrained_encoder_with_head` puts the fine-tuned head on the pretrained encoder;
* :func:`ablate_heads` zeroes single attention heads (Michel et al. 2019, "Are Sixteen Heads
  Really Better than One?"), and :func:`head_ablation_scan` scores every head in turn.

Weights are *copied* into the model's own parameters (never the parameter objects swapped),
so ``source`` is never modified, devices and dtypes follow ``model``, and optimisers, hooks
and ``parameters()`` keep pointing at the same tensors. Where blocks, embeddings and attention
projections are is the :class:`~probe.models.adapter.ModelAdapter`'s business: every architecture it
knows (BERT, RoBERTa, DistilBERT, ELECTRA, GPT-2, Llama, Qwen2, Mistral), as classifiers, plain
encoders or a :class:`probe.models.probe_head.ProbeHeadClassifier`.
"""

from __future__ import annotations

import operator
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from probe.causal.hooks import KeptStates, deepest_resumable, resume_at
from probe.models.adapter import ModelAdapter


def encoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a classifier or encoder (:class:`~probe.models.adapter.ModelAdapter`)."""
    return ModelAdapter(model).blocks


def _check_index(items: Sequence[int], n: int, what: str) -> list[int]:
    """Sorted distinct integer indices in ``0..n-1``, else a ValueError."""
    out = []
    for item in items:
        try:
            i = operator.index(item)
        except TypeError:
            i = None
        if i is None or isinstance(item, bool):
            raise ValueError(f"{what} index {item!r} is not an integer")
        if not 0 <= i < n:
            raise ValueError(f"{what} {i} is out of range: there are {n} {what}s (0..{n - 1})")
        out.append(i)
    return sorted(set(out))


def _check_blocks(model: nn.Module, blocks: Sequence[int]) -> list[int]:
    return _check_index(blocks, len(encoder_blocks(model)), "block")


def _check_compatible(target: nn.Module, source: nn.Module, what: str) -> None:
    """Same parameter/buffer names and shapes, else a ValueError naming the first difference."""
    t = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    s = {k: tuple(v.shape) for k, v in source.state_dict().items()}
    if t.keys() != s.keys():
        diff = sorted(t.keys() ^ s.keys())
        raise ValueError(f"{what}: the model and the source differ in architecture (entries {diff[:3]})")
    for k in t:
        if t[k] != s[k]:
            raise ValueError(f"{what}: the model and the source differ in architecture ({k}: {t[k]} vs {s[k]})")


def _check_same_architecture(model: nn.Module, source: nn.Module) -> None:
    a, b = ModelAdapter(model), ModelAdapter(source)
    if a.layout != b.layout or a.n_blocks != b.n_blocks or a.hidden_size != b.hidden_size:
        raise ValueError(
            f"mismatched architectures: the model is a {a.family} with {a.n_blocks} blocks of hidden size "
            f"{a.hidden_size}, the source a {b.family} with {b.n_blocks} blocks of hidden size {b.hidden_size}")


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()}


@torch.no_grad()
def _load(module: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Copy ``values`` into ``module``'s own tensors (dtype and device of the module)."""
    for k, t in module.state_dict(keep_vars=True).items():
        t.copy_(values[k])


@contextmanager
def _restoring(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Snapshot ``modules`` on entry and copy the snapshot back on exit, whatever happens."""
    saved = [_snapshot(m) for m in modules]
    try:
        yield
    finally:
        for m, values in zip(modules, saved):
            _load(m, values)


@contextmanager
def swap_layers(model: nn.Module, source: nn.Module, blocks: Sequence[int]) -> Iterator[nn.Module]:
    """Blocks ``blocks`` (0-based) of ``model`` replaced by a copy of ``source``'s same blocks.

    ``source`` is the pretrained encoder (``AutoModel``) or another classifier of the same
    architecture; it is never modified. Yields ``model``.
    """
    _check_same_architecture(model, source)
    idx = _check_blocks(model, blocks)
    mine, theirs = encoder_blocks(model), encoder_blocks(source)
    for b in idx:
        _check_compatible(mine[b], theirs[b], f"block {b}")
    targets = [mine[b] for b in idx]
    with _restoring(targets):
        for b, target in zip(idx, targets):
            _load(target, {k: v.detach() for k, v in theirs[b].state_dict().items()})
        yield model


@contextmanager
def swap_embeddings(model: nn.Module, source: nn.Module) -> Iterator[nn.Module]:
    """``model``'s embedding modules replaced by a copy of ``source``'s. Yields ``model``."""
    a, b = ModelAdapter(model), ModelAdapter(source)
    mine, theirs = a.embedding_parts(), b.embedding_parts()
    if a.layout != b.layout or len(mine) != len(theirs):
        raise ValueError(f"embeddings: the model and the source differ in architecture ({a.family} vs {b.family})")
    for m, t in zip(mine, theirs):
        _check_compatible(m, t, "embeddings")
    with _restoring(mine):
        for m, t in zip(mine, theirs):
            _load(m, {k: v.detach() for k, v in t.state_dict().items()})
        yield model


@contextmanager
def pretrained_encoder_with_head(model: nn.Module, source: nn.Module) -> Iterator[nn.Module]:
    """The fine-tuned head on ``source``'s embeddings, all its blocks and (decoders) its final norm."""
    _check_same_architecture(model, source)
    mine, theirs = ModelAdapter(model).encoder_parts(), ModelAdapter(source).encoder_parts()
    for k, (m, t) in enumerate(zip(mine, theirs)):
        _check_compatible(m, t, f"encoder part {k}")
    with _restoring(mine):
        for m, t in zip(mine, theirs):
            _load(m, {k: v.detach() for k, v in t.state_dict().items()})
        yield model


@contextmanager
def reinit_layers(model: nn.Module, blocks: Sequence[int], seed: int) -> Iterator[nn.Module]:
    """Blocks ``blocks`` replaced by a fresh initialisation, deterministic given ``seed``.

    Weights are drawn in float32 on the CPU from one ``torch.Generator`` seeded with ``seed``
    (blocks in increasing order; :meth:`~probe.models.adapter.ModelAdapter.reinit_block`), so they
    are the same on every device and the global RNG is untouched. Yields ``model``.
    """
    adapter = ModelAdapter(model)
    idx = _check_blocks(model, blocks)
    targets = [adapter.blocks[b] for b in idx]
    generator = torch.Generator().manual_seed(int(seed))
    with _restoring(targets):
        for b in idx:
            adapter.reinit_block(b, generator)
        yield model


@contextmanager
def ablate_heads(model: nn.Module, heads: Sequence[tuple[int, int]]) -> Iterator[nn.Module]:
    """Attention heads ``(block, head)`` (0-based) switched off: their output is zeroed.

    The old ``head_mask = 0`` for those heads (removed from ``BertModel.forward`` in
    transformers 5): a forward pre-hook on the attention output projection zeroes the
    slice ``[h * head_dim, (h + 1) * head_dim)`` of its input, the concatenated head contexts.
    Michel et al. 2019, "Are Sixteen Heads Really Better than One?". Yields ``model``.
    """
    adapter = ModelAdapter(model)
    n_heads, head_dim = adapter.n_heads, adapter.head_dim
    per_block: dict[int, list[int]] = {}
    for item in heads:
        try:
            b, h = item
        except (TypeError, ValueError):
            raise ValueError(f"head {item!r} is not a (block, head) pair") from None
        (b,) = _check_blocks(model, [b])
        (h,) = _check_index([h], n_heads, "head")
        per_block.setdefault(b, []).append(h)

    def make_hook(cols: list[slice]):
        def hook(module, args):
            x = args[0].clone()
            for s in cols:
                x[..., s] = 0
            return (x, *args[1:])
        return hook

    handles = []
    try:
        for b, hs in sorted(per_block.items()):
            cols = [slice(h * head_dim, (h + 1) * head_dim) for h in sorted(set(hs))]
            handles.append(adapter.attention_output(b).register_forward_pre_hook(make_hook(cols)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def head_ablation_scan(model: nn.Module, evaluate: Callable[[], float], n_blocks: int, n_heads: int,
                       progress: bool = True, kept: KeptStates | None = None):
    """``evaluate()`` with each single head ablated in turn, and without ablation.

    One row per (block, head), blocks and heads in increasing order; columns ``block``,
    ``head``, ``score``, ``baseline`` (the unablated score, evaluated once) and
    ``change = score - baseline``. ``kept``: hidden states shared with other :func:`resume_at` blocks.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    adapter = ModelAdapter(model)
    total, heads_per_block = adapter.n_blocks, adapter.n_heads
    if not 0 < n_blocks <= total:
        raise ValueError(f"n_blocks={n_blocks}: the model has {total} blocks")
    if not 0 < n_heads <= heads_per_block:
        raise ValueError(f"n_heads={n_heads}: blocks have {heads_per_block} heads")
    kept = KeptStates() if kept is None else kept
    with resume_at(model, deepest_resumable(model), kept):  # keeps every layer of the batches (in budget)
        baseline = float(evaluate())
    rows = []
    bar = tqdm(total=n_blocks * n_heads, desc="head ablation", unit="head", disable=not progress, leave=False)
    for b in range(n_blocks):
        with resume_at(model, b, kept):  # the blocks below b run once for all of b's heads
            for h in range(n_heads):
                with ablate_heads(model, [(b, h)]):
                    score = float(evaluate())
                rows.append({"block": b, "head": h, "score": score, "baseline": baseline, "change": score - baseline})
                bar.update()
    bar.close()
    return pd.DataFrame(rows, columns=["block", "head", "score", "baseline", "change"])
