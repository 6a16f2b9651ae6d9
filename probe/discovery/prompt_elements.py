"""Template elements as discovery candidates for label-word classifiers (docs/design.md §10).

Each format variant of the training template (:func:`probe.data.prompts.template_variants`) changes one
element of the prompt (a separator, the spacing, the casing of field names, a newline, the field order,
the label words' casing). Its *edit* reads held-out texts with the variant; its *control edit* reads the
same texts with the training template after deleting as many random words of the text as the variant
changed template tokens (at least one; :func:`probe.discovery.causal_test.delete_random`; for a pair, each
word from a side drawn at random), a change of the same size to what the prompt is about. The per-text effect is the variant's flip indicator (prediction
differs from the training template's) minus the control's, paired; it gets a bootstrap interval and a
one-sided sign-flip p-value, Benjamini–Hochberg over the variants. Verdicts: *format moves predictions*
(q ≤ ``q`` and the interval above ``min_effect``), *format not used* (interval below 0.1), *not seen by
the tokenizer* (the variant leaves every text's ids unchanged), else *inconclusive*.
"""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from probe.analyses.prompt_format import TRAINING, format_predictions, variant_readers
from probe.discovery.causal_test import benjamini_hochberg, delete_random, paired_interval, sign_flip_pvalue
from probe.discovery.verdicts import FORMAT_USED
from probe.models.batching import predict_logits, tokenize
from probe.models.label_words import LabelWordModel


def _changed_tokens(reader, base) -> int:
    """Template tokens the variant changes (replaced, inserted or deleted), at least 1."""
    a = base.inner(base.words.format("", ""), add_special_tokens=False)["input_ids"]
    b = reader.inner(reader.words.format("", ""), add_special_tokens=False)["input_ids"]
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return max(1, sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal"))


def _delete_words(text, k: int, rng: np.random.Generator):
    """The control edit: ``k`` random words deleted from a text (:func:`delete_random`), or from a pair, each
    of the ``k`` on a side drawn by a fair coin (the template changes around both texts)."""
    if isinstance(text, str):
        return delete_random(text, [], k, rng)
    on_second = int(rng.binomial(k, 0.5))
    return tuple(delete_random(t, [], n, rng) if n else t for t, n in zip(text, (k - on_second, on_second)))


def template_discovery(lm, tokenizer, texts: list[str], classes: list[str], max_length: int, batch_size: int,
                       device, n_examples: int, n_boot: int, q: float, min_effect: float, seed: int) -> pd.DataFrame:
    """One row per template element of the fine-tuned causal LM ``lm`` read through ``tokenizer`` (a
    :class:`~probe.models.label_words.PromptTokenizer`), on up to ``n_examples`` of ``texts``."""
    rng = np.random.default_rng([seed, 13])
    idx = np.sort(rng.choice(len(texts), min(n_examples, len(texts)), replace=False))
    texts = [texts[i] for i in idx]
    readers = variant_readers(tokenizer, classes)
    preds = format_predictions(lm, readers, texts, classes, max_length, batch_size, device)
    base_ids = tokenize(tokenizer, texts, max_length)
    model = LabelWordModel(lm, tokenizer.words, classes)
    rows, controls = [], {}
    for name, reader in readers:
        if name == TRAINING:
            continue
        k = _changed_tokens(reader, tokenizer)
        if k not in controls:
            cut = [_delete_words(t, k, np.random.default_rng([seed, 14, k, i])) for i, t in enumerate(texts)]
            controls[k] = predict_logits(model, tokenizer, cut, max_length, batch_size, device).argmax(1)
        edit = (preds[name] != preds[TRAINING]).astype(float)
        control = (controls[k] != preds[TRAINING]).astype(float)
        diff = edit - control
        unseen = reader.words.ids == tokenizer.words.ids and tokenize(reader, texts, max_length) == base_ids
        rows.append({"feature": f"template: {name}", "edit": reader.words.prompt,
                     "label_words": ", ".join(reader.words.words), "control": f"delete {k} random word(s) of the text",
                     "n": len(texts), "flip_rate": float(edit.mean()), "control_flip_rate": float(control.mean()),
                     **paired_interval("effect", diff, n_boot, np.random.default_rng([seed, 15])),
                     "p": float("nan") if unseen else sign_flip_pvalue(diff, n_boot, np.random.default_rng([seed, 16])),
                     "unseen": unseen})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["q"] = benjamini_hochberg(table.p.to_numpy())
    table["verdict"] = [_verdict(r, q, min_effect) for r in table.to_dict("records")]
    return table.drop(columns="unseen")


def _verdict(row: dict, q: float, min_effect: float) -> str:
    if row["unseen"]:
        return "not seen by the tokenizer"
    if row["q"] <= q and row["effect_ci_low"] > min_effect:
        return FORMAT_USED
    if row["effect_ci_high"] < 0.1:
        return "format not used"
    return "inconclusive"
