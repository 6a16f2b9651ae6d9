"""The budgeted default against the precise one (issue 27): both runs timed from the shell, then every
row of the tables the budgets change, side by side, and whether the budgeted value lies in the
precise run's 95 % interval.

    # on a quiet machine, nothing else running (about 12 minutes on the 2-core CPU):
    OMP_NUM_THREADS=2 python benchmarks/compare_precision.py --out /tmp/precision
    # a cheap check of the script (tiny-bert; one minute):
    OMP_NUM_THREADS=1 python benchmarks/compare_precision.py --quick --out /tmp/precision-quick
    # the same comparison on a model fine-tuned already (no fine-tuning in either run):
    python benchmarks/compare_precision.py --given reports/default/models/finetuned --out /tmp/precision-given

Each run is ``python -m probe run [CONFIG] --set analyses.precision=...`` in a fresh process (the budgeted
one first, so the shell-timed number is a fresh process's); stderr is kept and its lines with "warn" are
counted (the default must print none). Writes ``OUT/comparison.md``: the wall clocks and stage timings,
the verdicts, a headline table (README's rows) and the row-by-row table of ``attribution``, ``ablation``,
``behaviour`` and ``erasure`` (precise value [interval], budgeted value [interval], n of each, inside).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUICK = ["model.backbone=tiny-bert", "task.train_size=150", "task.validation_size=50", "task.test_size=120",
         "task.max_length=32", "finetune.epochs=1", "analyses.bootstrap_samples=200", "causal.layers=[0,2]"]
TABLES = ("behaviour", "attribution", "ablation", "erasure")
VALUES = ("value", "ci_low", "ci_high", "n")
HEADLINE = [  # (label, table, filters)
    ("clean accuracy", "behaviour", dict(metric="clean_accuracy", property="task")),
    ("conflicting accuracy", "behaviour", dict(metric="conflicting_accuracy")),
    ("reliance gap", "behaviour", dict(metric="reliance_gap")),
    ("s-only error", "behaviour", dict(metric="s_only_error")),
    ("IG share of the token, fine-tuned, conflicting", "attribution",
     dict(metric="spurious_attribution_share", method="integrated_gradients", model="finetuned", partition="conflicting")),
    ("IG top-1 rate, fine-tuned, conflicting", "attribution",
     dict(metric="spurious_top1_rate", method="integrated_gradients", model="finetuned", partition="conflicting")),
    ("IG top-1 rate, pretrained, conflicting", "attribution",
     dict(metric="spurious_top1_rate", method="integrated_gradients", model="pretrained", partition="conflicting")),
    ("IG comprehensiveness AOPC - random, conflicting", "attribution",
     dict(metric="comprehensiveness_aopc", method="integrated_gradients-random", model="finetuned",
          partition="conflicting")),
    ("occlusion share of the token, fine-tuned, conflicting", "attribution",
     dict(metric="spurious_attribution_share", method="occlusion", model="finetuned", partition="conflicting")),
    ("unedited conflicting accuracy (ablation table)", "ablation", dict(metric="conflicting_accuracy",
                                                                         intervention="none")),
]


def _run(mode: str, args, out: Path) -> dict:
    if args.reuse and (out / mode / "summary.json").exists():  # tables only; no new timing
        return {"wall": float("nan"), "warnings": [ln for ln in (out / f"{mode}.stderr.txt").read_text().splitlines()
                                                   if "warn" in ln.lower()],
                "summary": json.loads((out / mode / "summary.json").read_text()), "dir": out / mode}
    given = [f"model.finetuned={args.given}", "model.backbone=null", "pretrain.enabled=false"] if args.given else []
    sets = [*(QUICK if args.quick else []), *given, *args.sets, f"analyses.precision={mode}", f"output_dir={out}",
            f"name={mode}"]
    cmd = [sys.executable, "-m", "probe", "run", *([args.config] if args.config else []), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / f"{mode}.stderr.txt").write_text(done.stderr)
    if done.returncode:
        raise SystemExit(f"{mode} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    warns = [ln for ln in done.stderr.splitlines() if "warn" in ln.lower()]
    summary = json.loads((out / mode / "summary.json").read_text())
    return {"wall": wall, "warnings": warns, "summary": summary, "dir": out / mode}


def _fmt(v, lo, hi) -> str:
    return "" if pd.isna(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def row_table(name: str, precise: Path, budget: Path) -> pd.DataFrame:
    """The two runs' rows of table ``name`` joined on every column but the values, with ``inside``:
    whether the budgeted value lies in the precise interval."""
    p, b = (pd.read_csv(d / "tables" / f"{name}.csv").drop_duplicates() for d in (precise, budget))  # older runs
    keys = [c for c in p.columns if c not in VALUES and c in b.columns and c != "identical_inputs"]
    p[keys], b[keys] = p[keys].astype(str), b[keys].astype(str)
    m = p.merge(b, on=keys, how="outer", suffixes=("_precise", "_budget"))
    m["inside"] = (m["value_budget"] >= m["ci_low_precise"] - 1e-12) & (m["value_budget"] <= m["ci_high_precise"] + 1e-12)
    m["inside"] = m["inside"].astype(object)
    m.loc[m["value_precise"].isna() | m["value_budget"].isna() | m["ci_low_precise"].isna(), "inside"] = None
    m.insert(0, "table", name)
    return m[["table", *keys, *[f"{v}_{s}" for s in ("precise", "budget") for v in VALUES], "inside"]]


def _markdown(df: pd.DataFrame) -> list[str]:
    """``df`` as a Markdown table (no extra package)."""
    cell = lambda v: "" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    return ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns),
            *["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]]


def _headline(rows: dict[str, pd.DataFrame]) -> list[str]:
    lines = ["| row | precise | budgeted | inside |", "|---|---|---|---|"]
    for label, table, filt in HEADLINE:
        df = rows.get(table)
        if df is None:
            continue
        sel = df
        for k, v in filt.items():
            sel = sel[sel[k] == str(v)] if k in sel else sel.iloc[0:0]
        for r in sel.head(3).itertuples():
            lines.append(f"| {label} | {_fmt(r.value_precise, r.ci_low_precise, r.ci_high_precise)} (n {r.n_precise}) | "
                         f"{_fmt(r.value_budget, r.ci_low_budget, r.ci_high_budget)} (n {r.n_budget}) | {r.inside} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default=None, help="run config (default: the built-in default)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="tiny-bert and small settings: checks the script")
    p.add_argument("--reuse", action="store_true", help="compare runs already in OUT (no new runs, no wall clock)")
    p.add_argument("--given", help="diagnose this fine-tuned checkpoint in both modes instead of fine-tuning twice "
                   "(the tables compare the same way; the wall clock then leaves fine-tuning out)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for both runs")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    budget = _run("budget", args, args.out)
    precise = _run("full", args, args.out)
    rows = {t: row_table(t, precise["dir"], budget["dir"]) for t in TABLES
            if (precise["dir"] / "tables" / f"{t}.csv").exists()}
    lines = [f"# Precise (analyses.precision: full) vs budgeted (the default), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             "", f"load average at the end: {os.getloadavg()[0]:.2f}", "",
             "| | precise | budgeted |", "|---|---|---|",
             f"| wall clock from the shell (s) | {precise['wall']:.1f} | {budget['wall']:.1f} |",
             f"| lines with 'warn' on stderr | {len(precise['warnings'])} | {len(budget['warnings'])} |"]
    for stage in dict.fromkeys([*precise["summary"]["timings"], *budget["summary"]["timings"]]):
        lines.append(f"| {stage} (s) | {precise['summary']['timings'].get(stage, '')} | "
                     f"{budget['summary']['timings'].get(stage, '')} |")
    lines += ["", f"verdict, precise: {precise['summary']['verdict']}", "",
              f"verdict, budgeted: {budget['summary']['verdict']}", "",
              f"same verdict: {precise['summary']['verdict'] == budget['summary']['verdict']}", "", "## Headline rows", ""]
    lines += _headline(rows)
    allrows = pd.concat(rows.values(), ignore_index=True)
    inside = allrows["inside"].dropna()
    lines += ["", f"## Every row ({int(inside.sum())} of {len(inside)} budgeted values inside the precise interval)", "",
              *_markdown(allrows)]
    if budget["warnings"]:
        lines += ["", "## Warnings of the budgeted run", "", *[f"    {w}" for w in budget["warnings"]]]
    (args.out / "comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:40]))
    print(f"... written to {args.out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
