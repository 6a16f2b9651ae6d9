"""Layer swaps, re-initialisation and attention-head ablation inside a fine-tuned classifier.

Every intervention is a context manager that edits the model in place and restores it
bit-for-bit on exit, also when the body raises:

* :func:`swap_layers` / :func:`swap_embeddings` copy blocks (or the embedding module) of a
  ``source`` model (the pretrained encoder) into the fine-tuned one, to localise where
  fine-tuning changed what matters (cf. Merchant et al. 2020, "What Happens To BERT Embeddings
  During Fine-tuning?"; Mosbach et al. 2020 on re-initialising/resetting upper layers);
* :func:`reinit_layers` replaces blocks by a fresh, seeded BERT initialisation;
* :func:`pretrained_encoder_with_head` puts the fine-tuned head on the pretrained encoder;
* :func:`ablate_heads` zeroes single attention heads (Michel et al. 2019, "Are Sixteen Heads
  Really Better than One?"), and :func:`head_ablation_scan` scores every head in turn.

Weights are *copied* into the model's own parameters (never the parameter objects swapped),
so ``source`` is never modified, devices and dtypes follow ``model``, and optimisers, hooks
and ``parameters()`` keep pointing at the same tensors. Supported: HF BERT-like models
(BERT, RoBERTa, ELECTRA, MiniLM: ``base_model.encoder.layer`` and
``attention.output.dense``), as classifiers, plain encoders or a
:class:`probe.models.probe_head.ProbeHeadClassifier`.
"""

from __future__ import annotations

import operator
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn


def _backbone(model: nn.Module) -> nn.Module:
    """The module holding ``.embeddings`` and ``.encoder.layer`` (``BertModel`` and kin)."""
    m = model
    for _ in range(4):
        base = getattr(m, "base_model", m)
        enc = getattr(base, "encoder", None)
        if isinstance(getattr(enc, "layer", None), nn.ModuleList):
            return base
        if not isinstance(enc, nn.Module):
            break
        m = enc  # e.g. ProbeHeadClassifier.encoder is a BertModel
    raise ValueError(
        f"{type(model).__name__}: not a BERT-like model (expected base_model.encoder.layer, "
        "as in BERT, RoBERTa, ELECTRA or MiniLM)"
    )


def encoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a HF BERT-like classifier or encoder (``base_model.encoder.layer``)."""
    return _backbone(model).encoder.layer


def _embeddings(model: nn.Module) -> nn.Module:
    emb = getattr(_backbone(model), "embeddings", None)
    if not isinstance(emb, nn.Module):
        raise ValueError(f"{type(model).__name__}: no embedding module (expected base_model.embeddings)")
    return emb


def _hidden_size(model: nn.Module) -> int | None:
    return getattr(getattr(_backbone(model), "config", None), "hidden_size", None)


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
    n, n_src = len(encoder_blocks(model)), len(encoder_blocks(source))
    h, h_src = _hidden_size(model), _hidden_size(source)
    if n != n_src or (h is not None and h_src is not None and h != h_src):
        raise ValueError(
            f"mismatched architectures: the model has {n} blocks of hidden size {h}, "
            f"the source {n_src} blocks of hidden size {h_src}"
        )


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
    """``model``'s embedding module replaced by a copy of ``source``'s. Yields ``model``."""
    mine, theirs = _embeddings(model), _embeddings(source)
    _check_compatible(mine, theirs, "embeddings")
    with _restoring([mine]):
        _load(mine, {k: v.detach() for k, v in theirs.state_dict().items()})
        yield model


@contextmanager
def pretrained_encoder_with_head(model: nn.Module, source: nn.Module) -> Iterator[nn.Module]:
    """The fine-tuned head (pooler + classifier) on ``source``'s embeddings and all its blocks."""
    _check_same_architecture(model, source)
    with ExitStack() as stack:
        stack.enter_context(swap_embeddings(model, source))
        stack.enter_context(swap_layers(model, source, range(len(encoder_blocks(model)))))
        yield model


def _is_layer_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or "LayerNorm" in type(module).__name__


@torch.no_grad()
def _bert_init_(block: nn.Module, std: float, generator: torch.Generator) -> None:
    """``PreTrainedModel._init_weights`` for BERT, drawn from ``generator`` (on the CPU).

    Linear / Embedding weights ~ N(0, std) (Embedding padding row 0), Linear biases 0,
    LayerNorm weight 1 and bias 0. Re-implemented rather than called: in transformers 5 the
    init functions skip tensors flagged ``_is_hf_initialized`` (set by ``from_pretrained``), so
    ``model._init_weights`` is a silent no-op on a loaded checkpoint, and it draws from the
    global RNG.
    """
    done: set[int] = set()
    for module in block.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            w = module.weight
            w.copy_(torch.empty(w.shape, dtype=torch.float32).normal_(0.0, std, generator=generator))
            done.add(id(w))
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                w[module.padding_idx].zero_()
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
                done.add(id(module.bias))
        elif _is_layer_norm(module):
            if getattr(module, "weight", None) is not None:
                module.weight.fill_(1.0)
                done.add(id(module.weight))
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
                done.add(id(module.bias))
    missed = [n for n, p in block.named_parameters() if id(p) not in done]
    if missed:
        raise ValueError(f"reinit_layers: no initialisation rule for parameters {missed[:3]}")


@contextmanager
def reinit_layers(model: nn.Module, blocks: Sequence[int], seed: int) -> Iterator[nn.Module]:
    """Blocks ``blocks`` replaced by a fresh BERT initialisation, deterministic given ``seed``.

    Weights are drawn in float32 on the CPU from one ``torch.Generator`` seeded with ``seed``
    (blocks in increasing order), so they are the same on every device and the global RNG is
    untouched. std = ``config.initializer_range`` (0.02 if absent). Yields ``model``.
    """
    idx = _check_blocks(model, blocks)
    std = getattr(getattr(_backbone(model), "config", None), "initializer_range", None) or 0.02
    targets = [encoder_blocks(model)[b] for b in idx]
    generator = torch.Generator().manual_seed(int(seed))
    with _restoring(targets):
        for block in targets:
            _bert_init_(block, float(std), generator)
        yield model


def _attention_output_projection(block: nn.Module) -> nn.Linear:
    proj = getattr(getattr(getattr(block, "attention", None), "output", None), "dense", None)
    if not isinstance(proj, nn.Linear):
        raise ValueError(f"{type(block).__name__}: no attention output projection (expected attention.output.dense)")
    return proj


def _num_heads(model: nn.Module) -> tuple[int, int]:
    """``(number of heads, head dimension)`` of ``model``'s self-attention."""
    block = encoder_blocks(model)[0]
    attn = getattr(getattr(block, "attention", None), "self", None)
    n = getattr(attn, "num_attention_heads", None) or getattr(_backbone(model).config, "num_attention_heads")
    d = getattr(attn, "attention_head_size", None) or _hidden_size(model) // n
    return int(n), int(d)


@contextmanager
def ablate_heads(model: nn.Module, heads: Sequence[tuple[int, int]]) -> Iterator[nn.Module]:
    """Attention heads ``(block, head)`` (0-based) switched off: their output is zeroed.

    The old ``head_mask = 0`` for those heads (removed from ``BertModel.forward`` in
    transformers 5): a forward pre-hook on the attention output projection zeroes the
    slice ``[h * head_dim, (h + 1) * head_dim)`` of its input, the concatenated head contexts.
    Michel et al. 2019, "Are Sixteen Heads Really Better than One?". Yields ``model``.
    """
    n_heads, head_dim = _num_heads(model)
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

    blocks = encoder_blocks(model)
    handles = []
    try:
        for b, hs in sorted(per_block.items()):
            cols = [slice(h * head_dim, (h + 1) * head_dim) for h in sorted(set(hs))]
            handles.append(_attention_output_projection(blocks[b]).register_forward_pre_hook(make_hook(cols)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def head_ablation_scan(model: nn.Module, evaluate: Callable[[], float], n_blocks: int, n_heads: int,
                       progress: bool = True):
    """``evaluate()`` with each single head ablated in turn, and without ablation.

    One row per (block, head), blocks and heads in increasing order; columns ``block``,
    ``head``, ``score``, ``baseline`` (the unablated score, evaluated once) and
    ``change = score - baseline``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    total, heads_per_block = len(encoder_blocks(model)), _num_heads(model)[0]
    if not 0 < n_blocks <= total:
        raise ValueError(f"n_blocks={n_blocks}: the model has {total} blocks")
    if not 0 < n_heads <= heads_per_block:
        raise ValueError(f"n_heads={n_heads}: blocks have {heads_per_block} heads")
    baseline = float(evaluate())
    rows = []
    pairs = [(b, h) for b in range(n_blocks) for h in range(n_heads)]
    for b, h in tqdm(pairs, desc="head ablation", unit="head", disable=not progress, leave=False):
        with ablate_heads(model, [(b, h)]):
            score = float(evaluate())
        rows.append({"block": b, "head": h, "score": score, "baseline": baseline, "change": score - baseline})
    return pd.DataFrame(rows, columns=["block", "head", "score", "baseline", "change"])
