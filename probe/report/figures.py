"""Figures for the report, drawn from the stored tables only, returned as inline SVG data URIs (sharp at
any screen resolution and zoom; text kept as text).

Pretrained and fine-tuned keep the same two colour-blind-safe colours everywhere (Okabe & Ito 2008
palette) and differ also by marker and line style (pretrained: squares, dashed; fine-tuned: circles,
solid), so they read in grey print too; every other series has a colour of its own.
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
MODEL_MARKERS = {"pretrained": "s", "finetuned": "o"}
MODEL_LINES = {"pretrained": "--", "finetuned": "-"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9.5, "axes.spines.top": False, "axes.spines.right": False,
                         "svg.hashsalt": "probe", "svg.fonttype": "none", "text.parse_math": False,
                         "text.usetex": False})
    return plt


def _to_uri(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _by_layer(ax, d: pd.DataFrame, colour: str, label: str, ls: str = "-", marker: str = "o") -> None:
    d = d.sort_values("layer")
    if d.empty:
        return
    ax.plot(d.layer, d.value, marker=marker, ms=3.5, color=colour, label=label, ls=ls)
    if d.ci_low.notna().any():
        ax.fill_between(d.layer, d.ci_low, d.ci_high, color=colour, alpha=0.18, lw=0)


#: panels per row: wider figures are shrunk to the page width until their text is unreadable
MAX_COLUMNS = 3


def _panel_grid(plt, n: int, rows_per: int, width: float, height: float):
    """A figure of ``n`` panels (each ``rows_per`` axes high), at most ``MAX_COLUMNS`` to a row;
    returns the figure and ``panel(j)``: the list of panel ``j``'s axes, top to bottom. Unused axes are hidden."""
    cols = max(1, min(MAX_COLUMNS, n))
    blocks = -(-n // cols)
    fig, axes = plt.subplots(rows_per * blocks, cols, figsize=(width * cols, height * rows_per * blocks),
                             squeeze=False)
    for j in range(n, blocks * cols):
        for r in range(rows_per):
            axes[(j // cols) * rows_per + r][j % cols].set_visible(False)

    def panel(j: int) -> list:
        return [axes[(j // cols) * rows_per + r][j % cols] for r in range(rows_per)]

    return fig, panel


def probing_figure(probing: pd.DataFrame, uninformative=()) -> str:
    """Per property: probe accuracy (top) and selectivity (bottom) by layer, pretrained vs fine-tuned,
    with 95 % bands; dash-dot grey: majority baseline; dotted: control-task accuracy. A property in
    ``uninformative`` (no probe above its majority baseline) is titled so and gets no selectivity curve:
    a selectivity of probes that only predict the majority value means nothing."""
    plt = _plt()
    props = list(dict.fromkeys(probing["property"]))
    has_sel = (probing.metric == "selectivity").any()
    rows = 2 if has_sel else 1
    fig, panel = _panel_grid(plt, len(props), rows, 3.1, 2.6)
    for j, prop in enumerate(props):
        p = probing[probing["property"] == prop]
        ax = panel(j)[0]
        for model in ("pretrained", "finetuned"):
            q = p[p.model == model]
            _by_layer(ax, q[q.metric == "accuracy"], MODEL_COLOURS[model], MODEL_LABELS[model],
                      MODEL_LINES[model], MODEL_MARKERS[model])
            control = q[q.metric == "control_accuracy"].sort_values("layer")
            if not control.empty:
                ax.plot(control.layer, control.value, ls=":", color=MODEL_COLOURS[model], lw=1,
                        label=f"{MODEL_LABELS[model]} control task")
        base = p[p.metric == "majority_baseline"].groupby("layer")["value"].mean()
        ax.plot(base.index, base.values, ls="-.", color=BASELINE, lw=1, label="majority baseline")
        flat = prop in uninformative
        ax.set_title(f"{prop} (uninformative)" if flat else prop, fontsize=9)
        ax.set_ylim(0, 1.02)
        if has_sel:
            ax2 = panel(j)[1]
            if flat:
                ax2.text(0.5, 0.5, "no probe above the majority baseline:\nselectivity not shown", ha="center",
                         va="center", transform=ax2.transAxes, fontsize=8, color=BASELINE)
            for model in () if flat else ("pretrained", "finetuned"):
                q = p[(p.model == model) & (p.metric == "selectivity")]
                _by_layer(ax2, q, MODEL_COLOURS[model], MODEL_LABELS[model], MODEL_LINES[model], MODEL_MARKERS[model])
            ax2.axhline(0, color=BASELINE, lw=0.8)
            ax2.set_xlabel("layer (0 = embeddings)")
        else:
            ax.set_xlabel("layer (0 = embeddings)")
        for a in panel(j):
            a.set_xticks(sorted(p.layer.dropna().unique()))
        if j % MAX_COLUMNS == 0:
            ax.set_ylabel("probe accuracy (held out)")
            if has_sel:
                panel(j)[1].set_ylabel("selectivity\n(accuracy − control)")
    handles, labels = panel(0)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.32 / fig.get_figheight(), 1, 1))  # room for the legend, whatever the height
    return _to_uri(fig)


def mdl_figure(mdl: pd.DataFrame) -> str:
    """Online codelength by layer per property (solid) and of its control task (dotted)."""
    plt = _plt()
    d = mdl[mdl.metric.isin(["codelength_bits", "control_codelength_bits"])]
    props = list(dict.fromkeys(d["property"]))
    fig, panel = _panel_grid(plt, len(props), 1, 3.4, 2.7)
    for j, prop in enumerate(props):
        ax = panel(j)[0]
        p = d[d.property == prop]
        for model in ("pretrained", "finetuned"):
            q = p[p.model == model]
            _by_layer(ax, q[q.metric == "codelength_bits"], MODEL_COLOURS[model], MODEL_LABELS[model],
                      MODEL_LINES[model], MODEL_MARKERS[model])
            _by_layer(ax, q[q.metric == "control_codelength_bits"], MODEL_COLOURS[model],
                      f"{MODEL_LABELS[model]} control task", ls=":", marker=MODEL_MARKERS[model])
        ax.set_title(prop, fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_xticks(sorted(p.layer.dropna().unique()))
        ax.set_ylim(bottom=0)
        if j % MAX_COLUMNS == 0:
            ax.set_ylabel("online codelength (bits)")
    panel(len(props) - 1)[0].legend(frameon=False, fontsize=7)
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
    fig, ax = plt.subplots(figsize=(0.55 * m.shape[1] + 2.2, 0.5 * m.shape[0] + 1.4))
    im = ax.imshow(m.to_numpy(), vmin=0, vmax=1, cmap="viridis", origin="lower")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m.iat[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
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


def _finish_panels(fig, axes, title: str, ncol: int, below: float) -> str:
    """Shared y label, one legend under the panels (from the first panel), a title; as a data URI."""
    axes[0][0].set_ylabel("fine-tuned accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -below))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _to_uri(fig)


ERASED = "#009E73"  # bluish green: the erased model
CLEAN = "#CC79A7"  # reddish purple: clean accuracy under the same edit


def erasure_figure(erasure: pd.DataFrame, feature: str) -> str:
    """One panel per (concept, method): conflicting and clean accuracy by layer with the concept erased
    (solid, 95 % bands), with as many random directions erased (dashed grey), and unedited (dotted)."""
    plt = _plt()
    e = erasure[erasure["property"] == feature]
    base = e[e.condition == "none"].set_index("metric")["value"]
    panels = list(e[e.condition != "none"].groupby(["concept", "method"], sort=False).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.8), squeeze=False, sharey=True)
    for ax, (concept, method) in zip(axes[0], panels):
        g = e[(e.concept == concept) & (e.method == method)]
        for metric, colour, label in (("conflicting_accuracy", ERASED, "conflicting"), ("clean_accuracy", CLEAN, "clean")):
            _by_layer(ax, g[(g.condition == "erased") & (g.metric == metric)], colour, f"{label}, erased")
            r = g[(g.condition == "random") & (g.metric == metric)].sort_values("layer")
            if not r.empty:
                ax.plot(r.layer, r.value, color=BASELINE, ls="--", lw=1, marker="x" if label == "clean" else "+",
                        ms=4, label=f"{label}, random control")
            if metric in base:
                ax.axhline(base[metric], color=colour, ls=":", lw=1, label=f"{label}, unedited")
        ax.set_title(f"{concept} concept, {method.upper()}", fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylim(-0.02, 1.02)
    return _finish_panels(fig, axes, feature, ncol=3, below=0.12)


def ablation_figure(ablation: pd.DataFrame, feature: str) -> str:
    """Clean and conflicting accuracy by block when that block is swapped for the pretrained one or
    re-initialised; dotted: unedited; dash-dot: the fine-tuned head on the whole pretrained encoder."""
    plt = _plt()
    a = ablation[ablation["property"] == feature]
    metrics = [m for m in ("clean_accuracy", "conflicting_accuracy") if (a.metric == m).any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 2.7), squeeze=False, sharey=True)
    styles = {"swap_pretrained": (PRETRAINED, "pretrained block", "s"), "reinit": (ERASED, "re-initialised block", "^")}
    for ax, metric in zip(axes[0], metrics):
        m = a[a.metric == metric]
        for intervention, (colour, label, marker) in styles.items():
            _by_layer(ax, m[m.intervention == intervention], colour, label, marker=marker)
        for intervention, colour, ls, label in (("none", "black", ":", "unedited"),
                                                ("pretrained_encoder", CLEAN, "-.", "head on pretrained encoder")):
            v = m[m.intervention == intervention]
            if not v.empty:
                ax.axhline(float(v.value.iloc[0]), color=colour, ls=ls, lw=1.2, label=label)
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.set_xticks(sorted(int(v) for v in m.layer.dropna().unique()))
        ax.set_xlabel("block")
        ax.set_ylim(-0.02, 1.02)
    return _finish_panels(fig, axes, feature, ncol=2, below=0.14)


def confusion_figure(matrices: dict[str, pd.DataFrame]) -> str:
    """Side by side, one confusion matrix per view (clean, conflicting): rows the true class, columns the
    predicted one; colour = share of the row (so classes of different size compare), the count written in
    each cell; one colour scale for all."""
    plt = _plt()
    names = list(matrices)
    k = max(m.shape[1] for m in matrices.values())
    fig, axes = plt.subplots(1, len(names), figsize=(0.62 * k * len(names) + 3.2, 0.45 * k + 1.6), squeeze=False,
                             layout="constrained")
    im = None
    for ax, name in zip(axes[0], names):
        m = matrices[name]
        counts = m.to_numpy()
        rows = counts.sum(axis=1, keepdims=True)
        share = counts / (rows + (rows == 0))
        im = ax.imshow(share, vmin=0, vmax=1, cmap="Blues", aspect="auto")
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.55 else "black")
        ax.set_xticks(range(counts.shape[1]), [str(c) for c in m.columns], rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(counts.shape[0]), [str(c) for c in m.index], fontsize=8)  # each panel its own rows
        ax.set_xlabel("predicted")
        ax.set_title(f"{name} (n = {int(counts.sum())})", fontsize=9)
    axes[0][0].set_ylabel("true class")
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.03, label="share of the true class's examples")
    return _to_uri(fig)


PARETO = "#E69F00"  # orange: Pareto-optimal variants
DOMINATED = "#56B4E9"  # sky blue: the others


def pareto_figure(points: pd.DataFrame, optimal, x: str = "clean_accuracy", y: str = "conflicting_accuracy",
                  label: str = "variant") -> str:
    """One labelled point per variant, ``x`` against ``y`` with their intervals as error bars in both
    directions (``<col>_ci_low`` / ``_ci_high``); Pareto-optimal variants (``optimal``, one bool per
    row) as orange diamonds joined by a dashed black step line (the front), the others as sky-blue
    circles; dashed grey:
    ``y = x`` (the planted token costs nothing)."""
    import numpy as np

    plt = _plt()
    optimal = np.asarray(list(optimal), dtype=bool)
    xs, ys = points[x].to_numpy(dtype=float), points[y].to_numpy(dtype=float)

    def err(col: str, v: np.ndarray) -> np.ndarray:
        lo = points[f"{col}_ci_low"].to_numpy(dtype=float)
        hi = points[f"{col}_ci_high"].to_numpy(dtype=float)
        return np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0).clip(min=0)

    xerr, yerr = err(x, xs), err(y, ys)
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color=BASELINE, label=f"{y.replace('_', ' ')} = {x.replace('_', ' ')}")
    for mask, colour, marker, size, name in ((~optimal, DOMINATED, "o", 6, "dominated"),
                                             (optimal, PARETO, "D", 7, "Pareto-optimal")):
        if mask.any():
            ax.errorbar(xs[mask], ys[mask], xerr=xerr[:, mask], yerr=yerr[:, mask], fmt=marker, ms=size,
                        color=colour, mec="black", mew=0.6, ecolor=colour, elinewidth=1, capsize=2.5,
                        label=name, zorder=5)
    if optimal.sum() > 1:
        order = np.argsort(xs[optimal])
        ax.step(xs[optimal][order], ys[optimal][order], where="pre", color="black", lw=1, ls=(0, (4, 2)),
                zorder=4, label="Pareto front")
    for xi, yi, name in zip(xs, ys, points[label].astype(str)):
        ax.annotate(name, (xi, yi), xytext=(5, 5), textcoords="offset points", fontsize=8, parse_math=False)
    lo = np.nanmin(np.concatenate([xs - xerr[0], ys - yerr[0]]))
    ax.set_xlim(max(0.0, lo - 0.05), 1.02)
    ax.set_ylim(max(0.0, lo - 0.05), 1.02)
    ax.set_xlabel(f"{x.replace('_', ' ')} (higher is better)")
    ax.set_ylabel(f"{y.replace('_', ' ')} (higher is better)")
    ax.legend(frameon=False, fontsize=7.5, loc="upper left")
    fig.tight_layout()
    return _to_uri(fig)
