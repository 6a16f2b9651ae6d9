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


def _by_layer(ax, d: pd.DataFrame, colour: str, label: str, ls: str = "-") -> None:
    d = d.sort_values("layer")
    if d.empty:
        return
    ax.plot(d.layer, d.value, marker="o", ms=3, color=colour, label=label, ls=ls)
    if d.ci_low.notna().any():
        ax.fill_between(d.layer, d.ci_low, d.ci_high, color=colour, alpha=0.18, lw=0)


def probing_figure(probing: pd.DataFrame) -> str:
    """Per property: probe accuracy (top) and selectivity (bottom) by layer, pretrained vs fine-tuned,
    with 95 % bands; dashed grey: majority baseline; dotted: control-task accuracy."""
    plt = _plt()
    props = list(dict.fromkeys(probing["property"]))
    has_sel = (probing.metric == "selectivity").any()
    rows = 2 if has_sel else 1
    fig, axes = plt.subplots(rows, len(props), figsize=(3.1 * len(props), 2.6 * rows), squeeze=False,
                             sharex="col")
    for j, prop in enumerate(props):
        p = probing[probing["property"] == prop]
        ax = axes[0][j]
        for model in ("pretrained", "finetuned"):
            q = p[p.model == model]
            _by_layer(ax, q[q.metric == "accuracy"], MODEL_COLOURS[model], MODEL_LABELS[model])
            control = q[q.metric == "control_accuracy"].sort_values("layer")
            if not control.empty:
                ax.plot(control.layer, control.value, ls=":", color=MODEL_COLOURS[model], lw=1,
                        label=f"{MODEL_LABELS[model]} control task")
        base = p[p.metric == "majority_baseline"].groupby("layer")["value"].mean()
        ax.plot(base.index, base.values, ls="--", color=BASELINE, lw=1, label="majority baseline")
        ax.set_title(prop, fontsize=9)
        ax.set_ylim(0, 1.02)
        if has_sel:
            ax2 = axes[1][j]
            for model in ("pretrained", "finetuned"):
                q = p[(p.model == model) & (p.metric == "selectivity")]
                _by_layer(ax2, q, MODEL_COLOURS[model], MODEL_LABELS[model])
            ax2.axhline(0, color=BASELINE, lw=0.8)
            ax2.set_xlabel("layer (0 = embeddings)")
        else:
            ax.set_xlabel("layer (0 = embeddings)")
        axes[-1][j].set_xticks(sorted(p.layer.dropna().unique()))
    axes[0][0].set_ylabel("probe accuracy (held out)")
    if has_sel:
        axes[1][0].set_ylabel("selectivity\n(accuracy − control)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _to_uri(fig)


def mdl_figure(mdl: pd.DataFrame) -> str:
    """Online codelength by layer per property (solid) and of its control task (dotted)."""
    plt = _plt()
    d = mdl[mdl.metric.isin(["codelength_bits", "control_codelength_bits"])]
    props = list(dict.fromkeys(d["property"]))
    fig, axes = plt.subplots(1, len(props), figsize=(3.4 * len(props), 2.7), squeeze=False)
    for ax, prop in zip(axes[0], props):
        p = d[d.property == prop]
        for model in ("pretrained", "finetuned"):
            q = p[p.model == model]
            _by_layer(ax, q[q.metric == "codelength_bits"], MODEL_COLOURS[model], MODEL_LABELS[model])
            _by_layer(ax, q[q.metric == "control_codelength_bits"], MODEL_COLOURS[model],
                      f"{MODEL_LABELS[model]} control task", ls=":")
        ax.set_title(prop, fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_xticks(sorted(p.layer.dropna().unique()))
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("online codelength (bits)")
    axes[0][-1].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return _to_uri(fig)


def cka_figure(cka: pd.DataFrame) -> str:
    """Linear (and debiased) CKA of pretrained layer l vs fine-tuned layer l, with 95 % bands."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    _by_layer(ax, cka[cka.metric == "linear_cka"], FINETUNED, "linear CKA")
    _by_layer(ax, cka[cka.metric == "debiased_linear_cka"], "#009E73", "debiased linear CKA", ls="--")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(sorted(cka.layer.dropna().unique()))
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("CKA, pretrained vs fine-tuned")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _to_uri(fig)


def cka_heatmap(matrix: pd.DataFrame) -> str:
    """CKA of every pretrained layer (rows) against every fine-tuned layer (columns)."""
    plt = _plt()
    metric = "debiased_linear_cka" if (matrix.metric == "debiased_linear_cka").any() else "linear_cka"
    m = matrix[matrix.metric == metric].pivot(index="layer_pre", columns="layer_fine", values="value")
    fig, ax = plt.subplots(figsize=(3.8, 3.2))
    im = ax.imshow(m.to_numpy(), vmin=0, vmax=1, cmap="viridis", origin="lower")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m.iat[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5, color="white" if v < 0.6 else "black")
    ax.set_xticks(range(m.shape[1]), m.columns)
    ax.set_yticks(range(m.shape[0]), m.index)
    ax.set_xlabel("fine-tuned layer")
    ax.set_ylabel("pretrained layer")
    ax.set_title(metric.replace("_", " "), fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
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
