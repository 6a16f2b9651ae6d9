"""Render ``index.html`` from a run directory's stored summary, config and tables. No computation.

The page opens with the scorecard (:mod:`probe.report.scorecard`) and a table of contents whose
anchors are fixed section names (``#probing``, ``#causal``), so links into a report can be shared;
tables come from :mod:`probe.report.tables` with the human names of :mod:`probe.report.glossary`.
Every string from the data or the config goes through Jinja2's autoescaping, so markup in a
dataset (``<script>`` and friends) renders as inert text.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from probe.analyses.aggregate import pooled_rows
from probe.errors import ProbeError
from probe.analyses.verdict import discovery_lead, erasure_rule, erasure_sentence
from probe.report import figures, glossary, impact, quality, takeaways
from probe.report import tables as tb
from probe.report.scorecard import SEVERITY, scorecard, slug, uninformative
from probe.rundir import (atomic_write_text, damaged_tables, not_complete, read_summary, read_table, record_outputs,
                          run_state)

STATUS_LABEL = {"relies": "Relies on the cue", "none": "No reliance found", "inconclusive": "Inconclusive"}

#: section id → heading in the table of contents, in page order; ids are part of the page's interface
SECTIONS = {"impact": "What it means", "scorecard": "Scorecard", "verdicts": "Verdicts",
            "shortcuts-found": "Shortcuts found", "task-quality": "Task quality", "behaviour": "Behaviour",
            "attribution": "Attribution", "causal": "Causal tests", "probing": "Probing",
            "description-length": "Description length", "similarity": "Representation similarity",
            "appendix": "Appendix: full tables", "config": "Config and versions", "glossary": "Glossary"}
INVARIANCE = ("change_rate", "accuracy_drop")
#: pairs of texts: the attribution mass per side, and ERASER's AOPC overall and per side (docs/design.md §9)
SIDE_SHARES = ("first_side_share", "second_side_share", "token_side_share", "token_side_input_share")
FAITHFULNESS = ("comprehensiveness_aopc", "sufficiency_aopc", "first_side_comprehensiveness_aopc",
                "first_side_sufficiency_aopc", "second_side_comprehensiveness_aopc", "second_side_sufficiency_aopc")
#: the columns of tables/relations.csv the page shows (the CSV has the intervals and test statistics)
RELATION_COLUMNS = ("seed", "feature", "class", "n_insert", "override_rate", "override_control", "n_delete",
                    "deletion_drop", "deletion_control", "q_value", "verdict")
#: the numbers on every verdict card
HEADLINE = ("task_accuracy", "conflicting_accuracy", "reliance_gap", "flip_rate", "s_only_error")


def environment(used: set | None = None):
    """The Jinja environment of both pages: autoescaping everywhere, the ``num``, ``ci`` and ``int``
    filters; ``term`` and ``define`` record every name they are asked about in ``used``, and
    ``glossary_used(extra)`` lists those (and ``extra``) for the glossary at the page's end, so every term
    with a tooltip has its entry."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    used = set() if used is None else used
    env = Environment(loader=PackageLoader("probe.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["num"] = lambda v, d=2: f"{v:.{d}f}" if isinstance(v, (int, float)) and v == v else "n/a"
    env.filters["ci"] = _ci_filter

    def term(name: str) -> str:
        used.add(name)
        return glossary.label(name)

    def define(name: str) -> str:
        used.add(name)
        return glossary.definition(name)

    env.globals.update(term=term, define=define, slug=slug,
                       glossary_used=lambda extra=(): glossary.entries(used | set(extra)))
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
    """Word heatmaps (integrated gradients) of the stored examples, the pretrained and fine-tuned heatmaps of
    one example side by side, each coloured on its own scale (its largest |score|, printed beside it: the two
    models' attributions can differ by orders of magnitude); every word escaped."""
    from markupsafe import Markup

    from probe.report.heatmap import render_heatmap_html

    if "seed" in words:
        words = words[words.seed.astype(str) == str(words.seed.iloc[0])]
    out: dict[tuple, dict] = {}
    keys = ["property", "partition", "example"]
    for key, g in words.groupby(keys, sort=False):
        pair = out.setdefault(key, {**dict(zip(keys, key)), "models": {}})
        for model, m in g.groupby("model", sort=False):
            m = m.sort_values("position")
            scale = float(m.score.abs().max()) or 1.0
            pair["models"][str(model)] = {"scale": scale,
                "selection": ", ".join(dict.fromkeys(m.selection.astype(str))), "label": m.label.iloc[0],
                "prediction": m.prediction.iloc[0],
                "html": Markup(render_heatmap_html(m.word.astype(str).tolist(), m.score.to_numpy(), scale))}
    return list(out.values())


def _config(run_dir: Path) -> dict:
    """The run's ``config.yaml`` as a dict (``{}`` when it cannot be read: an old or hand-made folder)."""
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        return cfg if isinstance(cfg, dict) else {}
    except Exception:  # noqa: BLE001 - the documented defaults below
        return {}


def _setting(cfg: dict, section: str, key: str, default: float) -> float:
    try:
        return float(cfg[section][key])
    except (KeyError, TypeError, ValueError):
        return default


def _threshold(run_dir: Path) -> float:
    """``analyses.reliance_threshold`` from the run's ``config.yaml`` (0.05 when it cannot be read)."""
    return _setting(_config(run_dir), "analyses", "reliance_threshold", 0.05)


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
    damaged = damaged_tables(run_dir)
    if damaged:
        note = (f"tables missing or damaged, so this report shows less than the run computed: {'; '.join(damaged)}; "
                "run the run again to rebuild them")
        print(f"probe: warning: {note}", file=sys.stderr)
        summary = {**summary, "warnings": [*summary.get("warnings", []), note]}
    tables = {name: _pooled(df) for name, df in raw.items()}
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text(encoding="utf-8", errors="replace") if config_path.is_file() else ""
    cfg = _config(run_dir)
    threshold = _setting(cfg, "analyses", "reliance_threshold", 0.05)
    page: dict[str, Any] = {"figs": {}, "sections": {}, "behaviour_figs": {}, "causal_figs": {}, "heatmaps": [],
                            "appendix": []}
    _representation_sections(tables, page)
    _attribution_sections(tables, raw, page)
    _behaviour_sections(tables, raw, summary, page)
    _causal_sections(tables, page, threshold)
    page["discovery"] = _discovery_section(tables, summary)
    page["quality"] = quality.section(summary, raw, threshold,
                                      int(_setting(cfg, "analyses", "bootstrap_samples", 1000)))
    features = [_feature(f, tables, threshold) for f in summary.get("features", [])]
    shown_config = f"{cfg.get('output_dir', 'reports')}/{summary.get('name', run_dir.name)}/config.yaml"
    toc = _toc(summary, page)
    cards = scorecard(summary, tables, threshold, _setting(cfg, "discover", "q", 0.05),
                      _setting(cfg, "discover", "min_effect", 0.1))
    shown = [t for t in page["sections"].values() if t] + page["appendix"] + \
        ([page["discovery"]["table"]] if page["discovery"] else []) + \
        ([page["quality"]["report_table"]] if page["quality"].get("report_table") else []) + \
        page["quality"].get("tables", [])
    used = tb.names_used(shown) | {r["metric"] for r in cards} | set(HEADLINE)
    html = environment().get_template("report.html.j2").render(
        s=summary, features=features, config_text=config_text, status_label=STATUS_LABEL, toc=toc,
        toc_ids={t["id"] for t in toc}, scorecard=cards, table_terms=used, threshold=threshold,
        banner=impact.banner(summary, page["quality"].get("confusions", {}), shown_config),
        lead=lead_sentence(summary), methods=_methods(tables), **page)
    out = run_dir / "index.html"
    atomic_write_text(out, html)
    record_outputs(run_dir, ["index.html"], create=False)
    return out


def _feature(f: dict, tables: dict[str, pd.DataFrame], threshold: float) -> dict:
    """A verdict card's data: the summary's entry, its causal sentence made again from the erasure table the
    page shows (the same rule, stated), its severity and the n behind each headline number."""
    name = f.get("name")
    out = dict(f, severity=SEVERITY.index(f.get("verdict_status")) if f.get("verdict_status") in SEVERITY else 2)
    if "erasure" in tables:
        out["causal"] = (erasure_sentence(tables["erasure"], name, f.get("token", name), threshold)
                         or f.get("causal", ""))
    b = tables.get("behaviour")
    out["n"] = {}
    if b is not None and "n" in b:
        rows = b[(b["property"].astype(str) == str(name)) & b["n"].notna()]
        out["n"] = {str(r.metric): int(r.n) for r in rows.itertuples()}
    return out


def lead_sentence(summary: dict) -> str:
    """The verdict section's sentence when no feature was declared: what discovery found leads."""
    if summary.get("features"):
        return ""
    return discovery_lead(summary.get("discovered")) or str(summary.get("verdict", ""))


def _methods(tables: dict[str, pd.DataFrame]) -> dict:
    """What ran, so method text describes only that: erasure methods and whether layer swaps ran."""
    erasure = tables.get("erasure")
    methods = set() if erasure is None else {str(m) for m in erasure["method"].dropna()} - {"random", "nan", ""}
    ablation = tables.get("ablation")
    attr = tables.get("attribution")
    names = {"integrated_gradients": "integrated gradients", "saliency": "saliency",
             "input_x_gradient": "input × gradient", "occlusion": "occlusion"}
    ran = [] if attr is None or "method" not in attr else [names.get(str(m), str(m)) for m in
                                                           dict.fromkeys(attr["method"].dropna()) if m != "random"]
    return {"erasure": methods, "attribution": ran, "swaps": ablation is not None and not ablation.empty,
            "heads": ablation is not None and (ablation.get("intervention") == "head").any()}


def _toc(summary: dict, page: dict) -> list[dict]:
    """The sections this page has, in order: ``{"id", "title"}``."""
    sections, figs = page["sections"], page["figs"]
    present = {"impact": True, "scorecard": True, "verdicts": True, "shortcuts-found": page["discovery"] is not None,
               "task-quality": True, "behaviour": "behaviour" in sections or "invariance" in sections,
               "attribution": ("spurious_attribution" in sections or "side_attribution" in sections
                               or bool(page["heatmaps"])),
               "causal": bool(page["causal_figs"]), "probing": "probing" in figs, "description-length": "mdl" in figs,
               "similarity": "cka" in figs, "appendix": bool(page["appendix"]), "config": True, "glossary": True}
    return [{"id": k, "title": v} for k, v in SECTIONS.items() if present[k]]


def _representation_sections(tables: dict[str, pd.DataFrame], page: dict) -> None:
    """Probing (with the amplification grid), description length and CKA."""
    figs, sections = page["figs"], page["sections"]
    if "probing" in tables:
        probing = tables["probing"]
        shown = probing[probing.model.isin(["pretrained", "finetuned"])]
        flat = [p for p in dict.fromkeys(probing["property"].astype(str)) if uninformative(probing, p)]
        figs["probing"] = takeaways.figure(figures.probing_figure(shown, flat),
                                           "Probe accuracy and selectivity by layer", takeaways.probing(probing))
        amp = probing[probing.metric == "accuracy_difference"]
        if not amp.empty:
            sections["amplification"] = tb.layer_grid(amp, ["property"], "table-amplification",
                                                      "tables/probing.csv")
        page["appendix"].append(tb.tidy(probing, "table-probing", "tables/probing.csv", collapsed=True,
                                        caption="All probe rows"))
    if "mdl" in tables:
        mdl = tables["mdl"]
        figs["mdl"] = takeaways.figure(figures.mdl_figure(mdl), "Online codelength by layer", takeaways.mdl(mdl))
        comp = mdl[mdl.metric.isin(["compression", "control_compression"])]
        sections["compression"] = tb.layer_grid(comp, ["model", "property", "metric"], "table-compression",
                                                "tables/mdl.csv", signed=False)
        rel = mdl[mdl.metric == "relative_extractability"]
        if not rel.empty:
            sections["extractability"] = tb.layer_grid(rel, ["model", "property"], "table-extractability",
                                                       "tables/mdl.csv", signed=False)
        page["appendix"].append(tb.tidy(mdl, "table-mdl", "tables/mdl.csv", collapsed=True, caption="All MDL rows"))
    if "cka" in tables:
        figs["cka"] = takeaways.figure(figures.cka_figure(tables["cka"]), "CKA by layer, pretrained vs fine-tuned",
                                       takeaways.cka(tables["cka"]))
        cka = tables["cka"]
        sections["cka"] = tb.layer_grid(cka, ["metric"], "table-cka", "tables/cka.csv", signed=False)
    if "cka_matrix" in tables:
        figs["cka_heatmap"] = takeaways.figure(figures.cka_heatmap(tables["cka_matrix"]),
                                               "CKA of every pretrained layer against every fine-tuned layer",
                                               takeaways.cka_matrix(tables["cka_matrix"]))


def _attribution_sections(tables: dict[str, pd.DataFrame], raw: dict[str, pd.DataFrame], page: dict) -> None:
    """Spurious attribution share, ERASER faithfulness, the full table and the word heatmaps."""
    sections = page["sections"]
    if "attribution" in tables and not tables["attribution"].empty:
        attr = tables["attribution"]
        spur = attr[attr.metric.isin(["spurious_attribution_share", "spurious_input_share", "spurious_top1_rate"])]
        if (spur.get("partition") == "conflicting").any():  # the partition that decides; the rest: the appendix
            spur = spur[spur.partition == "conflicting"]
        if not spur.empty:
            sections["spurious_attribution"] = tb.wide(spur, ["model", "property", "partition", "method"],
                                                       "table-spurious-attribution", "tables/attribution.csv")
            sections["spurious_attribution"]["note"] = "Other partitions: the appendix's attribution rows."
        sides = attr[attr.metric.isin(SIDE_SHARES)]
        if not sides.empty:  # pairs: how the attribution mass splits between the two texts
            sections["side_attribution"] = tb.wide(sides, ["model", "property", "partition", "method"],
                                                   "table-side-attribution", "tables/attribution.csv")
        faith = attr[attr.metric.isin(FAITHFULNESS)]
        if not faith.empty:
            sections["faithfulness"] = tb.wide(faith, ["model", "partition", "method"], "table-faithfulness",
                                               "tables/attribution.csv")
        page["appendix"].append(tb.tidy(attr, "table-attribution", "tables/attribution.csv", collapsed=True,
                                        caption="All attribution rows"))
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
            page["behaviour_figs"][f["name"]] = takeaways.figure(
                figures.behaviour_figure(behaviour, f["name"]), f"Accuracy per test partition, {f['name']}",
                takeaways.behaviour(behaviour, f["name"]))
        edits = behaviour.metric.isin(INVARIANCE)
        if (~edits).any():
            sections["behaviour"] = tb.wide(behaviour[~edits], ["property"], "table-behaviour",
                                            "tables/behaviour.csv")
        if edits.any():
            sections["invariance"] = tb.wide(behaviour[edits], ["property"], "table-invariance",
                                             "tables/behaviour.csv")
    if "partial_input" in tables:  # pairs: one text replaced or emptied
        partial = tables["partial_input"].assign(metric="partial_" + tables["partial_input"].metric.astype(str))
        sections["partial_input"] = tb.wide(partial, ["partition", "property"], "table-partial-input",
                                            "tables/partial_input.csv")
    if "relations" in raw and not raw["relations"].empty:  # pairs: each relation's edit against its control
        rel = raw["relations"]
        sections["relations"] = tb.tidy(rel[[c for c in RELATION_COLUMNS if c in rel]], "table-relations",
                                        "tables/relations.csv")
    for name, index in (("zero_shot", ["property"]), ("prompt_format", ["model", "property"])):  # label words
        if name in tables and not tables[name].empty:
            sections[name] = tb.wide(tables[name].drop(columns=["identical_inputs"], errors="ignore"), index,
                                     f"table-{name.replace('_', '-')}", f"tables/{name}.csv")
    if "discovery_prompt" in raw and not raw["discovery_prompt"].empty:
        sections["discovery_prompt"] = tb.tidy(raw["discovery_prompt"], "table-discovery-prompt",
                                                  "tables/discovery_prompt.csv")
    if "training" in raw:
        sections["training"] = tb.tidy(raw["training"], "table-training", "tables/training.csv")


def _causal_sections(tables: dict[str, pd.DataFrame], page: dict, threshold: float = 0.05) -> None:
    """Erasure (figure, erased − random differences, the guarantee check) and layer swaps / head ablation."""
    sections, causal_figs = page["sections"], page["causal_figs"]
    if "erasure" in tables:
        erasure = tables["erasure"]
        for f in dict.fromkeys(erasure["property"]):
            causal_figs.setdefault(f, []).append(takeaways.figure(
                figures.erasure_figure(erasure, f), f"Concept erasure by layer, {f}", takeaways.erasure(erasure, f)))
        diff = erasure[(erasure.condition == "difference") & (erasure.metric == "conflicting_accuracy")]
        if not diff.empty:
            sections["erasure_difference"] = tb.layer_grid(
                diff, ["property", "concept", "method"], "table-erasure-difference", "tables/erasure.csv",
                note=f"Rule of the causal sentence: {erasure_rule(threshold)}.")
        guarantee = erasure[erasure.metric.isin(["concept_accuracy", "concept_majority"])
                            & (erasure.condition == "erased")]
        if not guarantee.empty:
            sections["erasure_guarantee"] = tb.layer_grid(guarantee, ["property", "concept", "method", "metric"],
                                                          "table-erasure-guarantee", "tables/erasure.csv",
                                                          signed=False)
        page["appendix"].append(tb.tidy(erasure, "table-erasure", "tables/erasure.csv", collapsed=True,
                                        caption="All erasure rows"))
    if "ablation" in tables:
        ablation = tables["ablation"]
        blocks = ablation[ablation.intervention.isin(["none", "swap_pretrained", "reinit", "pretrained_encoder"])]
        for f in dict.fromkeys(blocks["property"]):
            causal_figs.setdefault(f, []).append(takeaways.figure(
                figures.ablation_figure(blocks, f), f"Block swaps and re-initialisation, {f}",
                takeaways.ablation(ablation, f)))
        heads = ablation[(ablation.intervention.isin(["head", "none"])) & (ablation.metric != "s_only_error_scan")]
        if (heads.intervention == "head").any():
            heads = heads.assign(layer=heads.layer.astype(object).where(heads.intervention == "head", "unedited"),
                                 head=heads["head"].astype(object).where(heads.intervention == "head", "—"))
            sections["heads"] = tb.wide(heads, ["property", "layer", "head"], "table-heads", "tables/ablation.csv")
        page["appendix"].append(tb.tidy(ablation, "table-ablation", "tables/ablation.csv", collapsed=True,
                                        caption="All ablation rows"))
    if "budgets" in tables:  # analyses.precision: budget (docs/design.md §5, precision budgets)
        sections["budgets"] = tb.tidy(tables["budgets"], "table-budgets", "tables/budgets.csv")


#: the ranked table's columns: machine name (glossary key) → heading; override and deletion read value [interval]
DISCOVERY_COLUMNS = {"rank": "rank", "feature": "feature", "kind": "kind", "class": "class", "source": "from",
                     "count": "training count", "z": "z", "amplification": "attribution amplification",
                     "n_insert": "n inserted",
                     "override_rate": "override rate", "override_control": "control", "deletion_drop": "deletion effect",
                     "q_value": "q", "verdict": "verdict", "reference_override_rate": "reference override"}
NUMERIC = {"rank", "count", "n_insert", "z", "amplification", "override_rate", "override_control", "deletion_drop", "q_value",
           "reference_override_rate"}
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
            text = ("" if v != v else f"{v:.2g}" if name == "q_value"
                    else f"{int(v)}" if name in ("rank", "count", "n_insert") else f"{v:.2f}")
            return {"text": text, "sort": tb.sort_key(v)}
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
