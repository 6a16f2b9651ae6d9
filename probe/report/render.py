"""Render ``index.html`` from a run directory's stored summary, config and tables. No computation.

Every string from the data or the config goes through Jinja2's autoescaping, so markup in a
dataset (``<script>`` and friends) renders as inert text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from probe.analyses.aggregate import pooled_rows
from probe.errors import ProbeError
from probe.report import figures
from probe.rundir import atomic_write_text, not_complete, read_summary, read_table, run_state

STATUS_LABEL = {"relies": "Relies on the cue", "none": "No reliance found", "inconclusive": "Inconclusive"}


def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("probe.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["num"] = lambda v, d=2: "n/a" if v is None or v != v else f"{v:.{d}f}"
    env.filters["ci"] = _ci_filter
    return env


def _ci_filter(m: dict | None) -> str:
    """``value [ci_low, ci_high]``; ``n/a`` for a metric without a value (a mean over no examples)."""
    def known(v: Any) -> bool:
        return isinstance(v, (int, float)) and v == v

    if not m or not known(m.get("value")):
        return "n/a"
    if not (known(m.get("ci_low")) and known(m.get("ci_high"))):
        return f"{m['value']:.2f}"
    return f"{m['value']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"


def _read_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: read_table(p) for p in sorted((run_dir / "tables").glob("*.csv"))}


def _table_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if v != v else f"{v:.3f}"
        return str(v)

    return list(df.columns), [[cell(v) for v in row] for row in df.itertuples(index=False)]


def _pooled(df: pd.DataFrame) -> pd.DataFrame:
    """The rows to show: the across-seed aggregate where there are several seeds, else the one seed."""
    return pooled_rows(df).drop(columns="seed", errors="ignore")


def _ci_text(r) -> str:
    if r.ci_low != r.ci_low:  # NaN: no interval
        return f"{r.value:+.3f}"
    return f"{r.value:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"


def _layer_pivot(df: pd.DataFrame, index: list[str], signed: bool = True) -> tuple[list[str], list[list[str]]]:
    """``index`` × layer table whose cells read ``value [ci_low, ci_high]``."""
    fmt = _ci_text if signed else (lambda r: f"{r.value:.3f}" if r.ci_low != r.ci_low
                                   else f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]")
    d = df.assign(cell=[fmt(r) for r in df.itertuples()])
    wide = d.pivot_table(index=index, columns="layer", values="cell", aggfunc="first").reset_index()
    wide.columns = [c if isinstance(c, str) else f"layer {int(c)}" for c in wide.columns]
    return _table_rows(wide)


def _wide(df: pd.DataFrame, index: list[str]) -> tuple[list[str], list[list[str]]]:
    """``index`` × metric table whose cells read ``value [ci_low, ci_high]``."""
    d = df.assign(cell=[f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for r in df.itertuples()])
    wide = d.pivot_table(index=index, columns="metric", values="cell", aggfunc="first").reset_index()
    wide.columns = [str(c) for c in wide.columns]
    return _table_rows(wide)


def _heatmaps(words: pd.DataFrame) -> list[dict]:
    """Word heatmaps (integrated gradients) of the stored examples; every word escaped."""
    from markupsafe import Markup

    from probe.report.heatmap import render_heatmap_html

    if "seed" in words:
        words = words[words.seed.astype(str) == str(words.seed.iloc[0])]
    out = []
    keys = ["model", "property", "partition", "selection", "example"]
    for key, g in words.groupby(keys, sort=False):
        g = g.sort_values("position")
        info = dict(zip(keys, key))
        info.update(label=g.label.iloc[0], prediction=g.prediction.iloc[0],
                    html=Markup(render_heatmap_html(g.word.astype(str).tolist(), g.score.to_numpy())))
        out.append(info)
    return out


def render_report(run_dir: str | Path, summary_override: dict | None = None) -> Path:
    """Write ``index.html`` for ``run_dir`` from its stored files; returns its path."""
    run_dir = Path(run_dir)
    if summary_override is None:
        summary = read_summary(run_dir)
        if run_state(summary) != "complete":
            raise ProbeError(not_complete(run_dir, summary))
    else:
        summary = summary_override
    raw = _read_tables(run_dir)
    tables = {name: _pooled(df) for name, df in raw.items()}
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text(encoding="utf-8", errors="replace") if config_path.is_file() else ""
    page: dict[str, Any] = {"figs": {}, "sections": {}, "behaviour_figs": {}, "causal_figs": {}, "heatmaps": []}
    _representation_sections(tables, page)
    _attribution_sections(tables, raw, page)
    _behaviour_sections(tables, raw, summary, page)
    _causal_sections(tables, page)
    page["discovery"] = _discovery_section(tables, summary)
    html = _env().get_template("report.html.j2").render(
        s=summary, config_text=config_text, status_label=STATUS_LABEL, **page)
    out = run_dir / "index.html"
    atomic_write_text(out, html)
    return out


def _representation_sections(tables: dict[str, pd.DataFrame], page: dict) -> None:
    """Probing (with the amplification table), description length and CKA."""
    figs, sections = page["figs"], page["sections"]
    if "probing" in tables:
        probing = tables["probing"]
        figs["probing"] = figures.probing_figure(probing[probing.model.isin(["pretrained", "finetuned"])])
        amp = probing[probing.metric == "accuracy_difference"]
        if not amp.empty:
            sections["amplification"] = _layer_pivot(amp, ["property"])
        sections["probing"] = _table_rows(probing)
    if "mdl" in tables:
        mdl = tables["mdl"]
        figs["mdl"] = figures.mdl_figure(mdl)
        comp = mdl[mdl.metric.isin(["compression", "control_compression"])]
        sections["compression"] = _layer_pivot(comp, ["model", "property", "metric"], signed=False)
        rel = mdl[mdl.metric == "relative_extractability"]
        if not rel.empty:
            sections["extractability"] = _layer_pivot(rel, ["model", "property"], signed=False)
        sections["mdl"] = _table_rows(mdl)
    if "cka" in tables:
        figs["cka"] = figures.cka_figure(tables["cka"])
        sections["cka"] = _table_rows(tables["cka"].drop(columns=["model", "property"], errors="ignore"))
    if "cka_matrix" in tables:
        figs["cka_heatmap"] = figures.cka_heatmap(tables["cka_matrix"])


def _attribution_sections(tables: dict[str, pd.DataFrame], raw: dict[str, pd.DataFrame], page: dict) -> None:
    """Spurious attribution share, ERASER faithfulness, the full table and the word heatmaps."""
    sections = page["sections"]
    if "attribution" in tables and not tables["attribution"].empty:
        attr = tables["attribution"]
        spur = attr[attr.metric.isin(["spurious_attribution_share", "spurious_input_share", "spurious_top1_rate"])]
        if not spur.empty:
            sections["spurious_attribution"] = _wide(spur, ["model", "property", "partition", "method"])
        faith = attr[attr.metric.isin(["comprehensiveness_aopc", "sufficiency_aopc"])]
        if not faith.empty:
            sections["faithfulness"] = _wide(faith, ["model", "partition", "method"])
        sections["attribution"] = _table_rows(attr)
    if "attribution_words" in raw:
        page["heatmaps"] = _heatmaps(raw["attribution_words"])


def _behaviour_sections(tables: dict[str, pd.DataFrame], raw: dict[str, pd.DataFrame], summary: dict,
                        page: dict) -> None:
    """Entity scores (taggers), behaviour per planted feature, and the training log."""
    sections = page["sections"]
    if "entities" in tables:
        sections["entities"] = _wide(tables["entities"].drop(columns=["model", "layer"], errors="ignore"),
                                     ["property"])
    if "behaviour" in tables:
        behaviour = tables["behaviour"]
        for f in summary.get("features", []):
            page["behaviour_figs"][f["name"]] = figures.behaviour_figure(behaviour, f["name"])
        sections["behaviour"] = _table_rows(behaviour.drop(columns=["model", "layer"], errors="ignore"))
    if "training" in raw:
        sections["training"] = _table_rows(raw["training"])


def _causal_sections(tables: dict[str, pd.DataFrame], page: dict) -> None:
    """Erasure (figure, erased − random differences, the guarantee check) and layer swaps / head ablation."""
    sections, causal_figs = page["sections"], page["causal_figs"]
    if "erasure" in tables:
        erasure = tables["erasure"]
        for f in dict.fromkeys(erasure["property"]):
            causal_figs.setdefault(f, []).append(figures.erasure_figure(erasure, f))
        diff = erasure[(erasure.condition == "difference") & (erasure.metric == "conflicting_accuracy")]
        if not diff.empty:
            sections["erasure_difference"] = _layer_pivot(diff, ["property", "concept", "method"])
        guarantee = erasure[erasure.metric.isin(["concept_accuracy", "concept_majority"])
                            & (erasure.condition == "erased")]
        if not guarantee.empty:
            sections["erasure_guarantee"] = _layer_pivot(guarantee, ["property", "concept", "method", "metric"],
                                                         signed=False)
        sections["erasure"] = _table_rows(erasure)
    if "ablation" in tables:
        ablation = tables["ablation"]
        blocks = ablation[ablation.intervention.isin(["none", "swap_pretrained", "reinit", "pretrained_encoder"])]
        for f in dict.fromkeys(blocks["property"]):
            causal_figs.setdefault(f, []).append(figures.ablation_figure(blocks, f))
        heads = ablation[(ablation.intervention == "head") & (ablation.metric != "s_only_error_scan")]
        if not heads.empty:
            sections["heads"] = _wide(heads, ["property", "layer", "head"])
        sections["ablation"] = _table_rows(ablation)


DISCOVERY_COLUMNS = {"rank": "rank", "feature": "feature", "kind": "kind", "class": "class", "source": "from",
                     "count": "training count", "z": "z", "amplification": "amplification",
                     "override": "override rate [CI]", "override_control": "control", "deletion": "deletion drop [CI]",
                     "q_value": "q", "verdict": "verdict"}
DISCOVERY_ROWS = 20  # rows of the ranked table shown (tables/discovery.csv has every row)


def _discovery_section(tables: dict[str, pd.DataFrame], summary: dict) -> dict | None:
    """The "Shortcuts found" section: the ranked table (tested candidates first), a sentence and up to three
    example texts per used finding; None when discovery did not run."""
    if "discovery" not in tables:
        return None
    df = tables["discovery"]
    examples = tables.get("discovery_examples", pd.DataFrame(columns=["feature", "class", "edit", "text"]))

    def interval(r, name: str) -> str:
        v, lo, hi = r.get(name), r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high")
        return "" if v is None or v != v else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"

    rows = []
    for r in df.head(DISCOVERY_ROWS).to_dict("records"):
        r = {**r, "override": interval(r, "override_rate"), "deletion": interval(r, "deletion_drop"),
             "feature": str(r["feature"]) + (" (planted)" if r.get("planted") in (True, "True") else "")}
        rows.append(r)
    head, body = _table_rows(pd.DataFrame([{label: r.get(k) for k, label in DISCOVERY_COLUMNS.items()}
                                           for r in rows], columns=list(DISCOVERY_COLUMNS.values())))
    findings = []
    for f in summary.get("discovered", []):
        ex = examples[(examples.feature.astype(str) == str(f["feature"]))
                      & (examples["class"].astype(str) == str(f["class"]))].head(3)
        findings.append({**f, "examples": ex.to_dict("records")})
    tested = int(df["n_insert"].notna().sum()) if "n_insert" in df else 0
    return {"table": (head, body), "findings": findings, "n_tested": tested, "n_rows": len(df)}
