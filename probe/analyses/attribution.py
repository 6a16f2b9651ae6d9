"""Word-level attributions for a sequence classifier, batched and memory-bounded (captum).

Methods (all explain the *predicted* class ŷ of each example):

- ``integrated_gradients``: Layer Integrated Gradients on the input (word) embedding layer
  (Sundararajan et al. 2017). The baseline replaces every real token by ``[PAD]`` and keeps
  ``[CLS]`` / ``[SEP]`` as they are: the special tokens are part of every input the model
  ever saw, so keeping them makes the baseline an "empty sentence" rather than an input out
  of distribution, and puts all attribution on the words. Padding positions are identical
  in input and baseline and masked out, so they receive exactly zero attribution. The pad token
  is the tokenizer's own (for a decoder without one, the EOS token the run pads with,
  :func:`probe.models.adapter.ensure_pad_token`): no ``[PAD]`` or ``[MASK]`` is assumed.
- ``saliency``: the L2 norm over the embedding dimension of the gradient of F w.r.t. the
  word-embedding output (Simonyan et al. 2014); unsigned.
- ``input_x_gradient``: gradient · embedding, summed over the embedding dimension
  (Shrikumar et al. 2016; captum ``LayerGradientXActivation``); signed.
- ``occlusion``: every word in turn has all its subwords replaced by ``[MASK]`` (or
  ``[PAD]``, see ``occlusion_token``; tokenizers without a mask token, decoders', use the pad token);
  its score is F(x) − F(x with the word occluded)
  (Zeiler & Fergus 2014). Implemented with captum's ``FeatureAblation`` and a word-id
  feature mask, because captum's ``Occlusion`` slides contiguous windows over token
  positions, which do not line up with words. ``[MASK]`` is the default: it is the token a
  BERT-style encoder was pretrained to read as "a word is missing here".

F is the logit of ŷ (``output="logit"``, default) or its probability (``"probability"``).
For a token classifier, ``word_positions`` picks one word per example and F is the logit (or
probability) of that word's tag at its first subword: the position is passed to the forward
function through captum's ``additional_forward_args``, which captum expands along with the
attention mask over IG steps and perturbations (see :mod:`probe.tasks.tokens.attribution`).
Words are the whitespace-separated words of the input text (or the given words, when an
input is already split into words, as for token classification; for a pair of texts, the words of
the first text then those of the second, ``n_first`` marking the boundary); subword scores are summed per
word via the fast tokenizer's ``word_ids()`` (the text is tokenised as pre-split words, which
for WordPiece tokenizers gives exactly the ids of tokenising the text). Words cut off by
``max_length`` truncation are not part of the result: ``words`` holds the covered prefix.

Batching: examples are sorted by length (occlusion: word count) and grouped; each group is
padded (attention mask 0 on padding) and attributed in one call, captum's ``internal_batch_size``
chosen so that one forward pass holds at most ``token_budget`` tokens (``rows × padded length``).
Memory thus stays bounded on long inputs, and the results equal a plain per-example captum
call up to float rounding (checked in ``tests/test_attribution.py``).

Reading the attributions (token positions, heatmap rows, the spurious-attribution metrics):
:mod:`probe.analyses.attribution_metrics`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from probe.analyses.attribution_batches import internal_batch_size as _internal_batch_size
from probe.analyses.attribution_batches import length_groups as _groups
from probe.analyses.attribution_batches import occlusion_groups as _occlusion_groups
from probe.analyses.attribution_batches import pad_ids as _pad
from probe.models.batching import current_token_budget
from probe.models.pair_tokens import encode_pair_words, segment_ids
from probe.models.words import covered_words, encode_words, first_subwords

METHODS = ("integrated_gradients", "saliency", "input_x_gradient", "occlusion")
SIGNED = {"integrated_gradients": True, "saliency": False, "input_x_gradient": True, "occlusion": True}
DELTA_WARN = 0.05


@dataclass
class WordAttributions:
    """Attributions of one example: one score per (covered) whitespace word.

    ``prediction`` is the explained class (for a token classifier: the explained tag of the
    word at index ``position``; ``position`` is ``None`` for sequence classification).
    """

    words: list[str]
    scores: np.ndarray
    prediction: int
    method: str
    delta: float = float("nan")  # |convergence delta| / |F(x) − F(baseline)|; IG only
    delta_large: bool = False
    position: int | None = None
    n_first: int | None = None  # a pair of texts: words[:n_first] are the first text's, the rest the second's


@dataclass
class _Encoded:
    ids: list[list[int]]
    word_ids: list[list[int | None]]
    words: list[list[str]]
    n_first: list[int] | None = None  # pairs: covered words of each first text


# --------------------------------------------------------------------------------------
# encoding and grouping


def _encode(tokenizer, texts: Sequence[str | Sequence[str]], max_length: int) -> _Encoded:
    """Tokenise whitespace words (:func:`probe.models.words.encode_words`) so that ``word_ids`` index
    ``text.split()`` (or the given words, for an input that is already a list of words); a pair of texts
    (a tuple) has the words of both, first then second (:func:`probe.models.pair_tokens.encode_pair_words`)."""
    if texts and isinstance(texts[0], tuple):
        enc, covered = encode_pair_words(tokenizer, [(a.split(), b.split()) for a, b in texts], max_length)
        words = [a.split()[:ca] + b.split()[:cb] for (a, b), (ca, cb) in zip(texts, covered)]
        return _Encoded(enc.input_ids, enc.word_ids, words, [ca for ca, _ in covered])
    split = [t.split() if isinstance(t, str) else list(t) for t in texts]
    enc = encode_words(tokenizer, split, max_length)
    words = [ws[:covered_words(w)] for ws, w in zip(split, enc.word_ids)]
    return _Encoded(enc.input_ids, enc.word_ids, words)


def _first_subwords(enc: _Encoded, word_positions: Sequence[int]) -> np.ndarray:
    """Token position of the first subword of word ``word_positions[i]`` in example i."""
    if len(word_positions) != len(enc.ids):
        raise ValueError(f"{len(word_positions)} word positions but {len(enc.ids)} inputs")
    out = np.zeros(len(enc.ids), dtype=np.int64)
    for i, (w, wids) in enumerate(zip(word_positions, enc.word_ids)):
        pos = first_subwords(wids, max(int(w) + 1, covered_words(wids)))[int(w)] if w >= 0 else -1
        if pos < 0:
            raise ValueError(
                f"input {i}: word {w} has no subword in the tokenised input ({len(enc.words[i])} words covered "
                f"at this max_length; an empty or out-of-range word cannot be explained)")
        out[i] = pos
    return out


def occlusion_id(tokenizer, occlusion_token: str = "mask") -> int:
    """The token an occluded word's pieces become: ``[MASK]`` where the tokenizer has one (what a
    masked-LM encoder reads as "a word is missing"), else the pad token (decoders have no mask)."""
    occ = tokenizer.mask_token_id if occlusion_token == "mask" else None
    occ = occ if occ is not None else tokenizer.pad_token_id
    if occ is None:
        raise ValueError(f"occlusion_token={occlusion_token!r}: the tokenizer has neither a mask nor a pad token")
    return occ


def pad_baseline(input_ids, tokenizer):
    """The IG baseline: every token that is not special (``[CLS]``, ``[SEP]``, ``[PAD]``,
    ...) replaced by ``[PAD]``."""
    import torch

    special = torch.isin(input_ids, torch.as_tensor(tokenizer.all_special_ids, device=input_ids.device))
    return torch.where(special, input_ids, torch.full_like(input_ids, tokenizer.pad_token_id))


# --------------------------------------------------------------------------------------
# model plumbing


def _device(model):
    return next(model.parameters()).device


@contextmanager
def _frozen_eval(model):
    """Eval mode (no dropout) and no parameter gradients, restored in ``finally``."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def forward_function(model, output: str = "logit") -> Callable:
    """``f(input_ids, attention_mask, positions=None) -> [N, K]`` logits (or probabilities) of ``model``.

    For a sequence classifier ``positions`` is ``None``. For a token classifier (logits
    ``[N, T, K]``) ``positions [N]`` selects one token position per row: the output is that
    position's tag logits, so captum attributes one tag of one word per example.
    """
    if output not in ("logit", "probability"):
        raise ValueError(f"output: {output!r}; allowed: 'logit', 'probability'")
    import torch

    def f(input_ids, attention_mask, positions=None, token_type_ids=None):
        segments = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **segments).logits.float()
        if positions is not None:
            logits = logits[torch.arange(logits.shape[0], device=logits.device), positions]
        return logits.softmax(-1) if output == "probability" else logits

    return f


def _to_words(token_scores: np.ndarray, word_ids: list[int | None], n_words: int, first_only: bool = False) -> np.ndarray:
    """Sum (or, with ``first_only``, take the first of) the subword scores of every word."""
    out = np.zeros(n_words, dtype=np.float64)
    seen = np.zeros(n_words, dtype=bool)
    for pos, w in enumerate(word_ids):
        if w is None or w >= n_words:
            continue
        if first_only:
            if not seen[w]:
                out[w] = token_scores[pos]
                seen[w] = True
        else:
            out[w] += token_scores[pos]
    return out


def _forward_args(tokenizer, enc: _Encoded, idx: np.ndarray, mask, token_pos: np.ndarray | None, device) -> tuple:
    """captum's ``additional_forward_args`` of one group: the attention mask, and the explained word's token
    position (token classifiers) or the segment ids the model was tuned with (pairs, where it has them)."""
    import torch

    if token_pos is not None:
        return mask, torch.as_tensor(token_pos[idx], device=device)
    segments = segment_ids(tokenizer, [enc.ids[i] for i in idx]) if enc.n_first is not None else None
    return (mask,) if segments is None else (mask, None, _pad(segments, 0)[0].to(device))


# --------------------------------------------------------------------------------------
# attribution


def attribute_tokens(
    model, tokenizer, texts: Sequence[str], method: str = "integrated_gradients", *,
    max_length: int = 128, n_steps: int = 50, token_budget: int | None = None, max_group: int = 64,
    output: str = "logit", occlusion_token: str = "mask", target: Sequence[int] | None = None,
    word_positions: Sequence[int] | None = None, word_subset: Sequence[Sequence[int]] | None = None,
) -> tuple[_Encoded, list[np.ndarray], np.ndarray, np.ndarray]:
    """Token-level attributions: ``(encoded, scores per example [len(ids)], predictions, relative deltas)``.

    See the module docstring for the methods. ``target`` overrides the predicted class.
    ``word_positions`` (token classifiers): explain the tag of word ``word_positions[i]`` of
    example i, read at its first subword. For IG the relative delta is
    ``|Σ attr − (F(x) − F(b))| / |F(x) − F(b)|`` (Sundararajan et al. 2017, completeness);
    NaN for the other methods. ``word_subset`` (occlusion only): the words occluded in example i, one
    pass each; the other words are not occluded and score 0.
    """
    import torch
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    if method not in METHODS:
        raise ValueError(f"method: {method!r}; allowed: {', '.join(METHODS)}")
    if occlusion_token not in ("mask", "pad"):
        raise ValueError(f"occlusion_token: {occlusion_token!r}; allowed: 'mask', 'pad'")
    enc = _encode(tokenizer, texts, max_length)
    token_budget = current_token_budget() if token_budget is None else token_budget
    n = len(texts)
    token_pos = None if word_positions is None else _first_subwords(enc, word_positions)
    scores: list[np.ndarray] = [np.zeros(0)] * n
    preds = np.zeros(n, dtype=np.int64)
    deltas = np.full(n, np.nan)
    device = _device(model)
    f = forward_function(model, output)
    layer = model.get_input_embeddings()
    lengths = [len(x) for x in enc.ids]
    rows = {"integrated_gradients": n_steps, "saliency": 1, "input_x_gradient": 1}.get(method, 1)

    with _frozen_eval(model):
        occluded = ([sorted({w for w in ws if w < len(e)}) for ws, e in zip(word_subset, enc.words)]
                    if word_subset is not None else [list(range(len(w))) for w in enc.words])
        groups = (_occlusion_groups([len(w) for w in occluded], lengths, token_budget, max_group)
                  if method == "occlusion" else _groups(lengths, rows, token_budget, max_group))
        for idx in groups:
            input_ids, mask = _pad([enc.ids[i] for i in idx], tokenizer.pad_token_id)
            input_ids, mask = input_ids.to(device), mask.to(device)
            args = _forward_args(tokenizer, enc, idx, mask, token_pos, device)
            with torch.no_grad():
                fx = f(input_ids, *args)
            tgt = fx.argmax(-1) if target is None else torch.as_tensor([target[i] for i in idx], device=device)
            preds[idx] = tgt.cpu().numpy()
            if method == "integrated_gradients":
                baseline = pad_baseline(input_ids, tokenizer)
                lig = LayerIntegratedGradients(f, layer)
                attr = lig.attribute(
                    input_ids, baselines=baseline, target=tgt, additional_forward_args=args,
                    n_steps=n_steps, internal_batch_size=_internal_batch_size(len(idx), n_steps, input_ids.shape[1], token_budget),
                )
                tok = attr.sum(-1).detach()
                with torch.no_grad():
                    fb = f(baseline, *args)
                sel = torch.arange(len(idx), device=device)
                diff = (fx[sel, tgt] - fb[sel, tgt]).double()
                delta = (tok.double() * mask).sum(-1) - diff
                deltas[idx] = (delta.abs() / diff.abs().clamp_min(1e-12)).cpu().numpy()
            elif method in ("saliency", "input_x_gradient"):
                lgxa = LayerGradientXActivation(f, layer, multiply_by_inputs=method == "input_x_gradient")
                attr = lgxa.attribute(input_ids, target=tgt, additional_forward_args=args).detach()
                tok = attr.norm(dim=-1) if method == "saliency" else attr.sum(-1)
            else:
                tok = _occlude(f, input_ids, tgt, args, [occluded[i] for i in idx], [enc.word_ids[i] for i in idx],
                               occlusion_id(tokenizer, occlusion_token), token_budget, word_subset is not None)
            tok = (tok.float() * mask).cpu().numpy()
            for r, i in enumerate(idx):
                scores[i] = tok[r, : lengths[i]].astype(np.float64)
    return enc, scores, preds, deltas


def _occlude(f, input_ids, tgt, args, occluded: list[list[int]], word_ids: list[list[int | None]], occ: int,
             token_budget: int, subset: bool):
    """Occlusion scores ``[rows, tokens]`` of one group: each word in ``occluded[r]`` replaced by ``occ`` in
    turn (captum ``FeatureAblation`` with a word-id feature mask; every other position is one extra group,
    whose score is zeroed when ``subset``, since it is not a word's)."""
    import torch
    from captum.attr import FeatureAblation

    n_words = max(len(o) for o in occluded)
    fmask = torch.full_like(input_ids, n_words)  # specials, padding, words kept: one extra group
    for r, (words, ids) in enumerate(zip(occluded, word_ids)):
        feature_of = {w: k for k, w in enumerate(words)}
        for pos, w in enumerate(ids):
            if w is not None and w in feature_of:
                fmask[r, pos] = feature_of[w]
    per_eval = max(1, token_budget // (len(occluded) * input_ids.shape[1]))
    with torch.no_grad():
        tok = FeatureAblation(f).attribute(input_ids, baselines=occ, target=tgt, additional_forward_args=args,
                                           feature_mask=fmask, perturbations_per_eval=per_eval)
    return torch.where(fmask < n_words, tok, torch.zeros_like(tok)) if subset else tok


def word_attributions(
    model, tokenizer, texts: Sequence[str] | Sequence[Sequence[str]], method: str = "integrated_gradients", *,
    max_length: int = 128, n_steps: int = 50, token_budget: int | None = None, max_group: int = 64,
    output: str = "logit", occlusion_token: str = "mask", target: Sequence[int] | None = None,
    delta_warn: float = DELTA_WARN, word_positions: Sequence[int] | None = None,
    word_subset: Sequence[Sequence[int]] | None = None,
) -> list[WordAttributions]:
    """Per-example word attributions of the predicted class (see the module docstring).

    Batched by length under ``token_budget`` tokens per forward pass. For Integrated
    Gradients (Sundararajan et al. 2017) each result carries the relative convergence delta;
    a warning names how many exceed ``delta_warn`` (raise ``n_steps`` then). With
    ``word_positions`` (token classifiers; inputs may be lists of words) the explained output
    is the tag of that word (:func:`probe.tasks.tokens.attribution.tag_attributions`).
    """
    enc, scores, preds, deltas = attribute_tokens(
        model, tokenizer, texts, method, max_length=max_length, n_steps=n_steps, token_budget=token_budget,
        max_group=max_group, output=output, occlusion_token=occlusion_token, target=target,
        word_positions=word_positions, word_subset=word_subset,
    )
    out = []
    for i in range(len(texts)):
        words = enc.words[i]
        ws = _to_words(scores[i], enc.word_ids[i], len(words), first_only=method == "occlusion")
        large = bool(np.isfinite(deltas[i]) and deltas[i] > delta_warn)
        position = None if word_positions is None else int(word_positions[i])
        n_first = None if enc.n_first is None else enc.n_first[i]
        out.append(WordAttributions(words, ws, int(preds[i]), method, float(deltas[i]), large, position, n_first))
    n_large = sum(a.delta_large for a in out)
    if n_large:
        warnings.warn(
            f"integrated gradients: {n_large} of {len(out)} examples have a convergence delta above "
            f"{delta_warn:.0%} of |F(x) - F(baseline)| (max {np.nanmax(deltas):.3f}); raise n_steps",
            stacklevel=2,
        )
    return out
