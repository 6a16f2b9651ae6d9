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
    assert "<script" not in html.lower()
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
