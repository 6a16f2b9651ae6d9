"""The causal stage of a run: erase a planted token's concept layer by layer, against a
random-direction control, and swap, re-initialise or ablate parts of the fine-tuned model.

Decodability is not use (Elazar et al. 2021): a probe that reads the token from layer 3 says
nothing about whether the classifier uses it there. Here the fine-tuned model is edited and
its behaviour re-measured on held-out counterfactual pairs (docs/design.md §5, causal tests):

- erasure: for each layer, concept ("position": this position holds the token; "document":
  the text contains it, copied to every position) and method (LEACE, Belrose et al. 2023;
  INLP, Ravfogel et al. 2020), an eraser is fitted on the fine-tuned model's token
  activations of the probing split's training half and applied through a forward hook. The
  guarantee is checked on the other half: a fresh logistic probe for the concept on erased
  activations, next to the majority rate. The amnesic control erases as many random
  directions at the same layer (one eraser per layer and rank, so its predictions are computed once
  for every concept and method of that rank); ``condition == "difference"`` rows are erased minus
  random, paired per example, with a bootstrap interval.
- ablation: each block replaced by the pretrained block ("swap_pretrained") or a fresh
  initialisation ("reinit"), the fine-tuned head on the whole pretrained encoder
  ("pretrained_encoder"), and single attention heads zeroed (Michel et al. 2019).

Behaviour is always measured on held-out counterfactual pairs, so the erasers never see the
examples they are judged on. What a prediction is depends on the task kind: every function here
takes a :class:`Predictor` (a sequence classifier's predictions on texts with and without the token,
a tagger's on entity spans with and without the marker; :mod:`probe.tasks`). Layers are
hidden-state indices: 0 = embeddings, l = output of block l (so ablation rows of block l carry
``layer = l``).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager, nullcontext
from typing import Callable, Iterator, Protocol

import numpy as np
import pandas as pd

from probe.analyses.stats import bootstrap_mean, metric_row
from probe.causal.hooks import KeptStates
from probe.models.adapter import ModelAdapter

SCAN_EXAMPLES = 64  # conflicting examples the single-head scan ranks heads on (72 heads × 1 pass each for minilm)
CAUSAL_METRICS = ("clean_accuracy", "conflicting_accuracy", "s_only_error", "flip_rate", "reliance_gap")


class Predictor(Protocol):
    """Behaviour of the model as it is when called (edited or not) on held-out counterfactual pairs.

    ``features``: the planted features it measures. ``predictor(features)`` returns
    ``{feature: metric_values(...)}`` (:func:`probe.analyses.behaviour.metric_values`) for those
    features (default: all); ``clean_correct()`` the per-example correctness on the clean inputs
    (for runs without planted features); ``scan(feature, seed)`` a cheap score for ranking heads: a
    function returning the s-only error of at most :data:`SCAN_EXAMPLES` conflicting pairs, and how
    many it reads.
    """

    features: list[str]

    def __call__(self, features: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]: ...
    def clean_correct(self) -> np.ndarray: ...
    def scan(self, feature: str, seed: int) -> tuple[Callable[[], float], int]: ...


def _rows(values: dict[str, np.ndarray], n_boot: int, seed: int, salt: int, **keys) -> list[dict]:
    rows = []
    for i, name in enumerate(CAUSAL_METRICS):
        v = values[name]
        rows.append(metric_row(bootstrap_mean(v, n_boot, np.random.default_rng([seed, 31, salt, i])),
                               metric=name, n=int(v.size), **keys))
    return rows


def _proportion_row(correct: float, n: int, **keys) -> dict:
    """A proportion with its Wilson 95 % interval (for probe accuracies on many token positions)."""
    z = 1.959964
    if n == 0:
        return metric_row((float("nan"),) * 3, n=0, **keys)
    centre = (correct + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(correct * (1 - correct) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return metric_row((float(correct), float(centre - half), float(centre + half)), n=n, **keys)


def _balanced_row(balanced: float, z: np.ndarray, **keys) -> dict:
    """Balanced accuracy (mean per-class recall) with a normal 95 % interval: its standard error is
    (1/K)·sqrt(Σ_k b(1 − b)/n_k), taking every class's recall near b. The fair score when a class is
    rare (a position holding the token is about 1 in 50)."""
    counts = np.bincount(np.unique(z, return_inverse=True)[1])
    se = np.sqrt(np.sum(balanced * (1 - balanced) / counts)) / counts.size
    return metric_row((float(balanced), float(balanced - 1.959964 * se), float(balanced + 1.959964 * se)),
                      n=int(z.size), **keys)


def resolve_layers(layers, n_hidden: int) -> list[int]:
    """``"all"`` or a list of hidden-state indices, checked against the model's ``n_hidden`` states."""
    from probe.errors import ProbeError

    if layers == "all":
        return list(range(n_hidden))
    bad = [layer for layer in layers if not 0 <= layer < n_hidden]
    if bad:
        raise ProbeError(f"causal.layers: {bad} out of range; allowed: 'all' or integers 0..{n_hidden - 1} "
                         f"(0 = embeddings, l = output of block l)")
    return sorted(set(layers))


def fit_eraser(method: str, X, z: np.ndarray, seed: int = 0, inlp_max_iterations: int = 10,
               inlp_tolerance: float = 0.02):
    """An eraser for concept labels ``z`` from activations ``X [N, d]`` by ``method``."""
    from probe.causal.erasure import fit_inlp, fit_leace

    if method == "leace":
        return fit_leace(X, z)
    if method == "inlp":
        return fit_inlp(X, z, max_iterations=inlp_max_iterations, tolerance=inlp_tolerance, seed=seed,
                        metric="balanced_accuracy")
    raise ValueError(f"unknown erasure method {method!r}; allowed: leace, inlp")


@contextmanager
def erase(model, layer: int, concept, method: str = "leace", seed: int = 0) -> Iterator[object]:
    """Erase a concept from one layer of ``model`` while the ``with`` block runs; yields the eraser.

    ``concept`` is a fitted eraser (from :mod:`probe.causal.erasure`) or a pair ``(X, z)`` of
    that layer's token activations ``[N, d]`` and concept labels ``[N]``, fitted here with
    ``method`` ("leace" or "inlp"). The hook is removed on exit, also after an exception::

        acts = token_activations(model, tok, texts, [3], 64, 32, "cpu", token="zebra")
        with probe.erase(model, 3, (acts.layers[3], acts.has_token)):
            logits = model(**batch).logits
    """
    from probe.causal.hooks import edit_hidden_state

    eraser = fit_eraser(method, *concept, seed=seed) if isinstance(concept, tuple) else concept
    with edit_hidden_state(model, layer, eraser):
        yield eraser


def activation_bytes(model, tokenizer, texts: list[str], layers: list[int], max_length: int) -> int:
    """Bytes the token activations of ``texts`` at ``layers`` take in float32 (every real token position)."""
    from probe.models.batching import tokenize

    positions = sum(len(x) for x in tokenize(tokenizer, list(texts), max_length))
    return positions * ModelAdapter(model).hidden_size * 4 * len(layers)


def _concept_labels(acts, concept: str) -> np.ndarray:
    if concept == "position":
        return acts.has_token.astype(np.int64)
    return acts.doc_has_token[acts.doc_index].astype(np.int64)


def erasure_table(model, tokenizer, fit_texts: list[str], held_texts: list[str], predict: Predictor, feature: str,
                  token: str, cfg, max_length: int, batch_size: int, device, n_boot: int, seed: int,
                  progress: bool = True, kept: KeptStates | None = None, side: str = "first") -> pd.DataFrame:
    """Erasure sweep for one planted feature (see the module docstring); tidy rows with columns
    model, layer, property, metric, method, concept, condition, rank, value, ci_low, ci_high, n.

    Erasers are fitted on the token activations of ``fit_texts`` and checked on ``held_texts``;
    behaviour comes from ``predict`` (:class:`Predictor`). ``kept``: the unedited model's hidden states,
    shared with the rest of the causal stage (:class:`probe.causal.hooks.KeptStates`). Pairs of texts:
    the token's pieces are those on its ``side``."""
    import torch
    from tqdm.auto import tqdm

    from probe.causal.erasure import concept_decodability, random_eraser
    from probe.causal.hooks import deepest_resumable, edit_hidden_state, n_layers, resume_at
    from probe.causal.token_activations import token_activations

    layers = resolve_layers(cfg.layers, n_layers(model))

    def extract(texts: list[str], which: list[int]):
        return token_activations(model, tokenizer, texts, which, max_length, batch_size, device, token=token,
                                 side=side)  # pairs of texts: the token is marked on its side only

    # every layer at once when it fits cfg.activation_memory_mb, else one layer at a time (a pass per layer)
    stream = activation_bytes(model, tokenizer, fit_texts + held_texts, layers, max_length) > \
        cfg.activation_memory_mb * 2 ** 20
    fit, held = (None, None) if stream else (extract(fit_texts, layers), extract(held_texts, layers))
    keys = dict(model="finetuned", property=feature)
    kept = KeptStates() if kept is None else kept
    with resume_at(model, deepest_resumable(model), kept):  # the unedited pass keeps every layer (in budget)
        rows = _rows(predict([feature])[feature], n_boot, seed, 0, layer=None, method=None, concept=None,
                     condition="none", rank=0, **keys)
    jobs = [(layer, concept, method) for layer in layers for concept in cfg.concepts for method in cfg.methods]
    # the random control of a layer depends on (fit activations, rank, seed + layer) only: its predictions
    # are computed once for all the concepts and methods that ask for the same rank
    random_values: dict[tuple, dict[str, np.ndarray]] = {}
    stack = ExitStack()  # the blocks below a layer run once for all of its conditions (resume_at)
    try:
        for j, (layer, concept, method) in enumerate(tqdm(jobs, desc=f"erasure {feature}", disable=not progress,
                                                          leave=False), start=1):
            if j == 1 or layer != jobs[j - 2][0]:
                stack.close()
                if stream:  # outside resume_at: these passes are not the held-out batches it keeps
                    fit, held = extract(fit_texts, [layer]), extract(held_texts, [layer])
                stack.enter_context(resume_at(model, layer, kept))
            z_fit, z_held = _concept_labels(fit, concept), _concept_labels(held, concept)
            if np.unique(z_fit).size < 2:
                continue  # the concept does not vary here (e.g. the token never survives truncation)
            X_fit = torch.as_tensor(fit.layers[layer])  # the compute dtype (float32 on the CPU)
            X_held = torch.as_tensor(held.layers[layer])
            eraser = fit_eraser(method, X_fit, z_fit, seed, cfg.inlp_max_iterations, cfg.inlp_tolerance)
            conditions = [("erased", eraser)]
            if cfg.random_control:
                conditions.append(("random", random_eraser(X_fit, eraser.rank, seed=seed + layer)))
            values = {}
            for c, (condition, er) in enumerate(conditions):
                shared = ("random", layer, int(er.rank)) if condition == "random" else None
                at = dict(layer=layer, method=method, concept=concept, condition=condition, rank=int(er.rank), **keys)
                with torch.no_grad():
                    dec = concept_decodability(er(X_fit).float().numpy(), z_fit, er(X_held).float().numpy(), z_held,
                                               seed=seed)
                rows.append(_balanced_row(dec["balanced_accuracy"], z_held, metric="concept_balanced_accuracy", **at))
                rows.append(metric_row((dec["chance"],) * 3, metric="concept_chance", n=int(dec["n_test"]), **at))
                rows.append(_proportion_row(dec["accuracy"], int(dec["n_test"]), metric="concept_accuracy", **at))
                rows.append(metric_row((dec["majority"],) * 3, metric="concept_majority", n=int(dec["n_test"]), **at))
                if shared in random_values:  # every concept's random control at a layer is the same eraser
                    values[condition] = random_values[shared]
                else:
                    with edit_hidden_state(model, layer, er):
                        values[condition] = predict([feature])[feature]
                    if shared is not None:
                        random_values[shared] = values[condition]
                rows += _rows(values[condition], n_boot, seed, 2 * j + c, **at)
            if "random" in values:
                diff = {m: values["erased"][m] - values["random"][m] for m in CAUSAL_METRICS}
                rows += _rows(diff, n_boot, seed, 2 * j + 7919, layer=layer, method=method, concept=concept,
                              condition="difference", rank=int(eraser.rank), **keys)
    finally:
        stack.close()
    return pd.DataFrame(rows)


def ablation_table(model, pretrained, predict: Predictor, cfg, n_boot: int, seed: int,
                   progress: bool = True, kept: KeptStates | None = None) -> pd.DataFrame:
    """Block swaps, re-initialisation, the head on the pretrained encoder, and single-head ablation.

    Rows: model, layer (= block number, 1-based), property, metric, intervention, head, value,
    ci_low, ci_high, n. ``intervention`` is none / swap_pretrained / reinit / pretrained_encoder /
    head. Head rows: every head's s-only error on at most ``SCAN_EXAMPLES`` conflicting pairs
    (metric ``s_only_error_scan`` for the first planted feature, no interval) and the full metrics
    of the ``top_heads`` whose ablation lowers it most. Behaviour comes from ``predict``. ``kept``: the
    unedited model's hidden states (:class:`probe.causal.hooks.KeptStates`); every intervention that
    leaves the blocks below a layer alone starts from that layer's kept state.
    """
    from tqdm.auto import tqdm

    from probe.causal.ablation import pretrained_encoder_with_head, reinit_layers, swap_layers
    from probe.causal.hooks import deepest_resumable, resume_at

    kept = KeptStates() if kept is None else kept
    rows: list[dict] = []

    def measure(intervention: str, layer: int | None, edit: Callable[[], object], salt: int, head=None) -> None:
        with edit():
            per_feature = predict() if predict.features else {}
            if not per_feature:  # no planted feature: clean accuracy only
                clean = predict.clean_correct()
        if not per_feature:
            v = bootstrap_mean(clean, n_boot, np.random.default_rng([seed, 37, salt]))
            rows.append(metric_row(v, model="finetuned", layer=layer, property="task", metric="clean_accuracy",
                                   intervention=intervention, head=head, n=int(clean.size)))
        for f, values in per_feature.items():
            for r in _rows(values, n_boot, seed, salt, model="finetuned", layer=layer, property=f,
                           intervention=intervention, head=head):
                rows.append(r)

    blocks = ModelAdapter(model).n_blocks
    jobs: list[tuple[str, int | None, Callable[[], object]]] = [("none", None, nullcontext)]
    if cfg.layer_swap:
        for b in range(blocks):
            jobs.append(("swap_pretrained", b + 1, lambda b=b: swap_layers(model, pretrained, [b])))
            jobs.append(("reinit", b + 1, lambda b=b: reinit_layers(model, [b], seed)))
        jobs.append(("pretrained_encoder", None, lambda: pretrained_encoder_with_head(model, pretrained)))
    for i, (intervention, layer, edit) in enumerate(tqdm(jobs, desc="layer swaps", disable=not progress,
                                                         leave=False)):
        # unedited, or an edit of block `layer` (1-based): everything below starts from the kept states
        below = {"none": deepest_resumable(model), "pretrained_encoder": 0}.get(intervention, (layer or 1) - 1)
        with resume_at(model, below, kept):
            measure(intervention, layer, edit, 1000 + i)
    if cfg.head_ablation and predict.features:
        _head_rows(model, predict, cfg, seed, progress, rows, measure, kept)
    return pd.DataFrame(rows)


def _head_rows(model, predict: Predictor, cfg, seed: int, progress: bool, rows: list[dict], measure,
               kept: KeptStates) -> None:
    """Single-head ablation: scan every head on the first feature's s-only error (rows appended to
    ``rows``), then measure the ``top_heads`` that lower it most (through ``measure``)."""
    from probe.causal.ablation import ablate_heads, head_ablation_scan
    from probe.causal.hooks import resume_at

    first = predict.features[0]
    adapter = ModelAdapter(model)
    s_only_error, n = predict.scan(first, seed)
    scan = head_ablation_scan(model, s_only_error, adapter.n_blocks, adapter.n_heads, progress=progress, kept=kept)
    rows += [metric_row((r.score, float("nan"), float("nan")), model="finetuned", layer=int(r.block) + 1,
                        property=first, metric="s_only_error_scan", intervention="head", head=int(r.head), n=n)
             for r in scan.itertuples()]
    top = scan.sort_values("change", kind="stable").head(cfg.top_heads)
    for k, r in enumerate(top.itertuples()):
        with resume_at(model, int(r.block), kept):
            measure("head", int(r.block) + 1, lambda r=r: ablate_heads(model, [(int(r.block), int(r.head))]),
                    5000 + k, head=int(r.head))
