"""One-sentence takeaways of the report's figures, generated from the same table rows the figure draws,
so a reader (and a screen reader, through the alt text) gets the finding without decoding the plot.

Each function returns plain text (Jinja escapes it); a figure's alt text is its title plus its takeaway,
so no two figures share one.
"""

from __future__ import annotations

import pandas as pd

from probe.analyses.verdict import layer_ranges


def _f(v, d: int = 2, signed: bool = False) -> str:
    return "n/a" if v is None or v != v else (f"{v:+.{d}f}" if signed else f"{v:.{d}f}")


def figure(uri: str, title: str, takeaway: str) -> dict:
    """What the page shows for a figure: the image, a takeaway under it and the alt text (title + takeaway)."""
    return {"uri": uri, "title": title, "takeaway": takeaway, "alt": f"{title}. {takeaway}"}


def probing(probing_rows: pd.DataFrame) -> str:
    """Where fine-tuning changed decodability most, and which properties no probe decodes."""
    amp = probing_rows[probing_rows.metric == "accuracy_difference"].dropna(subset=["value"])
    parts = []
    if not amp.empty:
        r = amp.loc[amp["value"].astype(float).abs().idxmax()]
        direction = "more" if r.value > 0 else "less"
        parts.append(f"Fine-tuning changed decodability most for {r['property']} at layer {int(r.layer)}: "
                     f"{direction} decodable by {abs(r.value):.2f} [{_f(r.ci_low, 2, True)}, {_f(r.ci_high, 2, True)}]")
    from probe.report.scorecard import uninformative

    flat = [p for p in dict.fromkeys(probing_rows["property"].astype(str)) if uninformative(probing_rows, p)]
    if flat:
        parts.append(f"no probe beats the majority baseline for {', '.join(flat)}")
    if not parts:
        return "Probe accuracy by layer for each property, pretrained and fine-tuned."
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def mdl(mdl_rows: pd.DataFrame) -> str:
    """The property whose codelength fine-tuning changed most at the last layer."""
    d = mdl_rows[mdl_rows.metric == "codelength_bits"].dropna(subset=["layer"])
    if d.empty or not {"pretrained", "finetuned"} <= set(d.model):
        return "Online codelength by layer for each property (shorter: easier to extract)."
    top = d.layer.max()
    t = d[d.layer == top].pivot_table(index="property", columns="model", values="value")
    ratio = (t["finetuned"] / t["pretrained"]).dropna()
    if ratio.empty:
        return "Online codelength by layer for each property (shorter: easier to extract)."
    prop = (ratio - 1).abs().idxmax()
    word = "shorter (easier to extract)" if ratio[prop] < 1 else "longer (harder to extract)"
    return (f"At the last layer ({int(top)}), fine-tuning made {prop} {word}: {t.loc[prop, 'finetuned']:.0f} bits "
            f"against {t.loc[prop, 'pretrained']:.0f} pretrained.")


def cka(cka_rows: pd.DataFrame) -> str:
    c = cka_rows[cka_rows.metric == "linear_cka"].dropna(subset=["layer", "value"]).sort_values("layer")
    if c.empty:
        return "CKA between pretrained and fine-tuned activations by layer."
    low = c.loc[c["value"].astype(float).idxmin()]
    return (f"Layer {int(low.layer)} moved most (linear CKA {low.value:.2f} [{_f(low.ci_low)}, {_f(low.ci_high)}]); "
            f"layer {int(c.layer.iloc[0])} keeps {c.value.iloc[0]:.2f}.")


def cka_matrix(matrix: pd.DataFrame) -> str:
    metric = "debiased_linear_cka" if (matrix.metric == "debiased_linear_cka").any() else "linear_cka"
    m = matrix[matrix.metric == metric].pivot(index="layer_pre", columns="layer_fine", values="value")
    known = [f for f in m.columns if m[f].notna().any()]
    if not known:
        return "CKA of every pretrained layer against every fine-tuned layer (no finite value)."
    same = [int(f) for f in known if m[f].idxmax() == f]
    return (f"Each fine-tuned layer is most similar to the pretrained layer of the same depth at "
            f"{len(same)} of {len(known)} layers{f' ({layer_ranges(same)})' if same else ''}.")


def behaviour(rows: pd.DataFrame, feature: str) -> str:
    b = rows[rows["property"] == feature].set_index("metric")
    if not {"conflicting_accuracy", "conflicting_accuracy_before"} <= set(b.index):
        return f"Fine-tuned accuracy per partition for {feature}."
    n = b.loc["conflicting_accuracy"].get("n")
    n_text = f" (n = {int(n)})" if n == n and n is not None else ""
    before = b.loc["conflicting_accuracy_before", "value"]
    return (f"Inserting the token takes accuracy on other-class examples from {before:.2f} "
            f"to {b.loc['conflicting_accuracy', 'value']:.2f}{n_text}"
            + (f"; clean accuracy {b.loc['clean_accuracy', 'value']:.2f}." if "clean_accuracy" in b.index else "."))


def erasure(rows: pd.DataFrame, feature: str) -> str:
    e = rows[(rows["property"] == feature)]
    base = e[e.condition == "none"].set_index("metric")["value"]
    er = e[(e.condition == "erased") & (e.metric == "conflicting_accuracy")].dropna(subset=["value"])
    if er.empty or "conflicting_accuracy" not in base:
        return f"Causal tests for {feature}."
    r = er.loc[er["value"].astype(float).idxmax()]
    rnd = e[(e.condition == "random") & (e.metric == "conflicting_accuracy") & (e.layer == r.layer)
            & (e.concept == r.concept) & (e.method == r.method)]
    rnd_text = f", random directions {rnd.value.iloc[0]:.2f}" if len(rnd) else ""
    return (f"Best erasure: the {r.concept} concept with {str(r.method).upper()} at layer {int(r.layer)} takes "
            f"conflicting accuracy from {base['conflicting_accuracy']:.2f} (unedited) to {r.value:.2f}{rnd_text}.")


def ablation(rows: pd.DataFrame, feature: str) -> str:
    a = rows[(rows["property"] == feature) & (rows.metric == "conflicting_accuracy")]
    base = a[a.intervention == "none"]["value"]
    blocks = a[a.intervention.isin(["swap_pretrained", "reinit"])].dropna(subset=["value"])
    if blocks.empty or base.empty:
        return f"Block swaps for {feature}."
    r = blocks.loc[blocks["value"].astype(float).idxmax()]
    what = "swapping in the pretrained" if r.intervention == "swap_pretrained" else "re-initialising"
    return (f"No single block edit raises conflicting accuracy above {r.value:.2f} ({what} block {int(r.layer)}); "
            f"unedited {base.iloc[0]:.2f}.")


def confusion(matrices: dict[str, pd.DataFrame]) -> str:
    """The clean matrix's worst-recalled class and where its examples go; per conflicting view, the class
    the most examples go to."""
    parts = []
    for name, m in matrices.items():
        rows = m.sum(axis=1)
        if name == "clean":
            recall = pd.Series({c: m.loc[c, c] / rows[c] for c in m.index if rows[c] > 0 and c in m.columns})
            if recall.empty:
                continue
            worst = recall.idxmin()
            off = m.loc[worst].drop(worst)
            where = f" ({int(off.max())} go to {off.idxmax()})" if off.max() > 0 else ""
            parts.append(f"clean: lowest recall {worst}, {int(m.loc[worst, worst])} of {int(rows[worst])} right{where}")
        else:
            col = m.sum(axis=0).idxmax()
            parts.append(f"{name}: {int(m[col].sum())} of {int(rows.sum())} predicted {col}")
    text = "; ".join(parts) or "Confusion matrices"
    return text[0].upper() + text[1:] + "."
