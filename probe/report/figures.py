"""Figures for the report, drawn from the stored tables only, returned as inline PNG data URIs.

Pretrained and fine-tuned keep the same two colour-blind-safe colours everywhere
(Okabe & Ito 2008 palette).
"""

from __future__ import annotations

import base64
import io

import pandas as pd

PRETRAINED = "#0072B2"  # blue
FINETUNED = "#D55E00"  # vermillion
BASELINE = "#777777"
MODEL_COLOURS = {"pretrained": PRETRAINED, "finetuned": FINETUNED}
MODEL_LABELS = {"pretrained": "pretrained", "finetuned": "fine-tuned"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "svg.hashsalt": "probe", "figure.dpi": 110})
    return plt


def _to_uri(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def probing_figure(probing: pd.DataFrame) -> str:
    """Probe accuracy by layer, one panel per property, pretrained vs fine-tuned with 95 % bands."""
    plt = _plt()
    props = list(dict.fromkeys(probing["property"]))
    fig, axes = plt.subplots(1, len(props), figsize=(3.6 * len(props), 2.8), squeeze=False)
    for ax, prop in zip(axes[0], props):
        p = probing[probing["property"] == prop]
        for model in ("pretrained", "finetuned"):
            acc = p[(p.model == model) & (p.metric == "accuracy")].sort_values("layer")
            if acc.empty:
                continue
            c = MODEL_COLOURS[model]
            ax.plot(acc.layer, acc.value, marker="o", ms=3, color=c, label=MODEL_LABELS[model])
            ax.fill_between(acc.layer, acc.ci_low, acc.ci_high, color=c, alpha=0.18, lw=0)
        base = p[p.metric == "majority_baseline"].groupby("layer")["value"].mean()
        ax.plot(base.index, base.values, ls="--", color=BASELINE, lw=1, label="majority baseline")
        ax.set_title(prop)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylim(0, 1.02)
        ax.set_xticks(sorted(p.layer.unique()))
    axes[0][0].set_ylabel("probe accuracy (held out)")
    axes[0][-1].legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return _to_uri(fig)


def cka_figure(cka: pd.DataFrame) -> str:
    """Linear CKA of pretrained layer l vs fine-tuned layer l, with its 95 % band."""
    plt = _plt()
    d = cka.sort_values("layer")
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    ax.plot(d.layer, d.value, marker="o", ms=3, color=FINETUNED)
    ax.fill_between(d.layer, d.ci_low, d.ci_high, color=FINETUNED, alpha=0.18, lw=0)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(sorted(d.layer.unique()))
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("linear CKA, pretrained vs fine-tuned")
    fig.tight_layout()
    return _to_uri(fig)


BEHAVIOUR_BARS = [
    ("clean_accuracy", "clean"),
    ("aligned_accuracy", "aligned\n(token, its class)"),
    ("conflicting_accuracy_before", "other classes\nbefore token"),
    ("conflicting_accuracy", "conflicting\n(other classes + token)"),
]


def behaviour_figure(behaviour: pd.DataFrame, feature: str) -> str:
    """Fine-tuned accuracy on each partition for one planted feature, with 95 % intervals."""
    plt = _plt()
    b = behaviour[behaviour["property"] == feature].set_index("metric")
    names = [m for m, _ in BEHAVIOUR_BARS if m in b.index]
    labels = [lab for m, lab in BEHAVIOUR_BARS if m in b.index]
    vals = b.loc[names, "value"].to_numpy()
    err = [vals - b.loc[names, "ci_low"].to_numpy(), b.loc[names, "ci_high"].to_numpy() - vals]
    fig, ax = plt.subplots(figsize=(5.2, 2.6))
    ax.bar(range(len(names)), vals, yerr=err, color=FINETUNED, alpha=0.85, capsize=3)
    for i, (v, hi) in enumerate(zip(vals, b.loc[names, "ci_high"].to_numpy())):
        ax.text(i, hi + 0.03, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), labels, fontsize=7.5)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fine-tuned accuracy")
    ax.set_title(feature)
    fig.tight_layout()
    return _to_uri(fig)
