"""The report's "Task quality" section, like scikit-learn's ``classification_report``: per-class
precision, recall and F1 with 95 % intervals and counts, confusion matrices (figure and table) for the
clean test set and for the conflicting examples of each planted feature, and one sentence on any gap
between validation and clean test accuracy. The numbers come from :mod:`probe.analyses.class_report`
on ``tables/predictions.csv``; this module only lays them out.
"""

from __future__ import annotations

import pandas as pd

from probe.analyses.class_report import class_report, confusion, partitions
from probe.report import figures, takeaways
from probe.report import tables as tb

#: report column → glossary name
CLASS_COLUMNS = {"precision": "precision", "recall": "recall", "f1": "class_f1"}


def _per_class_table(report: pd.DataFrame, tid: str) -> dict:
    cols = [tb.column("class"), tb.column("support", True), tb.column("predicted", True)]
    cols += [tb.column(g, True) for g in CLASS_COLUMNS.values()]
    rows = []
    for r in report.to_dict("records"):
        row = [{"text": str(r["class"]), "sort": str(r["class"])},
               {"text": str(int(r["support"])), "sort": tb.sort_key(float(r["support"]))},
               {"text": str(int(r["predicted"])), "sort": tb.sort_key(float(r["predicted"]))}]
        row += [tb.value_cell(r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"]) for m in CLASS_COLUMNS]
        rows.append(row)
    return tb.table(tid, "tables/predictions.csv", cols, rows, collapsed=False,
                    note="Computed from the first seed's rows.")


def _confusion_table(m: pd.DataFrame, tid: str) -> dict:
    cols = [tb.column("true")]
    cols += [tb.column(str(c), True, label=str(c)) for c in m.columns]
    rows = [[{"text": str(c), "sort": str(c)}] + [{"text": str(int(v)), "sort": tb.sort_key(float(v))}
                                                   for v in m.loc[c]] for c in m.index]
    return tb.table(tid, "tables/predictions.csv", cols, rows, collapsed=False)


def gap_sentence(summary: dict, report: pd.DataFrame | None, threshold: float) -> str:
    """Why validation accuracy is above clean test accuracy, when it is by more than ``threshold``:
    a planted token in validation but not in the clean test set, shown by its class's recall."""
    task = summary.get("task") or {}
    val, test = task.get("final_validation_accuracy"), (summary.get("task_accuracy") or {}).get("value")
    if val is None or test is None or val != val or test != test or val - test <= threshold:
        return ""
    n = task.get("n_test")
    head = (f"Validation accuracy ({val:.3f}, n = {task.get('n_validation')}) is above clean test accuracy "
            f"({test:.3f}, n = {n})")
    if report is None or report.empty:
        return head + "."
    worst = report.dropna(subset=["recall"]).sort_values("recall").iloc[0]
    recall = f"{worst['class']} recall is {worst['recall']:.2f} ({int(worst['correct'])} of {int(worst['support'])})"
    planted = [f for f in summary.get("features") or [] if f.get("target_class") == worst["class"]
               and (f.get("train_rate_in_class") or 0) > (f.get("train_rate_outside") or 0)]
    if planted:
        f = planted[0]
        return (f"{head} because validation examples carry the planted token \"{f.get('token')}\" as the training "
                f"ones do (P(token | {worst['class']}) = {f.get('train_rate_in_class'):.2f}), while the clean test "
                f"set has none: without it, {recall}.")
    return f"{head}; the class it loses most on: {recall}."


def section(summary: dict, raw: dict[str, pd.DataFrame], threshold: float, n_boot: int = 1000) -> dict:
    """``{"report": per-class table, "confusions": {view: matrix}, "figure", "tables": [confusion tables],
    "gap": sentence}``; empty when the run has no ``tables/predictions.csv``. Taggers: entity spans by the
    type predicted at their first word (indices into ``entity_types``), confusion matrices only."""
    task = summary.get("task") or {}
    tagger = bool(task.get("entity_types"))  # a tagger's summary names its entity types
    classes = [str(c) for c in ((task.get("entity_types") if tagger else task.get("classes")) or [])]
    views = partitions(raw.get("predictions"), summary.get("features") or [], classes) if classes else {}
    if not views:
        return {}
    matrices = {name: confusion(v["label"], v["prediction"], classes) for name, v in views.items()}
    # a conflicting view has no examples of the feature's own class: its empty row would only read as a zero
    matrices = {name: m if name == "clean" else m[m.sum(axis=1) > 0] for name, m in matrices.items()}
    out = {"confusions": matrices, "tables": [], "report_table": None, "report": None}
    if "clean" in views and not tagger:  # taggers: the entity table (seqeval) is the per-type report
        report = class_report(views["clean"]["label"], views["clean"]["prediction"], classes, n_boot=n_boot)
        out["report"] = report
        out["report_table"] = _per_class_table(report, "table-per-class")
    for i, (name, m) in enumerate(matrices.items()):
        t = _confusion_table(m, f"table-confusion-{i}")
        t["caption"] = f"{name} (n = {int(m.to_numpy().sum())})"
        out["tables"].append(t)
    out["figure"] = takeaways.figure(figures.confusion_figure(matrices), "Confusion matrices, clean and conflicting",
                                     takeaways.confusion(matrices))
    out["gap"] = gap_sentence(summary, out["report"], threshold)
    return out
