"""The report is self-contained and renders untrusted dataset text inert."""

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
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]+)"', html))
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
        assert figures.probing_figure(probing).startswith("data:image/png;base64,")
        assert figures.mdl_figure(mdl).startswith("data:image/png;base64,")
        behaviour = pd.DataFrame([r for r in rows(name, ["clean_accuracy", "conflicting_accuracy"], layers=(None,))
                                  if r["model"] == "finetuned"])
        assert figures.behaviour_figure(behaviour, name).startswith("data:image/png;base64,")
        erasure = pd.DataFrame([r for cond in ("none", "erased", "random")
                                for r in rows(name, ["conflicting_accuracy", "clean_accuracy"], concept="position",
                                              method="leace", condition=cond,
                                              layers=(None,) if cond == "none" else (0, 1))
                                if r["model"] == "finetuned"])
        assert figures.erasure_figure(erasure, name).startswith("data:image/png;base64,")
        ablation = pd.DataFrame([r for i in ("none", "swap_pretrained")
                                 for r in rows(name, ["clean_accuracy"], intervention=i) if r["model"] == "finetuned"])
        assert figures.ablation_figure(ablation, name).startswith("data:image/png;base64,")


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
    assert got == [("token:zebra", "planted", "relies", "#verdict-token-zebra"),
                   ("<b>ok</b> → sport", "discovered word", "relies", "#shortcuts-found"),
                   ("goal → sport", "discovered word", "used, plausibly task-relevant", "#shortcuts-found"),
                   ("lowercase", "invariance edit", "relies", "#invariance"),
                   ("add url", "invariance edit", "no reliance", "#invariance"),
                   ("add mention", "invariance edit", "inconclusive", "#invariance"),
                   ("append neutral sentence", "invariance edit", "inconclusive", "#invariance"),
                   ("length bucket", "natural property", "correlational only", "#probing")]
    assert rows[0]["value"] == "0.40" and rows[0]["ci"] == "0.30 – 0.50"
    assert rows[-1]["value"] == "-0.20" and rows[-1]["note"] == "largest at layer 1"  # the largest in size
    assert rows[1]["note"] == "q = 0.001"


def test_report_page_structure(tmp_path, tiny_run):
    """Scorecard before the verdicts; every contents link has its section; discovered shortcuts join the
    scorecard and get their section; long tables start collapsed and link their CSV; a glossary."""
    import json
    import shutil

    from probe.report.render import SECTIONS, render_report

    html = (tiny_run.path / "index.html").read_text()
    toc = re.findall(r'<li><a href="#([a-z-]+)">', html)
    assert toc[:3] == ["scorecard", "verdicts", "task-quality"] and toc[-2:] == ["config", "glossary"]
    assert all(f'id="{t}"' in html for t in toc) and set(toc) <= set(SECTIONS)
    assert html.index('id="scorecard"') < html.index('id="verdicts"') < html.index('id="task-quality"')
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
