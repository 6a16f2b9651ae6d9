"""Behavioural invariance tests for natural features, and counterfactual token removal.

A classifier that learned its task should not change its prediction when a task-irrelevant
property of the input changes (Ribeiro et al. 2020, CheckList invariance tests). Each test
applies one perturbation to every text and reports the **change rate**: the fraction of
predictions that change (docs/design.md §5), with a 95 % bootstrap interval over texts.

Perturbations: lower-case the text, add a URL, add an @mention, append a neutral sentence.
Truncation would silently hide an addition at the end of a long text, so every text is
first cut at a word boundary to leave room for the longest addition within ``max_length``
tokens; the prediction on that cut text is the reference for every test. The URL and the
@mention are prepended (where they sit in a tweet), the neutral sentence is appended.
Where a perturbation leaves the token ids unchanged (lower-casing for an uncased tokenizer)
the test is vacuous: the rows carry ``identical_inputs`` (the fraction of such texts) and a
warning says so.

Pairs of texts (``side`` 0 or 1): the perturbation changes that text only; each text is first cut to half
of the pair's room less the longest addition, so neither side is truncated after the perturbation.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from probe.analyses.attribution_metrics import token_positions
from probe.analyses.stats import bootstrap_mean, metric_row
from probe.models.words import covered_words, encode_words

NEUTRAL_SENTENCE = "The weather was mild that day."
URL = "https://www.example.com/page"
MENTION = "@alex_jones"


def lowercase(text: str) -> str:
    return text.lower()


def add_url(text: str, url: str = URL) -> str:
    return f"{url} {text}"


def add_mention(text: str, mention: str = MENTION) -> str:
    return f"{mention} {text}"


def append_sentence(text: str, sentence: str = NEUTRAL_SENTENCE) -> str:
    return f"{text} {sentence}"


PERTURBATIONS: dict[str, Callable[[str], str]] = {
    "lowercase": lowercase,
    "add_url": add_url,
    "add_mention": add_mention,
    "append_neutral_sentence": append_sentence,
}


def remove_token(text: str, token: str) -> str:
    """``text`` without the whitespace words that are ``token`` (case-folded, surrounding
    punctuation stripped): the counterfactual of an inserted planted token."""
    words = text.split()
    drop = set(token_positions(words, token).tolist())
    return " ".join(w for j, w in enumerate(words) if j not in drop)


def remove_token_all(texts: Sequence[str], token: str) -> tuple[list[str], np.ndarray]:
    """Every text with ``token`` removed, and a mask of the texts that contained it."""
    out = [remove_token(t, token) for t in texts]
    had = np.array([len(a.split()) != len(b.split()) for a, b in zip(texts, out)], dtype=bool)
    return out, had


def fit_to_length(tokenizer, texts: Sequence[str], max_length: int, reserve: int = 0) -> list[str]:
    """Each text cut at a word boundary so that it, plus ``reserve`` more tokens, fits ``max_length``."""
    budget = max(max_length - reserve, 2)
    split = [t.split() for t in texts]
    enc = encode_words(tokenizer, split, budget)
    out = []
    for ws, ids, word_ids in zip(split, enc.input_ids, enc.word_ids):
        if len(ids) < budget:
            out.append(" ".join(ws))
            continue
        # at the budget the last covered word may be cut mid-way: drop it (conservative)
        out.append(" ".join(ws[:max(covered_words(word_ids) - 1, 0)]))
    return out


def fit_pairs_to_length(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int, reserve: int = 0) -> list:
    """Each text of each pair cut (:func:`fit_to_length`) to half of the pair's room less ``reserve``."""
    from probe.models.pair_tokens import encode_pairs

    room = max_length - (len(encode_pairs(tokenizer, [("a", "b")], max_length)[0]) - 2)  # the specials of a pair
    single = len(tokenizer("a")["input_ids"]) - 1  # the specials of one text
    half = max((room - reserve) // 2, 1) + single + 1
    firsts, seconds = (fit_to_length(tokenizer, [p[k] for p in pairs], half) for k in (0, 1))
    return list(zip(firsts, seconds))


def _on_side(f: Callable[[str], str], side: int | None) -> Callable:
    if side is None:
        return f
    return lambda pair: (f(pair[0]), pair[1]) if side == 0 else (pair[0], f(pair[1]))


def _predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    from probe.models.batching import predict_logits

    device = next(model.parameters()).device
    return predict_logits(model, tokenizer, texts, max_length, batch_size, device).argmax(1)


def invariance_metrics(
    model, tokenizer, texts: Sequence[str], *, max_length: int, model_name: str = "finetuned",
    labels: np.ndarray | None = None, perturbations: dict[str, Callable[[str], str]] | None = None,
    batch_size: int = 64, n_boot: int = 1000, seed: int = 0, side: int | None = None,
) -> pd.DataFrame:
    """Change rate per perturbation (CheckList invariance, Ribeiro et al. 2020) as tidy rows.

    ``property`` is the perturbation, ``metric`` is ``change_rate`` (and, with ``labels``,
    ``accuracy_drop``: accuracy on the reference texts minus accuracy after the perturbation,
    paired). Columns ``n`` and ``identical_inputs`` (fraction of texts whose token ids the
    perturbation left unchanged) come with every row. ``side``: ``texts`` are pairs and the perturbation
    changes their first (0) or second (1) text.
    """
    from probe.models.batching import tokenize

    perturbations = dict(PERTURBATIONS if perturbations is None else perturbations)
    probe_text = "a b c"
    reserve = max(len(tokenizer(f(probe_text), add_special_tokens=False)["input_ids"])
                  - len(tokenizer(probe_text, add_special_tokens=False)["input_ids"]) for f in perturbations.values())
    fit = fit_to_length if side is None else fit_pairs_to_length
    base = fit(tokenizer, texts, max_length, reserve=max(reserve, 0) + 1)
    variants = {name: [_on_side(f, side)(t) for t in base] for name, f in perturbations.items()}
    all_texts = list(base) + [t for v in variants.values() for t in v]
    preds = _predict(model, tokenizer, all_texts, max_length, batch_size)
    n = len(base)
    ref = preds[:n]
    ids_a = tokenize(tokenizer, list(base), max_length)
    rows = []
    for j, (name, vt) in enumerate(variants.items()):
        pred = preds[n * (j + 1): n * (j + 2)]
        ids_b = tokenize(tokenizer, vt, max_length)
        identical = float(np.mean([a == b for a, b in zip(ids_a, ids_b)])) if n else float("nan")
        if identical == 1.0:
            warnings.warn(f"invariance test {name!r} leaves every input unchanged for this tokenizer: vacuous",
                          stacklevel=2)
        values = {"change_rate": (pred != ref).astype(float)}
        if labels is not None:
            y = np.asarray(labels)
            values["accuracy_drop"] = (ref == y).astype(float) - (pred == y).astype(float)
        for m, (metric, v) in enumerate(values.items()):
            rng = np.random.default_rng([seed, 17, j, m])
            rows.append(metric_row(bootstrap_mean(v, n_boot, rng), model=model_name, layer=None, property=name,
                                   metric=metric, n=n, identical_inputs=identical))
    return pd.DataFrame(rows)


def removal_flip_metrics(
    model, tokenizer, texts: Sequence[str], token: str, *, max_length: int, model_name: str = "finetuned",
    batch_size: int = 64, n_boot: int = 1000, seed: int = 0,
) -> pd.DataFrame:
    """Counterfactual removal: over the texts that contain ``token``, the fraction whose
    prediction changes when it is removed (``removal_flip_rate``; Gardner et al. 2020)."""
    removed, had = remove_token_all(texts, token)
    kept = [t for t, h in zip(texts, had) if h]
    cf = [t for t, h in zip(removed, had) if h]
    if kept:
        preds = _predict(model, tokenizer, kept + cf, max_length, batch_size)
        flips = (preds[: len(kept)] != preds[len(kept):]).astype(float)
    else:
        flips = np.zeros(0)
    rng = np.random.default_rng([seed, 19])
    return pd.DataFrame([metric_row(bootstrap_mean(flips, n_boot, rng), model=model_name, layer=None,
                                    property=token, metric="removal_flip_rate", n=int(flips.size))])
