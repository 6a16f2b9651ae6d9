"""Render ``index.html`` from a run directory's stored summary, config and tables. No computation.

Every string from the data or the config goes through Jinja2's autoescaping, so markup in a
dataset (``<script>`` and friends) renders as inert text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from probe.errors import ProbeError
from probe.report import figures
from probe.rundir import atomic_write_text

STATUS_LABEL = {"relies": "Relies on the cue", "none": "No reliance found", "inconclusive": "Inconclusive"}


def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("probe.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["num"] = lambda v, d=2: "n/a" if v is None or v != v else f"{v:.{d}f}"
    env.filters["ci"] = lambda m: ("n/a" if not m else
                                   f"{m['value']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]")
    return env


def _read_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_csv(p) for p in sorted((run_dir / "tables").glob("*.csv"))}


def _table_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if v != v else f"{v:.3f}"
        return str(v)

    return list(df.columns), [[cell(v) for v in row] for row in df.itertuples(index=False)]


def _amplification(probing: pd.DataFrame) -> pd.DataFrame:
    acc = probing[probing.metric == "accuracy"].pivot_table(index=["property", "layer"], columns="model",
                                                             values="value")
    if not {"pretrained", "finetuned"} <= set(acc.columns):
        return pd.DataFrame()
    out = (acc["finetuned"] - acc["pretrained"]).rename("finetuned_minus_pretrained").reset_index()
    return out.pivot(index="property", columns="layer", values="finetuned_minus_pretrained").reset_index()


def render_report(run_dir: str | Path, summary_override: dict | None = None) -> Path:
    """Write ``index.html`` for ``run_dir`` from its stored files; returns its path."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if summary_override is None:
        if not summary_path.is_file():
            raise ProbeError(f"{str(run_dir)!r} is not a probe run directory: it has no summary.json")
        summary = json.loads(summary_path.read_text())
        if summary.get("status") != "complete":
            raise ProbeError(f"run {str(run_dir)!r} is not complete (status {summary.get('status')!r}); "
                             "run it again with probe run")
    else:
        summary = summary_override
    tables = _read_tables(run_dir)
    config_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""

    figs: dict[str, Any] = {}
    if "probing" in tables:
        figs["probing"] = figures.probing_figure(tables["probing"])
    if "cka" in tables:
        figs["cka"] = figures.cka_figure(tables["cka"])
    behaviour_figs = {}
    if "behaviour" in tables:
        for f in summary.get("features", []):
            behaviour_figs[f["name"]] = figures.behaviour_figure(tables["behaviour"], f["name"])

    sections = {}
    if "behaviour" in tables:
        sections["behaviour"] = _table_rows(tables["behaviour"].drop(columns=["model", "layer"], errors="ignore"))
    if "probing" in tables:
        amp = _amplification(tables["probing"])
        if not amp.empty:
            sections["amplification"] = _table_rows(amp)
        wide = tables["probing"].copy()
        sections["probing"] = _table_rows(wide)
    if "cka" in tables:
        sections["cka"] = _table_rows(tables["cka"].drop(columns=["model", "property"], errors="ignore"))
    if "training" in tables:
        sections["training"] = _table_rows(tables["training"])

    html = _env().get_template("report.html.j2").render(
        s=summary, figs=figs, behaviour_figs=behaviour_figs, sections=sections,
        config_text=config_text, status_label=STATUS_LABEL,
    )
    out = run_dir / "index.html"
    atomic_write_text(out, html)
    return out
