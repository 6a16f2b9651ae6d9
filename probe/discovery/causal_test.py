"""A causal test of use for each candidate feature, against frequency-matched controls (docs/design.md §8).

For a candidate word (or bigram) w associated with class c, on held-out examples:

- **insertion**: w is inserted once, at a uniform word position among the first ``max_position``
  words, into examples of the insertion pool whose gold class is not c, that do not contain w and
  that the model does not already predict as c. The *override rate* is the share now predicted c;
  ΔP(c) the mean change of P(c). Each control word (no label association, similar training
  frequency) is inserted at the same position of the same example; the per-example effect is the
  candidate's outcome minus the controls' mean (paired).
- **deletion**: every occurrence of w is removed from held-out examples that contain it; the drop of
  P(c) is compared, per example, with deleting as many other words chosen at random from the same
  stretch of the text (:data:`DELETION_CONTROLS` draws).

Each paired difference gets a percentile bootstrap 95 % interval (Efron & Tibshirani 1993) and a
one-sided sign-flip permutation p-value (H0: the difference is symmetric around 0; H1: the candidate's
effect is larger), ``(1 + #{permuted mean ≥ observed}) / (B + 1)``. Benjamini–Hochberg
(:func:`benjamini_hochberg`) then runs over every p-value of every candidate.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from probe.analyses.stats import bootstrap_mean
from probe.data.planted import insert_token
from probe.discovery.candidates import word_key

DELETION_CONTROLS = 1  # random-word deletions per example that a candidate's deletion is compared with
NO_CONTROLS = ("inconclusive: no control word (letters only, |z| < 1 for every class) at any training frequency, "
               "so no edit was tested")
EXAMPLE_CHARS = 300  # characters of an example text kept for the report

Scorer = Callable[[list[str]], np.ndarray]  # texts -> class probabilities [N, K]


def contains(text: str, feature: str) -> bool:
    """Whether ``text`` holds ``feature`` (a word key, or two space-separated word keys in a row)."""
    keys = [word_key(w) for w in text.split()]
    parts = feature.split()
    return any(keys[i: i + len(parts)] == parts for i in range(len(keys) - len(parts) + 1))


def delete_feature(text: str, feature: str) -> tuple[str, list[int]]:
    """``text`` without every occurrence of ``feature``, and the word positions removed."""
    words = text.split()
    keys = [word_key(w) for w in words]
    parts = feature.split()
    drop: list[int] = []
    i = 0
    while i <= len(words) - len(parts):
        if keys[i: i + len(parts)] == parts:
            drop.extend(range(i, i + len(parts)))
            i += len(parts)
        else:
            i += 1
    gone = set(drop)
    return " ".join(w for j, w in enumerate(words) if j not in gone), drop


def delete_random(text: str, avoid: Sequence[int], k: int, rng: np.random.Generator) -> str:
    """``text`` without ``k`` random words not in ``avoid``, drawn from the stretch up to the last avoided
    word (at least the first five words): the same region of the text a deletion touched."""
    words = text.split()
    reach = min(len(words), max(max(avoid, default=0) + 1, 5))
    pool = [j for j in range(reach) if j not in set(avoid)]
    if not pool:
        return text
    gone = set(rng.choice(pool, min(k, len(pool)), replace=False).tolist())
    return " ".join(w for j, w in enumerate(words) if j not in gone)


def sign_flip_pvalue(diff: np.ndarray, n_perm: int, rng: np.random.Generator) -> float:
    """One-sided paired permutation p-value that the mean of ``diff`` is above 0 (random sign flips)."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return float("nan")
    observed = diff.mean()
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, diff.size))
    perm = (signs * np.abs(diff)).mean(axis=1)
    return float((1 + np.sum(perm >= observed - 1e-12)) / (n_perm + 1))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini & Hochberg 1995 adjusted p-values (q-values); NaN entries stay NaN and are not counted."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


def paired_interval(name: str, diff: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    value, lo, hi = bootstrap_mean(diff, n_boot, rng)
    return {name: value, f"{name}_ci_low": lo, f"{name}_ci_high": hi}


class InsertionPool:
    """Held-out examples that candidates and controls are inserted into, each with one fixed position."""

    def __init__(self, texts: list[str], labels: np.ndarray, base: np.ndarray, n: int, max_position: int,
                 rng: np.random.Generator) -> None:
        idx = np.sort(rng.choice(len(texts), min(n, len(texts)), replace=False))
        self.texts = [texts[i] for i in idx]
        self.labels = np.asarray(labels)[idx]
        self.base = base[idx]
        highs = np.array([min(max_position, len(t.split())) for t in self.texts])
        self.positions = rng.integers(0, highs + 1)
        self.controls: dict[int, np.ndarray] = {}  # band -> [controls, pool, K] probabilities

    def inserted(self, word: str, rows: np.ndarray | None = None) -> list[str]:
        rows = np.arange(len(self.texts)) if rows is None else rows
        return [insert_token(self.texts[i], word, int(self.positions[i])) for i in rows]

    def control_probs(self, band: int, words: list[str], score: Scorer) -> np.ndarray:
        """The pool's probabilities with each control word of ``band`` inserted (computed once per band)."""
        if band not in self.controls:
            texts = [t for w in words for t in self.inserted(w)]
            k = self.base.shape[1]
            probs = score(texts) if texts else np.zeros((0, k))
            self.controls[band] = probs.reshape(len(words), len(self.texts), k)
        return self.controls[band]


def candidate_effects(feature: str, c: int, pool: InsertionPool, control: np.ndarray, held_texts: list[str],
                   held_base: np.ndarray, score: Scorer, n_examples: int, n_boot: int,
                   rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """Insertion and deletion effects of one candidate (see the module docstring): a dict of the row's
    numbers (with p-values) and up to three example texts."""
    pred0 = pool.base.argmax(1)
    eligible = np.flatnonzero((pool.labels != c) & (pred0 != c)
                              & np.array([not contains(t, feature) for t in pool.texts]))
    has = np.flatnonzero([contains(t, feature) for t in held_texts])
    if has.size > n_examples:
        has = np.sort(rng.choice(has, n_examples, replace=False))
    ins_texts = pool.inserted(feature, eligible)
    deleted = [delete_feature(held_texts[i], feature) for i in has]
    ctrl_texts = [delete_random(t, drop, max(len(drop), 1), rng) for (t, drop) in
                  ((held_texts[i], d[1]) for i, d in zip(has, deleted)) for _ in range(DELETION_CONTROLS)]
    probs = score(ins_texts + [d[0] for d in deleted] + ctrl_texts) if (ins_texts or deleted) else np.zeros((0, 1))
    p_ins, p_del = probs[: len(ins_texts)], probs[len(ins_texts): len(ins_texts) + len(deleted)]
    p_ctrl = probs[len(ins_texts) + len(deleted):].reshape(len(deleted), DELETION_CONTROLS, -1) if deleted else None
    out: dict = {"n_insert": int(eligible.size), "n_delete": int(has.size)}
    override = (p_ins.argmax(1) == c).astype(float) if eligible.size else np.zeros(0)
    ctrl_override = (control[:, eligible].argmax(2) == c).mean(0) if eligible.size and control.size else \
        np.zeros(eligible.size)
    out.update(paired_interval("override_rate", override, n_boot, rng))
    out["override_control"] = float(ctrl_override.mean()) if eligible.size else float("nan")
    out.update(paired_interval("override_effect", override - ctrl_override, n_boot, rng))
    dp = p_ins[:, c] - pool.base[eligible, c] if eligible.size else np.zeros(0)
    dp_ctrl = (control[:, eligible, c] - pool.base[eligible, c]).mean(0) if eligible.size and control.size else 0.0
    out.update(paired_interval("delta_p", dp - dp_ctrl, n_boot, rng))
    drop = held_base[has, c] - p_del[:, c] if has.size else np.zeros(0)
    ctrl_drop = (held_base[has, c][:, None] - p_ctrl[:, :, c]).mean(1) if has.size else np.zeros(0)
    out.update(paired_interval("deletion_drop", drop, n_boot, rng))
    out["deletion_control"] = float(ctrl_drop.mean()) if has.size else float("nan")
    out.update(paired_interval("deletion_effect", drop - ctrl_drop, n_boot, rng))
    out["p_insert"] = sign_flip_pvalue(override - ctrl_override, n_boot, rng) if eligible.size else float("nan")
    out["p_delete"] = sign_flip_pvalue(drop - ctrl_drop, n_boot, rng) if has.size else float("nan")
    examples = []
    for r in np.flatnonzero(override)[:2]:
        examples.append({"edit": "insert", "text": ins_texts[r][:EXAMPLE_CHARS],
                         "p_before": float(pool.base[eligible[r], c]), "p_after": float(p_ins[r, c])})
    if has.size:
        r = int(np.argmax(drop))
        examples.append({"edit": "delete", "text": held_texts[has[r]][:EXAMPLE_CHARS],
                         "p_before": float(held_base[has[r], c]), "p_after": float(p_del[r, c])})
    return out, examples
