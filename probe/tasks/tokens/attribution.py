"""Which input words a token classifier's tag for one word depends on (captum; docs/design.md §5).

For sentence i and the word at index ``positions[i]``, F is the tagger's logit of the predicted
tag (or a given tag) at that word's first subword — the position a BERT tagger is trained and
read at. F is attributed to every input word with the methods of
:mod:`probe.analyses.attribution`, whose machinery this reuses unchanged: Layer Integrated
Gradients on the word-embedding layer with a ``[PAD]`` baseline that keeps ``[CLS]`` / ``[SEP]``
(Sundararajan et al. 2017), saliency, input × gradient and word occlusion; subword scores are
summed to words, and IG reports its convergence delta relative to |F(x) − F(baseline)|.

A tagger that relies on a planted marker (e.g. the tag of the word after "zebra") puts its
attribution on the marker rather than on the word itself:
:func:`probe.analyses.attribution_metrics.spurious_attribution_metrics` measures that share and the
top-1 rate on these results unchanged.
"""

from __future__ import annotations

from typing import Sequence

from probe.analyses.attribution import DELTA_WARN, WordAttributions, word_attributions


def tag_attributions(
    model, tokenizer, sentences: list[list[str]], positions: Sequence[int], method: str = "integrated_gradients",
    max_length: int = 128, n_steps: int = 32, target: str | Sequence[int] = "predicted", *,
    token_budget: int | None = None, max_group: int = 64, output: str = "logit", occlusion_token: str = "mask",
    delta_warn: float = DELTA_WARN,
) -> list[WordAttributions]:
    """Word attributions of the tag of word ``positions[i]`` in ``sentences[i]``, for a token classifier.

    ``target="predicted"`` explains the predicted tag at that word; a list of tag ids explains
    those. Each result's ``prediction`` is the explained tag id and ``position`` the explained
    word; ``words`` are the sentence's words covered by ``max_length``. Batched by length under
    ``token_budget`` tokens per forward pass. The explained word must survive truncation and
    have at least one subword (``ValueError`` otherwise).
    """
    if len(positions) != len(sentences):
        raise ValueError(f"{len(positions)} positions but {len(sentences)} sentences")
    if isinstance(target, str):
        if target != "predicted":
            raise ValueError(f"target: {target!r}; allowed: 'predicted' or a list of tag ids")
        tags = None
    else:
        tags = [int(t) for t in target]
        if len(tags) != len(sentences):
            raise ValueError(f"{len(tags)} targets but {len(sentences)} sentences")
    for i, (s, p) in enumerate(zip(sentences, positions)):
        if isinstance(s, str):
            raise TypeError(f"sentences[{i}] is a string; pass each sentence as a list of words")
        if not 0 <= int(p) < len(s):
            raise ValueError(f"positions[{i}] = {p} is outside sentence {i} ({len(s)} words)")
    return word_attributions(
        model, tokenizer, [list(s) for s in sentences], method, max_length=max_length, n_steps=n_steps,
        token_budget=token_budget, max_group=max_group, output=output, occlusion_token=occlusion_token,
        target=tags, delta_warn=delta_warn, word_positions=[int(p) for p in positions],
    )
