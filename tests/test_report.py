"""The report is self-contained and renders untrusted dataset text inert."""

import base64
import re

import pandas as pd

import probe
from tests.conftest import tiny_overrides

EVIL_LABEL = '<script>alert("label")</script>'


def test_markup_in_data_renders_inert(tmp_path):
    texts = [f'<img src=x onerror=alert({i})> story <b>{i}</b> <script>alert("t")</script> word{i % 7}'
             for i in range(120)]
    labels = [EVIL_LABEL if i % 2 else "plain & simple" for i in range(120)]
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "evil.csv", index=False)
    over = tiny_overrides(tmp_path, "evil", **{
        "task.dataset": str(tmp_path / "evil.csv"), "task.train_size": 60, "task.validation_size": 20,
        "task.test_size": 40, "spurious.0.target_class": EVIL_LABEL})
    run = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    html = (run.path / "index.html").read_text()
    assert html.lower().count("<script") == 1  # the page's own (sort, print) script; none from the data
    assert "&lt;script&gt;alert(&#34;label&#34;)&lt;/script&gt;" in html
    assert "plain &amp; simple" in html
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert srcs and all(src.startswith("data:image/svg+xml;base64,") for src in srcs)
    for src in srcs:  # figures are SVG: text from the data is XML-escaped inside, never markup
        svg = base64.b64decode(src.split(",", 1)[1]).decode()
        assert "<script" not in svg.lower() and "<img" not in svg.lower()
    assert "<link" not in html and "@import" not in html


MATH = [r"token:$\zz$", r"cost $\undefinedmacro{x$", "$5 and $6"]


def test_figures_draw_dollar_signs_in_names_literally():
    """Feature and property names come from the data; matplotlib must not parse ``$...$`` in them."""
    from probe.report import figures

    def rows(prop, metrics, layers=(0, 1), **keys):
        return [{"seed": 0, "model": m, "layer": layer, "property": prop, "metric": metric, "value": 0.5,
                 "ci_low": 0.4, "ci_high": 0.6, **keys}
                for m in ("pretrained", "finetuned") for layer in layers for metric in metrics]

    probing = pd.DataFrame([r for p in MATH for r in rows(p, ["accuracy", "majority_baseline", "selectivity"])])
    mdl = pd.DataFrame([r for p in MATH for r in rows(p, ["codelength_bits"])])
    for name in MATH:
        assert figures.probing_figure(probing).startswith("data:image/svg+xml;base64,")
        assert figures.mdl_figure(mdl).startswith("data:image/svg+xml;base64,")
        behaviour = pd.DataFrame([r for r in rows(name, ["clean_accuracy", "conflicting_accuracy"], layers=(None,))
                                  if r["model"] == "finetuned"])
        assert figures.behaviour_figure(behaviour, name).startswith("data:image/svg+xml;base64,")
        erasure = pd.DataFrame([r for cond in ("none", "erased", "random")
                                for r in rows(name, ["conflicting_accuracy", "clean_accuracy"], concept="position",
                                              method="leace", condition=cond,
                                              layers=(None,) if cond == "none" else (0, 1))
                                if r["model"] == "finetuned"])
        assert figures.erasure_figure(erasure, name).startswith("data:image/svg+xml;base64,")
        ablation = pd.DataFrame([r for i in ("none", "swap_pretrained")
                                 for r in rows(name, ["clean_accuracy"], intervention=i) if r["model"] == "finetuned"])
        assert figures.ablation_figure(ablation, name).startswith("data:image/svg+xml;base64,")


def test_report_shows_data_warnings_escaped_and_no_number_without_examples(tmp_path, tiny_run):
    import json
    import shutil

    from probe.report.render import _ci_filter, render_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    summary = json.loads((run / "summary.json").read_text())
    summary["warnings"] = ["class '<b>solo</b>' has a single example"]
    (run / "summary.json").write_text(json.dumps(summary))
    html = render_report(run).read_text()
    assert "Data warnings" in html and "class &#39;&lt;b&gt;solo&lt;/b&gt;&#39; has a single example" in html
    assert "Data warnings" not in (tiny_run.path / "index.html").read_text()
    nan = float("nan")
    assert _ci_filter({"value": nan, "ci_low": nan, "ci_high": nan}) == "n/a"
    assert _ci_filter({"value": 0.5, "ci_low": nan, "ci_high": nan}) == "0.50"
    assert _ci_filter({"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}) == "0.50 [0.25, 0.75]"


def _metric(v, lo, hi):
    return {"value": v, "ci_low": lo, "ci_high": hi}


def test_scorecard_rows_and_rules():
    """One row per feature examined, each with the chip its rule gives and a link to its section."""
    from probe.report.scorecard import scorecard

    summary = {"features": [{"name": "token:zebra", "kind": "planted", "verdict_status": "relies",
                             "reliance_gap": _metric(0.4, 0.3, 0.5)}],
               "discovered": [{"feature": "<b>ok</b>", "kind": "word", "class": "sport", "verdict": "used shortcut",
                               "override_rate": 0.6, "override_ci_low": 0.5, "override_ci_high": 0.7, "q_value": 0.001},
                              {"feature": "goal", "kind": "word", "class": "sport",
                               "verdict": "used, plausibly task-relevant", "override_rate": 0.2,
                               "override_ci_low": 0.1, "override_ci_high": 0.3, "q_value": 0.02}]}
    inv = pd.DataFrame([{"property": p, "metric": "change_rate", "value": v, "ci_low": lo, "ci_high": hi,
                         "identical_inputs": same}
                        for p, v, lo, hi, same in [("lowercase", 0.2, 0.1, 0.3, 0.0), ("add_url", 0.01, 0.0, 0.02, 0.0),
                                                   ("add_mention", 0.05, 0.02, 0.08, 0.0),
                                                   ("append_neutral_sentence", 0.0, 0.0, 0.0, 1.0)]])
    probing = pd.DataFrame([{"property": p, "model": "finetuned", "layer": layer, "metric": "accuracy_difference",
                             "value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
                            for p in ("task", "token:zebra", "length_bucket") for layer, v in [(0, 0.05), (1, -0.2)]])
    rows = scorecard(summary, {"behaviour": inv, "probing": probing}, threshold=0.05)
    got = [(r["feature"], r["kind"], r["chip"], r["href"]) for r in rows]
    assert got == [("token:zebra", "planted", "relies", "#verdict-token-zebra"),  # most severe first
                   ("<b>ok</b> → sport", "discovered word", "relies", "#shortcuts-found"),
                   ("lowercase", "invariance edit", "relies", "#invariance"),
                   ("goal → sport", "discovered word", "used, plausibly task-relevant", "#shortcuts-found"),
                   ("add mention", "invariance edit", "inconclusive", "#invariance"),
                   ("append neutral sentence", "invariance edit", "inconclusive", "#invariance"),
                   ("add url", "invariance edit", "no reliance", "#invariance"),
                   ("length bucket", "natural property", "correlational only", "#probing")]
    assert rows[0]["value"] == "0.40" and rows[0]["ci"] == "0.30 – 0.50"
    assert rows[-1]["value"] == "-0.20" and rows[-1]["note"] == "largest at layer 1"  # the largest in size
    assert rows[1]["note"] == "q = 0.001"
    # each deciding number stands next to its threshold and its rule in words
    assert rows[0]["threshold"] == "0.05" and "whole interval above 0.05" in rows[0]["rule"]
    assert rows[1]["threshold"] == "q ≤ 0.05, effect > 0.1" and "above 0.1" in rows[1]["rule"]
    assert all(r["rule"] for r in rows)


def test_report_page_structure(tmp_path, tiny_run):
    """Scorecard before the verdicts; every contents link has its section; discovered shortcuts join the
    scorecard and get their section; long tables start collapsed and link their CSV; a glossary."""
    import json
    import shutil

    from probe.report.render import SECTIONS, render_report

    html = (tiny_run.path / "index.html").read_text()
    toc = re.findall(r'<li><a href="#([a-z-]+)">', html)
    assert toc[:4] == ["impact", "scorecard", "verdicts", "task-quality"] and toc[-2:] == ["config", "glossary"]
    assert all(f'id="{t}"' in html for t in toc) and set(toc) <= set(SECTIONS)
    assert html.index('id="impact"') < html.index('id="scorecard"') < html.index('id="verdicts"') \
        < html.index('id="task-quality"') < html.index('id="appendix"') < html.index('id="glossary"')
    assert re.search(r'<details class="long" data-table="table-probing">', html)
    assert 'href="tables/probing.csv"' in html and 'id="verdict-token-zebra"' in html
    assert '<dt>reliance gap</dt>' in html and "reliance_gap<" not in html  # human names on the page
    assert "shortcuts-found" not in html

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run, ignore=shutil.ignore_patterns("models", "cache"))
    summary = json.loads((run / "summary.json").read_text())
    summary["discovered"] = [{"feature": "<i>goal</i>", "kind": "word", "class": "sport", "verdict": "used shortcut",
                              "override_rate": 0.6, "override_ci_low": 0.5, "override_ci_high": 0.7,
                              "deletion_drop": 0.1, "deletion_ci_low": 0.0, "deletion_ci_high": 0.2,
                              "q_value": 0.001, "count": 9, "z": 4.2}]
    (run / "summary.json").write_text(json.dumps(summary))
    html = render_report(run).read_text()
    assert '<a href="#shortcuts-found">' in html and 'id="shortcuts-found"' in html
    assert "&lt;i&gt;goal&lt;/i&gt; → sport" in html and "<i>goal</i>" not in html
    assert html.index('id="scorecard"') < html.index('id="shortcuts-found"') < html.index('id="task-quality"')


def test_class_report_matches_scikit_learn_and_counts():
    """Per-class precision / recall / F1 equal scikit-learn's on a known case; intervals hold the point;
    the confusion matrix is scikit-learn's with a column for the negative prediction codes."""
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    from probe.analyses.class_report import class_report, confusion

    y = np.array([0] * 10 + [1] * 10 + [2] * 5)
    p = np.array([0] * 8 + [1] * 2 + [1] * 9 + [0] + [0] * 5)  # class 2 never predicted
    rep = class_report(y, p, ["a", "b", "c"], n_boot=300)
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=[0, 1], zero_division=0)
    assert np.allclose(rep.precision[:2], prec) and np.allclose(rep.recall[:2], rec) and np.allclose(rep.f1[:2], f1)
    assert rep.support.tolist() == [10, 10, 5] and rep.predicted.tolist() == [14, 11, 0]
    assert rep.correct.tolist() == [8, 9, 0]
    assert np.isnan(rep.precision[2]) and rep.recall[2] == 0  # nothing predicted c: precision undefined, not 0
    assert (rep.recall_ci_low[:2] <= rep.recall[:2]).all() and (rep.recall[:2] <= rep.recall_ci_high[:2]).all()
    m = confusion(y, np.where(np.arange(25) == 24, -1, p), ["a", "b", "c"])
    assert m.loc["c", "a"] == 4 and m.loc["c", "no entity"] == 1 and int(m.to_numpy().sum()) == 25


def _erasure_rows(diff, clean_after=0.74):
    """An erasure table of one feature, one concept and method, one layer; ``diff`` = (value, lo, hi)."""
    rows = [{"property": "token:zebra", "layer": None, "metric": m, "n": n, "method": None, "concept": None,
             "condition": "none", "value": v, "ci_low": v, "ci_high": v}
            for m, n, v in (("clean_accuracy", 200, 0.74), ("conflicting_accuracy", 160, 0.13))]
    for cond, m, v in (("erased", "conflicting_accuracy", 0.22), ("erased", "clean_accuracy", clean_after),
                       ("random", "conflicting_accuracy", 0.13), ("random", "clean_accuracy", 0.74)):
        rows.append({"property": "token:zebra", "layer": 0, "metric": m, "n": 160, "method": "leace",
                     "concept": "document", "condition": cond, "value": v, "ci_low": v - 0.05, "ci_high": v + 0.05})
    rows.append({"property": "token:zebra", "layer": 0, "metric": "conflicting_accuracy", "n": 160, "method": "leace",
                 "concept": "document", "condition": "difference", "value": diff[0], "ci_low": diff[1],
                 "ci_high": diff[2]})
    return pd.DataFrame(rows)


def test_erasure_sentence_states_the_tables_rule_and_never_contradicts_it():
    """Regression (issue #28): a +0.091 [+0.045, +0.136] difference beside "at no layer" read as a
    contradiction; the sentence now states the rule, names that number and why it misses."""
    from probe.analyses.verdict import erasure_rule, erasure_sentence

    text = erasure_sentence(_erasure_rows((0.091, 0.045, 0.136)), "token:zebra", "zebra", 0.05)
    assert erasure_rule(0.05) in text  # the same rule the table's note prints
    assert "at no layer" in text and "+0.091 [+0.045, +0.136] at layer 0" in text
    assert "lower bound +0.045 is not above 0.05" in text
    assert "n conflicting = 160" in text and "n clean = 200" in text  # every number shows its n
    met = erasure_sentence(_erasure_rows((0.12, 0.06, 0.18)), "token:zebra", "zebra", 0.05)
    assert "meets it at layer 0" in met and "at no layer" not in met
    costly = erasure_sentence(_erasure_rows((0.12, 0.06, 0.18), clean_after=0.60), "token:zebra", "zebra", 0.05)
    assert "at no layer" in costly and "clean accuracy drops 14.0 points" in costly


def test_integers_print_as_integers_and_constant_properties_are_uninformative():
    from probe.report import tables as tb
    from probe.report.scorecard import scorecard

    assert tb._plain_cell("layer", 6.0)["text"] == "6" and tb._plain_cell("head", 10.0)["text"] == "10"
    assert tb._plain_cell("value", 6.0)["text"] == "6.000"
    probing = pd.DataFrame([{"property": p, "model": m, "layer": layer, "metric": metric, "value": v,
                             "ci_low": lo, "ci_high": hi}
                            for p, acc in (("contains_digit", (0.9, 0.85)), ("length_bucket", (0.8, 0.7)))
                            for m in ("pretrained", "finetuned") for layer in (0, 1)
                            for metric, v, lo, hi in (("accuracy", acc[0], acc[1], 0.95),
                                                      ("majority_baseline", 0.9, 0.9, 0.9) if p == "contains_digit"
                                                      else ("majority_baseline", 0.5, 0.5, 0.5),
                                                      ("accuracy_difference", 0.02, -0.01, 0.05))])
    rows = {r["feature"]: r for r in scorecard({}, {"probing": probing})}
    assert rows["contains digit"]["chip"] == "uninformative" and rows["length bucket"]["chip"] == "correlational only"


def test_impact_banner_reads_costs_per_class_and_gives_the_measured_remedy():
    import shlex

    from probe.config import load_config
    from probe.report.impact import banner
    from probe.report.render import lead_sentence

    classes = ["business", "politics", "tech"]
    clean = pd.DataFrame([[1, 67, 24], [0, 100, 0], [0, 2, 98]], index=classes, columns=classes)
    conflicting = pd.DataFrame([[0, 0, 0], [90, 10, 0], [80, 0, 20]], index=classes, columns=classes)
    feature = {"name": "token:zebra", "token": "zebra", "target_class": "business", "verdict_status": "relies",
               "reliance_gap": _metric(0.84, 0.8, 0.88), "s_only_error": _metric(0.85, 0.8, 0.9)}
    b = banner({"name": "default", "features": [feature]}, {"clean": clean, "conflicting: token:zebra": conflicting},
               "reports/default/config.yaml")
    assert b["status"] == "relies" and '"zebra" → business' in b["verdict"]
    assert b["verdict"].endswith("(s-only error 0.85 [0.80, 0.90], n = 200).")
    assert "Without the token, 1 of 92 business test examples is classified as business (67 to politics, 24 to tech)." \
        in b["costs"]
    assert "With it inserted, 170 of 200 test examples of other classes are classified as business." in b["costs"]
    assert b["command"].endswith("--set finetune.augmentation.counterfactual_rate=0.5") and "0.87 to 0.02" in b["caveat"]

    found = {"feature": "zebra", "class": "business", "verdict": "used shortcut", "override_rate": 0.86,
             "override_ci_low": 0.8, "override_ci_high": 0.9, "q_value": 0.01, "n_insert": 120}
    summary = {"name": "plain", "features": [], "discovered": [found],
               "verdict": "No spurious features were configured; only task quality and layer comparisons were measured."}
    b = banner(summary, {"clean": clean}, "reports/plain/config.yaml")
    assert b["verdict"].startswith("Discovery found a shortcut") and "(n = 120)" in b["verdict"]
    sets = shlex.split(b["command"])[4::2]  # the command's --set values load as a valid config
    assert load_config(None, sets).finetune.augmentation.counterfactual_rate == 0.5
    lead = lead_sentence(summary)
    assert "discovery found 1 shortcut" in lead and "only task quality" not in lead  # leads with what was found
    from probe.analyses.verdict import headline_verdict

    assert headline_verdict([], summary["verdict"], [found]) == lead  # summary.json's verdict says the same
    assert headline_verdict([], summary["verdict"], None) == summary["verdict"]  # discovery did not run


def test_validation_test_gap_is_explained_by_the_planted_class():
    from probe.analyses.class_report import class_report
    from probe.report.quality import gap_sentence

    y = [0] * 92 + [1] * 100
    rep = class_report(y, [0] + [1] * 91 + [1] * 100, ["business", "politics"], n_boot=50)
    summary = {"task": {"final_validation_accuracy": 0.985, "n_validation": 200, "n_test": 192},
               "task_accuracy": {"value": 0.53},
               "features": [{"token": "zebra", "target_class": "business", "train_rate_in_class": 1.0,
                             "train_rate_outside": 0.0}]}
    text = gap_sentence(summary, rep, 0.05)
    assert "validation examples carry the planted token" in text and "business recall is 0.01 (1 of 92)" in text
    summary["task_accuracy"]["value"] = 0.97
    assert gap_sentence(summary, rep, 0.05) == ""


def test_comparison_next_step_is_the_cheapest_variant_that_removed_the_shortcut(tmp_path):
    import yaml

    from probe.report.comparison_page import next_step

    paths = []
    for name, rate, lr in (("full", 0.0, 5e-5), ("cf", 0.5, 5e-5), ("cf-slow", 0.5, 1e-5), ("lora", 0.0, 5e-4)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(
            {"name": name, "output_dir": "reports", "finetune": {"learning_rate": lr,
                                                                 "augmentation": {"counterfactual_rate": rate}}}))
        paths.append(str(tmp_path / name))
    df = pd.DataFrame({"variant": ["full", "cf", "cf-slow", "lora"], "path": paths,
                       "clean_accuracy": [0.75, 0.93, 0.90, 0.77], "reliance_gap": [0.87, 0.02, 0.01, 0.93],
                       "reliance_gap_ci_low": [0.8, 0.0, 0.0, 0.9], "reliance_gap_ci_high": [0.9, 0.04, 0.03, 0.96]})
    step = next_step(df, ["relies", "none", "none", "relies"])
    assert step["best"] == 1 and "cf removed the shortcut" in step["sentence"]
    assert step["command"].endswith("--set finetune.augmentation.counterfactual_rate=0.5")
    assert "learning_rate" not in step["command"]
    assert next_step(df, ["relies", "relies", "inconclusive", "relies"])["command"] == ""


def test_page_sentence_and_table_state_the_same_erasure_rule(tmp_path, tiny_run):
    """The page-level regression of issue #28: the verdict card's causal sentence, made from the erasure table
    the page shows, names the rule the table's note prints and the very number the table shows."""
    import html as html_lib
    import shutil

    from probe.analyses.verdict import erasure_rule
    from probe.report.render import render_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run, ignore=shutil.ignore_patterns("models", "cache"))
    _erasure_rows((0.091, 0.045, 0.136)).assign(seed=0, model="finetuned", rank=1).to_csv(
        run / "tables" / "erasure.csv", index=False)
    page = html_lib.unescape(render_report(run).read_text())
    rule = erasure_rule(0.05)
    card = page[page.index('id="verdict-token-zebra"'):page.index('id="shortcuts-found"') if 'id="shortcuts-found"'
                in page else page.index('id="task-quality"')]
    assert rule in card and "meets the rule at no layer" in card and "+0.091 [+0.045, +0.136] at layer 0" in card
    grid = page[page.index('id="table-erasure-difference"'):]
    assert "+0.091" in grid[:grid.index("</table>")] and f"Rule of the causal sentence: {rule}." in grid


def test_figure_takeaways_survive_missing_values():
    import numpy as np

    from probe.report import takeaways

    cka = pd.DataFrame({"metric": ["linear_cka"] * 2, "layer": [0, 1], "value": [np.nan, np.nan],
                        "ci_low": np.nan, "ci_high": np.nan})
    assert takeaways.cka(cka).startswith("CKA between")
    matrix = pd.DataFrame({"metric": "linear_cka", "layer_pre": [0, 0, 1, 1], "layer_fine": [0, 1, 0, 1],
                           "value": [np.nan, 0.2, np.nan, 0.9]})
    assert takeaways.cka_matrix(matrix) == ("Each fine-tuned layer is most similar to the pretrained layer of the same "
                                            "depth at 1 of 1 layers (1).")
