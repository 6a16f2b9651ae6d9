"""Candidates from the model: words whose share of the attribution mass fine-tuning amplified.

For a sample of held-out texts, every word's attribution (Input×Gradient on the input embeddings,
:func:`probe.analyses.attribution.word_attributions`, the subword scores summed per word, explaining
the predicted class) is taken in absolute value. For a word type w,

    ratio(w) = (w's share of the total |attribution| mass) / (w's share of the word occurrences)

is above 1 when the model looks at w more than its frequency alone would give it. It is measured for
the fine-tuned model and for the reference (the pretrained encoder through a linear probe head fitted
on its frozen last layer, docs/design.md §5), and amplification = ratio_finetuned / ratio_reference:
the words whose weight fine-tuning raised stand out, whatever the reference already looked at.
Words cut off by ``max_length`` carry no attribution and count only where they are read.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import pandas as pd

from probe.discovery.candidates import word_key


def attribution_ratios(model, tokenizer, texts: Sequence[str], max_length: int,
                       method: str = "input_x_gradient") -> pd.DataFrame:
    """Per word type over ``texts``: ``occurrences``, ``mass_share``, ``occurrence_share`` and ``ratio``."""
    from probe.analyses.attribution import word_attributions

    attrs = word_attributions(model, tokenizer, list(texts), method, max_length=max_length)
    mass: dict[str, float] = defaultdict(float)
    occ: dict[str, int] = defaultdict(int)
    for a in attrs:
        for w, s in zip(a.words, np.abs(a.scores)):
            k = word_key(w)
            if k:
                mass[k] += float(s)
                occ[k] += 1
    total_mass = sum(mass.values()) or 1.0
    total_occ = sum(occ.values()) or 1
    df = pd.DataFrame({"word": list(occ), "occurrences": [occ[w] for w in occ],
                       "mass_share": [mass[w] / total_mass for w in occ]})
    df["occurrence_share"] = df["occurrences"] / total_occ
    df["ratio"] = df["mass_share"] / df["occurrence_share"]
    return df


def amplification_table(finetuned, reference, tokenizer, texts: Sequence[str], max_length: int,
                        min_occurrences: int = 3) -> pd.DataFrame:
    """Words read at least ``min_occurrences`` times in ``texts``: ``ratio_finetuned``, ``ratio_reference``
    and ``amplification`` (their quotient; NaN without a reference), largest amplification first."""
    from probe.models.compute import keep_one_on

    device = next(finetuned.parameters()).device
    fine = attribution_ratios(finetuned, tokenizer, texts, max_length).set_index("word")
    out = pd.DataFrame({"occurrences": fine["occurrences"], "ratio_finetuned": fine["ratio"]})
    if reference is not None:
        keep_one_on(device, reference, [finetuned, reference])
        ref = attribution_ratios(reference, tokenizer, texts, max_length).set_index("word")
        keep_one_on(device, finetuned, [finetuned, reference])
        out["ratio_reference"] = ref["ratio"].reindex(out.index)
        out["amplification"] = out["ratio_finetuned"] / out["ratio_reference"]
    else:
        out["ratio_reference"] = np.nan
        out["amplification"] = np.nan
    out = out[out["occurrences"] >= min_occurrences]
    out = out.rename_axis("word").reset_index()
    return out.sort_values(["amplification", "ratio_finetuned", "word"], ascending=[False, False, True],
                           kind="stable").reset_index(drop=True)
