"""Render ``index.html`` from a run directory's stored summary, config and tables. No computation.

The page opens with the scorecard (:mod:`probe.report.scorecard`) and a table of contents whose
anchors are fixed section names (``#probing``, ``#causal``), so links into a report can be shared;
tables come from :mod:`probe.report.tables` with the human names of :mod:`probe.report.glossary`.
Every string from the data or the config goes through Jinja2's autoescaping, so markup in a
dataset (``<script>`` and friends) renders as inert text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from probe.analyses.aggregate import pooled_rows
from probe.errors import ProbeError
from probe.report import figures, glossary
from probe.report import tables as tb
from probe.report.scorecard import scorecard, slug
from probe.rundir import atomic_write_text, not_complete, read_summary, read_table, run_state

STATUS_LABEL = {"relies": "Relies on the cue", "none": "No reliance found", "inconclusive": "Inconclusive"}

#: section id → heading in the table of contents, in page order; ids are part of the page's interface
SECTIONS = {"scorecard": "Scorecard", "verdicts": "Verdicts", "shortcuts-found": "Shortcuts found",
            "task-quality": "Task quality", "behaviour": "Behaviour", "attribution": "Attribution",
            "causal": "Causal tests", "probing": "Probing", "description-length": "Description length",
            "similarity": "Representation similarity", "config": "Config and versions", "glossary": "Glossary"}
INVARIANCE = ("change_rate", "accuracy_drop")
#: the numbers on every verdict card
HEADLINE = ("task_accuracy", "conflicting_accuracy", "reliance_gap", "flip_rate", "s_only_error")


def environment():
    """The Jinja environment of both pages: autoescaping everywhere, the ``num`` and ``ci`` filters."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("probe.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["num"] = lambda v, d=2: "n/a" if v is None or v != v else f"{v:.{d}f}"
    env.filters["ci"] = _ci_filter
    env.globals.update(term=glossary.label, define=glossary.definition, slug=slug)
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


def _pooled(df: pd.DataFrame) -> pd.DataFrame:
    """The rows to show: the across-seed aggregate where there are several seeds, else the one seed."""
    return pooled_rows(df).drop(columns="seed", errors="ignore")


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


def _threshold(run_dir: Path) -> float:
    """``analyses.reliance_threshold`` from the run's ``config.yaml`` (0.05 when it cannot be read)."""
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        return float(cfg["analyses"]["reliance_threshold"])
    except Exception:  # noqa: BLE001 - an old or hand-made run folder: the documented default
        return 0.05


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
    toc = _toc(summary, page)
    cards = scorecard(summary, tables, _threshold(run_dir))
    shown = list(page["sections"].values()) + ([page["discovery"]["table"]] if page["discovery"] else [])
    used = tb.names_used(shown) | {r["metric"] for r in cards} | set(HEADLINE)
    html = environment().get_template("report.html.j2").render(
        s=summary, config_text=config_text, status_label=STATUS_LABEL, toc=toc, toc_ids={t["id"] for t in toc},
        scorecard=cards, glossary=glossary.entries(used), **page)
    out = run_dir / "index.html"
    atomic_write_text(out, html)
    return out


def _toc(summary: dict, page: dict) -> list[dict]:
    """The sections this page has, in order: ``{"id", "title"}``."""
    sections, figs = page["sections"], page["figs"]
    present = {"scorecard": True, "verdicts": True, "shortcuts-found": page["discovery"] is not None,
               "task-quality": True, "behaviour": "behaviour" in sections or "invariance" in sections,
               "attribution": "spurious_attribution" in sections or bool(page["heatmaps"]),
               "causal": bool(page["causal_figs"]), "probing": "probing" in figs, "description-length": "mdl" in figs,
               "similarity": "cka" in figs, "config": True, "glossary": True}
    return [{"id": k, "title": v} for k, v in SECTIONS.items() if present[k]]


def _representation_sections(tables: dict[str, pd.DataFrame], page: dict) -> None:
    """Probing (with the amplification grid), description length and CKA."""
    figs, sections = page["figs"], page["sections"]
    if "probing" in tables:
        probing = tables["probing"]
        figs["probing"] = figures.probing_figure(probing[probing.model.isin(["pretrained", "finetuned"])])
        amp = probing[probing.metric == "accuracy_difference"]
        if not amp.empty:
            sections["amplification"] = tb.layer_grid(amp, ["property"], "table-amplification",
                                                      "tables/probing.csv")
        sections["probing"] = tb.tidy(probing, "table-probing", "tables/probing.csv", collapsed=True)
    if "mdl" in tables:
        mdl = tables["mdl"]
        figs["mdl"] = figures.mdl_figure(mdl)
        comp = mdl[mdl.metric.isin(["compression", "control_compression"])]
        sections["compression"] = tb.layer_grid(comp, ["model", "property", "metric"], "table-compression",
                                                "tables/mdl.csv", signed=False)
        rel = mdl[mdl.metric == "relative_extractability"]
        if not rel.empty:
            sections["extractability"] = tb.layer_grid(rel, ["model", "property"], "table-extractability",
                                                       "tables/mdl.csv", signed=False)
        sections["mdl"] = tb.tidy(mdl, "table-mdl", "tables/mdl.csv", collapsed=True)
    if "cka" in tables:
        figs["cka"] = figures.cka_figure(tables["cka"])
        cka = tables["cka"]
        sections["cka"] = tb.layer_grid(cka, ["metric"], "table-cka", "tables/cka.csv", signed=False)
    if "cka_matrix" in tables:
        figs["cka_heatmap"] = figures.cka_heatmap(tables["cka_matrix"])


def _attribution_sections(tables: dict[str, pd.DataFrame], raw: dict[str, pd.DataFrame], page: dict) -> None:
    """Spurious attribution share, ERASER faithfulness, the full table and the word heatmaps."""
    sections = page["sections"]
    if "attribution" in tables and not tables["attribution"].empty:
        attr = tables["attribution"]
        spur = attr[attr.metric.isin(["spurious_attribution_share", "spurious_input_share", "spurious_top1_rate"])]
        if not spur.empty:
            sections["spurious_attribution"] = tb.wide(spur, ["model", "property", "partition", "method"],
                                                       "table-spurious-attribution", "tables/attribution.csv")
        faith = attr[attr.metric.isin(["comprehensiveness_aopc", "sufficiency_aopc"])]
        if not faith.empty:
            sections["faithfulness"] = tb.wide(faith, ["model", "partition", "method"], "table-faithfulness",
                                               "tables/attribution.csv")
        sections["attribution"] = tb.tidy(attr, "table-attribution", "tables/attribution.csv", collapsed=True)
    if "attribution_words" in raw:
        page["heatmaps"] = _heatmaps(raw["attribution_words"])


def _behaviour_sections(tables: dict[str, pd.DataFrame], raw: dict[str, pd.DataFrame], summary: dict,
                        page: dict) -> None:
    """Entity scores (taggers), behaviour per planted feature, invariance edits and the training log."""
    sections = page["sections"]
    if "entities" in tables:
        sections["entities"] = tb.wide(tables["entities"].drop(columns=["model", "layer"], errors="ignore"),
                                       ["property"], "table-entities", "tables/entities.csv")
    if "behaviour" in tables:
        behaviour = tables["behaviour"]
        for f in summary.get("features", []):
            page["behaviour_figs"][f["name"]] = figures.behaviour_figure(behaviour, f["name"])
        edits = behaviour.metric.isin(INVARIANCE)
        if (~edits).any():
            sections["behaviour"] = tb.wide(behaviour[~edits], ["property"], "table-behaviour",
                                            "tables/behaviour.csv")
        if edits.any():
            sections["invariance"] = tb.wide(behaviour[edits], ["property"], "table-invariance",
                                             "tables/behaviour.csv")
    if "training" in raw:
        sections["training"] = tb.tidy(raw["training"], "table-training", "tables/training.csv")


def _causal_sections(tables: dict[str, pd.DataFrame], page: dict) -> None:
    """Erasure (figure, erased − random differences, the guarantee check) and layer swaps / head ablation."""
    sections, causal_figs = page["sections"], page["causal_figs"]
    if "erasure" in tables:
        erasure = tables["erasure"]
        for f in dict.fromkeys(erasure["property"]):
            causal_figs.setdefault(f, []).append(figures.erasure_figure(erasure, f))
        diff = erasure[(erasure.condition == "difference") & (erasure.metric == "conflicting_accuracy")]
        if not diff.empty:
            sections["erasure_difference"] = tb.layer_grid(diff, ["property", "concept", "method"],
                                                           "table-erasure-difference", "tables/erasure.csv")
        guarantee = erasure[erasure.metric.isin(["concept_accuracy", "concept_majority"])
                            & (erasure.condition == "erased")]
        if not guarantee.empty:
            sections["erasure_guarantee"] = tb.layer_grid(guarantee, ["property", "concept", "method", "metric"],
                                                          "table-erasure-guarantee", "tables/erasure.csv",
                                                          signed=False)
        sections["erasure"] = tb.tidy(erasure, "table-erasure", "tables/erasure.csv", collapsed=True)
    if "ablation" in tables:
        ablation = tables["ablation"]
        blocks = ablation[ablation.intervention.isin(["none", "swap_pretrained", "reinit", "pretrained_encoder"])]
        for f in dict.fromkeys(blocks["property"]):
            causal_figs.setdefault(f, []).append(figures.ablation_figure(blocks, f))
        heads = ablation[(ablation.intervention == "head") & (ablation.metric != "s_only_error_scan")]
        if not heads.empty:
            sections["heads"] = tb.wide(heads, ["property", "layer", "head"], "table-heads", "tables/ablation.csv")
        sections["ablation"] = tb.tidy(ablation, "table-ablation", "tables/ablation.csv", collapsed=True)
    if "budgets" in tables:  # analyses.precision: budget (docs/design.md §5, precision budgets)
        sections["budgets"] = tb.tidy(tables["budgets"], "table-budgets", "tables/budgets.csv")


#: the ranked table's columns: machine name (glossary key) → heading; override and deletion read value [interval]
DISCOVERY_COLUMNS = {"rank": "rank", "feature": "feature", "kind": "kind", "class": "class", "source": "from",
                     "count": "training count", "z": "z", "amplification": "amplification",
                     "override_rate": "override rate", "override_control": "control", "deletion_drop": "deletion effect",
                     "q_value": "q", "verdict": "verdict"}
NUMERIC = {"rank", "count", "z", "amplification", "override_rate", "override_control", "deletion_drop", "q_value"}
#: rows of the ranked table shown (tables/discovery.csv has every row)
DISCOVERY_ROWS = 20


def _discovery_section(tables: dict[str, pd.DataFrame], summary: dict) -> dict | None:
    """The "Shortcuts found" section: the ranked table (tested candidates first), a sentence and up to three
    example texts per used finding; None when discovery did not run."""
    if "discovery" in tables:
        df = tables["discovery"]
    elif summary.get("discovered"):  # a run folder without tables/discovery.csv: the findings summary.json keeps
        df = pd.DataFrame(summary["discovered"]).rename(columns={
            "override_ci_low": "override_rate_ci_low", "override_ci_high": "override_rate_ci_high",
            "deletion_ci_low": "deletion_drop_ci_low", "deletion_ci_high": "deletion_drop_ci_high"})
    else:
        return None
    examples = tables.get("discovery_examples", pd.DataFrame(columns=["feature", "class", "edit", "text"]))

    def cell(r: dict, name: str) -> dict:
        if name in ("override_rate", "deletion_drop"):
            return tb.value_cell(r.get(name), r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high"))
        v = r.get(name)
        if name == "feature":
            v = str(v) + (" (planted)" if r.get("planted") in (True, "True") else "")
        if isinstance(v, float):
            return {"text": "" if v != v else f"{v:.2g}" if name == "q_value" else f"{v:.2f}", "sort": tb.sort_key(v)}
        return {"text": "" if v is None else str(v), "sort": tb.sort_key(v)}

    records = df.head(DISCOVERY_ROWS).to_dict("records")
    columns = [tb.column(k, k in NUMERIC, label=label) for k, label in DISCOVERY_COLUMNS.items()]
    table = tb.table("table-discovery", "tables/discovery.csv", columns,
                     [[cell(r, k) for k in DISCOVERY_COLUMNS] for r in records], collapsed=False)
    findings = []
    for f in summary.get("discovered", []):
        ex = examples[(examples.feature.astype(str) == str(f["feature"]))
                      & (examples["class"].astype(str) == str(f["class"]))].head(3)
        findings.append({**f, "examples": ex.to_dict("records")})
    tested = int(df["n_insert"].notna().sum()) if "n_insert" in df else len(df)
    return {"table": table, "findings": findings, "n_tested": tested, "n_rows": len(df)}
