"""probe compare: fake run directories with planted numbers -> the right row values, Pareto set,
headline sentence, a self-contained escaped HTML page, and a CLI that refuses bad input in one line."""

from __future__ import annotations

import json
import math
from html import escape as html_escape
import re
import subprocess
import sys

import pandas as pd
import pytest

import probe
from probe.cli import main
from probe.comparison import COLUMNS, compare, pareto_optimal
from probe.report.comparison_page import headline, write_comparison
from probe.errors import ProbeError

FEATURE = "token:zebra"
METRICS = ("clean_accuracy", "conflicting_accuracy", "s_only_error", "flip_rate", "reliance_gap")


def _behaviour_rows(seed, numbers: dict) -> list[dict]:
    """``numbers``: metric -> (value, lo, hi); clean_accuracy goes to property 'task' (and, as a decoy
    with a different value, to the feature too, as real runs have)."""
    rows = []
    for metric, (v, lo, hi) in numbers.items():
        prop = "task" if metric == "clean_accuracy" else FEATURE
        rows.append({"seed": seed, "model": "finetuned", "layer": None, "property": prop, "metric": metric,
                     "n": 100, "value": v, "ci_low": lo, "ci_high": hi})
    v = numbers["clean_accuracy"]
    rows.append({"seed": seed, "model": "finetuned", "layer": None, "property": FEATURE, "metric": "clean_accuracy",
                 "n": 100, "value": v[0] - 0.5, "ci_low": 0.0, "ci_high": 0.01})
    rows.append({"seed": seed, "model": "finetuned", "layer": None, "property": FEATURE, "metric": "aligned_accuracy",
                 "n": 20, "value": 0.99, "ci_low": 0.9, "ci_high": 1.0})
    return rows


def _attribution_rows(seed, share: tuple[float, float, float]) -> list[dict]:
    rows = []
    for model in ("pretrained", "finetuned"):
        for method in ("integrated_gradients", "saliency"):
            for part in ("conflicting", "aligned"):
                hit = (model, method, part) == ("finetuned", "integrated_gradients", "conflicting")
                v, lo, hi = share if hit else (0.01, 0.0, 0.02)
                rows.append({"seed": seed, "model": model, "layer": None, "property": FEATURE,
                             "metric": "spurious_attribution_share", "partition": part, "method": method,
                             "n": 12, "value": v, "ci_low": lo, "ci_high": hi})
    rows.append({"seed": seed, "model": "finetuned", "layer": None, "property": "task",
                 "metric": "comprehensiveness_aopc", "partition": "conflicting", "method": "integrated_gradients",
                 "n": 12, "value": 0.5, "ci_low": 0.4, "ci_high": 0.6})
    return rows


def _cka_rows(seed, top: tuple[float, float, float], layers: int = 3) -> list[dict]:
    rows = []
    for layer in range(layers):
        v = top if layer == layers - 1 else (0.99, 0.98, 1.0)
        rows.append({"seed": seed, "model": "pretrained-vs-finetuned", "layer": layer, "property": "representation",
                     "metric": "linear_cka", "value": v[0], "ci_low": v[1], "ci_high": v[2]})
        rows.append({"seed": seed, "model": "pretrained-vs-finetuned", "layer": layer, "property": "representation",
                     "metric": "debiased_linear_cka", "value": 0.123, "ci_low": 0.1, "ci_high": 0.2})
    return rows


def make_run(path, *, name, seeds, behaviour, attribution=None, cka=None, status="complete", training=None,
             collapsed=(), strategy=None, training_json=None):
    """A fake run directory. ``behaviour`` / ``attribution`` / ``cka``: lists of rows."""
    (path / "tables").mkdir(parents=True)
    summary = {"status": status, "name": name, "features": [{"name": FEATURE, "token": "zebra"}],
               "seeds": list(seeds),
               "per_seed": [{"seed": s, "clean_accuracy": 0.5, "collapsed": s in collapsed} for s in seeds]}
    if training is not None:
        summary["training"] = training
    (path / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame(behaviour).to_csv(path / "tables" / "behaviour.csv", index=False)
    if attribution is not None:
        pd.DataFrame(attribution).to_csv(path / "tables" / "attribution.csv", index=False)
    if cka is not None:
        pd.DataFrame(cka).to_csv(path / "tables" / "cka.csv", index=False)
    if strategy is not None:
        (path / "config.yaml").write_text(f"name: {name}\nfinetune:\n  epochs: 1\n  strategy: {strategy}\n")
    for sub, seconds in (training_json or {}).items():
        (path / "models" / sub).mkdir(parents=True)
        (path / "models" / sub / "training.json").write_text(json.dumps({"seconds": seconds, "epochs": []}))
    return path


FULL_ALL = {"clean_accuracy": (0.90, 0.85, 0.95), "conflicting_accuracy": (0.30, 0.20, 0.40),
            "s_only_error": (0.60, 0.50, 0.70), "flip_rate": (0.65, 0.55, 0.75), "reliance_gap": (0.55, 0.45, 0.65)}
LORA = {"clean_accuracy": (0.85, 0.80, 0.90), "conflicting_accuracy": (0.80, 0.75, 0.85),
        "s_only_error": (0.05, 0.02, 0.08), "flip_rate": (0.07, 0.04, 0.10), "reliance_gap": (0.05, 0.02, 0.08)}
PROBE = {"clean_accuracy": (0.60, 0.55, 0.65), "conflicting_accuracy": (0.55, 0.50, 0.60),
         "s_only_error": (0.03, 0.01, 0.05), "flip_rate": (0.02, 0.0, 0.04), "reliance_gap": (0.02, 0.0, 0.04)}
DECOY = {m: (0.111, 0.1, 0.12) for m in METRICS}  # per-seed rows of the multi-seed run: must not be used


@pytest.fixture
def runs(tmp_path):
    seeds = [0, 1, 2]
    full = make_run(
        tmp_path / "runs" / "full-run", name="full", seeds=seeds, collapsed={2},
        behaviour=sum((_behaviour_rows(s, DECOY) for s in seeds), []) + _behaviour_rows("all", FULL_ALL),
        attribution=sum((_attribution_rows(s, (0.111, 0.1, 0.12)) for s in seeds), [])
        + _attribution_rows("all", (0.70, 0.60, 0.80)),
        cka=sum((_cka_rows(s, (0.111, 0.1, 0.12)) for s in seeds), []) + _cka_rows("all", (0.80, 0.75, 0.85)),
        training={"trainable_parameters": 1000, "total_parameters": 10000, "seconds": 12.5, "strategy": "full"},
        training_json={"finetuned-seed0": 99.0})
    lora = make_run(
        tmp_path / "runs" / "lora-run", name="lora", seeds=[0], behaviour=_behaviour_rows(0, LORA),
        attribution=_attribution_rows(0, (0.20, 0.15, 0.25)), strategy="lora",
        training_json={"finetuned": 3.0})
    lp = make_run(tmp_path / "runs" / "lp-run", name="linear_probe", seeds=[0], behaviour=_behaviour_rows(0, PROBE),
                  cka=_cka_rows(0, (0.95, 0.9, 1.0), layers=5), strategy="linear_probe")
    return full, lora, lp


def test_values_are_the_planted_numbers(runs):
    full, lora, lp = runs
    df = compare(runs)
    assert list(df.columns) == COLUMNS
    assert list(df.variant) == ["full", "lora", "linear_probe"]
    assert list(df.path) == [str(full), str(lora), str(lp)]
    assert list(df.strategy) == ["full", "lora", "linear_probe"]
    assert list(df.feature) == [FEATURE] * 3
    assert list(df.seeds) == [3, 1, 1]
    assert list(df.collapsed_seeds) == [1, 0, 0]
    for row, numbers in zip(df.itertuples(), (FULL_ALL, LORA, PROBE)):
        for m, (v, lo, hi) in numbers.items():
            got = (getattr(row, m), getattr(row, f"{m}_ci_low"), getattr(row, f"{m}_ci_high"))
            assert got == pytest.approx((v, lo, hi)), (row.variant, m)
    # the multi-seed run: the seed == "all" rows, never the per-seed decoys (0.111)
    assert not (df.loc[0, [c for c in COLUMNS[6:] if "training" not in c and "parameters" not in c]] == 0.111).any()
    # attribution: fine-tuned, integrated gradients, conflicting partition
    assert df.loc[0, ["spurious_attribution_share", "spurious_attribution_share_ci_low",
                      "spurious_attribution_share_ci_high"]].tolist() == pytest.approx([0.70, 0.60, 0.80])
    assert df.loc[1, "spurious_attribution_share"] == pytest.approx(0.20)
    # CKA drift: 1 - linear CKA of the largest layer, interval flipped
    assert df.loc[0, ["top_layer_cka_drift", "top_layer_cka_drift_ci_low",
                      "top_layer_cka_drift_ci_high"]].tolist() == pytest.approx([0.20, 0.15, 0.25])
    assert df.loc[2, "top_layer_cka_drift"] == pytest.approx(0.05)
    # costs: summary["training"] first, else training.json seconds, else NaN
    assert df.loc[0, ["trainable_parameters", "total_parameters", "training_seconds"]].tolist() == [1000, 10000, 12.5]
    assert df.loc[1, "training_seconds"] == pytest.approx(3.0)
    assert math.isnan(df.loc[1, "trainable_parameters"]) and math.isnan(df.loc[2, "training_seconds"])


def test_missing_analyses_are_nan(runs):
    df = compare(runs).set_index("variant")
    assert math.isnan(df.loc["linear_probe", "spurious_attribution_share"])
    assert math.isnan(df.loc["linear_probe", "spurious_attribution_share_ci_high"])
    assert math.isnan(df.loc["lora", "top_layer_cka_drift"])
    assert not math.isnan(df.loc["full", "top_layer_cka_drift"])


def test_names_and_module_is_callable(runs, tmp_path):
    df = compare(runs, names=["a", "b", "c"])
    assert list(df.variant) == ["a", "b", "c"]
    with pytest.raises(ProbeError, match="2 names for 3 run directories"):
        compare(runs, names=["a", "b"])
    with pytest.raises(ProbeError, match="'a' is given twice"):
        compare(runs, names=["a", "b", "a"])
    # two runs with the same summary name fall back to their folder names
    twin = make_run(tmp_path / "elsewhere" / "twin", name="lora", seeds=[0], behaviour=_behaviour_rows(0, LORA))
    assert list(compare([runs[1], twin]).variant) == ["lora-run", "twin"]
    # the public name is the function
    pd.testing.assert_frame_equal(probe.compare([runs[0]]), compare([runs[0]]))


def test_refuses_incomplete_or_foreign_directories(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbeError, match="no summary.json") as e:
        compare([runs[0], tmp_path / "empty"])
    assert str(tmp_path / "empty") in str(e.value) and "\n" not in str(e.value)
    running = make_run(tmp_path / "running", name="r", seeds=[0], behaviour=_behaviour_rows(0, LORA), status="running")
    with pytest.raises(ProbeError, match=r"is not complete \(status 'running'\)"):
        compare([running])
    with pytest.raises(ProbeError, match="does not exist"):
        compare([tmp_path / "nope"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    with pytest.raises(ProbeError, match="not valid JSON"):
        compare([tmp_path / "bad"])
    with pytest.raises(ProbeError, match="at least one"):
        compare([])


def test_pareto_on_known_example():
    df = pd.DataFrame({"variant": list("abcdef"),
                       "clean_accuracy": [0.90, 0.85, 0.60, 0.90, 0.70, float("nan")],
                       "conflicting_accuracy": [0.30, 0.80, 0.55, 0.20, 0.80, 0.99]})
    # a: best clean (ties d on clean, beats it on conflicting); b: best conflicting at the highest clean
    # among those; c dominated by b; d dominated by a; e ties b on conflicting with less clean; f has NaN
    assert pareto_optimal(df).tolist() == [True, True, False, False, False, False]
    dup = pd.DataFrame({"clean_accuracy": [0.5, 0.5], "conflicting_accuracy": [0.4, 0.4]})
    assert pareto_optimal(dup).tolist() == [True, True]  # equal points do not dominate each other


def test_headline_names_smallest_gap_and_cost(runs, tmp_path):
    df = compare(runs)
    s = headline(df)
    assert s.startswith("linear_probe has the smallest reliance gap, 0.02 [0.00, 0.04]")
    assert "0.30 lower than that of full" in s
    # a variant whose every seed collapsed is not the answer, and is named as left out
    dead = make_run(tmp_path / "dead", name="dead", seeds=[0], collapsed={0},
                    behaviour=_behaviour_rows(0, {**PROBE, "reliance_gap": (0.0, 0.0, 0.0)}))
    s2 = headline(compare([*runs, dead]))
    assert s2.startswith("linear_probe has") and "dead left out" in s2
    # equal gaps: the variant with the higher clean accuracy is named
    twin = make_run(tmp_path / "bitfit", name="bitfit", seeds=[0],
                    behaviour=_behaviour_rows(0, {**PROBE, "clean_accuracy": (0.88, 0.84, 0.92)}))
    assert headline(compare([*runs, twin])).startswith("bitfit has the smallest reliance gap")
    assert headline(compare([twin, *runs])).startswith("bitfit has the smallest reliance gap")
    # without a variant called "full" the first row is the reference
    s3 = headline(compare(runs[1:]))
    assert "lora (the first variant)" in s3 and "0.25 lower than that of lora" in s3


def test_write_comparison_self_contained_and_escaped(runs, tmp_path):
    df = compare(runs, names=["full", "<script>x</script>", "lp & co"])
    out = write_comparison(df, tmp_path / "cmp")
    assert out == tmp_path / "cmp" / "comparison.html" and out.is_file()
    html = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<link" not in html.lower() and "@import" not in html
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert html.lower().count("<script") == 1  # only the sort script
    assert "lp &amp; co" in html
    assert html.count('src="data:image/svg+xml;base64,') == 1
    assert '0.550<span class="ci">0.450 – 0.650</span>' in html  # full's reliance gap cell
    assert "1,000 (10 %)" in html
    assert html_escape(headline(df), quote=False) in html  # the sentence is on the page, escaped
    assert len(re.findall(r'<tr id="variant-[a-z0-9-]+" class="pareto">', html)) == 2  # full and the lora row
    back = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert list(back.columns) == COLUMNS and back.variant.tolist() == df.variant.tolist()
    assert back.reliance_gap.tolist() == pytest.approx(df.reliance_gap.tolist())
    assert not list((tmp_path / "cmp").glob(".*.tmp"))


def test_cli_writes_and_prints(runs, capsys):
    assert main(["compare", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    default = runs[0].parent / "comparison" / "comparison.html"
    assert default.is_file() and f"comparison: {default}" in out
    assert "linear_probe" in out and "0.550 [0.450, 0.650]" in out
    assert main(["compare", str(runs[1]), str(runs[2]), "--names", "x,y", "--out", str(runs[0].parent / "o")]) == 0
    assert pd.read_csv(runs[0].parent / "o" / "comparison.csv").variant.tolist() == ["x", "y"]


@pytest.mark.parametrize("case", ["not_a_run", "incomplete", "names"])
def test_cli_bad_input_one_line(runs, tmp_path, capsys, case):
    if case == "not_a_run":
        (tmp_path / "plain").mkdir()
        args, message = [str(runs[0]), str(tmp_path / "plain")], "has no summary.json"
    elif case == "incomplete":
        bad = make_run(tmp_path / "half", name="half", seeds=[0], behaviour=_behaviour_rows(0, LORA), status="running")
        args, message = [str(bad)], "is not complete"
    else:
        args, message = [str(runs[0]), "--names", "a,b"], "2 names for 1 run directory;"
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("probe: error: ") and message in err[0]
    assert not (tmp_path / "comparison").exists()


def test_cli_subprocess_no_traceback(tmp_path):
    (tmp_path / "plain").mkdir()
    res = subprocess.run([sys.executable, "-m", "probe", "compare", str(tmp_path / "plain")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "plain") in res.stderr


def _prediction_run(path, name, clean_pred, inserted_pred, labels, seeds=(0,)):
    """A run directory with just what paired_differences reads: summary and tables/predictions.csv."""
    (path / "tables").mkdir(parents=True)
    summary = {"status": "complete", "name": name, "task": {"classes": ["a", "b", "c"]},
               "features": [{"name": FEATURE, "token": "zebra", "target_class": "a"}]}
    (path / "summary.json").write_text(json.dumps(summary))
    rows = []
    for s in seeds:
        for part, pred in (("clean", clean_pred), (FEATURE, inserted_pred)):
            rows += [{"seed": s, "partition": part, "example": i, "label": y, "prediction": p}
                     for i, (y, p) in enumerate(zip(labels, pred))]
    pd.DataFrame(rows).to_csv(path / "tables" / "predictions.csv", index=False)
    numbers = {m: (0.5, 0.4, 0.6) for m in METRICS}
    pd.DataFrame(_behaviour_rows(seeds[0], numbers)).to_csv(path / "tables" / "behaviour.csv", index=False)


def test_paired_differences_known_answer(tmp_path):
    from probe.comparison import paired_differences

    labels = [1, 2] * 50 + [0] * 20          # 100 conflicting examples (label != target 0), 20 aligned
    clean = list(labels)                      # both runs are right on every clean example
    # reference: 60 of the 100 conflicting examples flip to the target; variant: 20 do
    ref_ins = [0 if i < 60 else y for i, y in enumerate(labels[:100])] + [0] * 20
    var_ins = [0 if i < 20 else y for i, y in enumerate(labels[:100])] + [0] * 20
    _prediction_run(tmp_path / "ref", "ref", clean, ref_ins, labels)
    _prediction_run(tmp_path / "var", "var", clean, var_ins, labels)
    d = paired_differences([tmp_path / "ref", tmp_path / "var"], n_boot=500)
    get = d.set_index(["variant", "feature", "metric"])
    s_only = get.loc[("var", FEATURE, "s_only_error")]
    assert s_only.value == pytest.approx(0.2 - 0.6)
    assert s_only.ci_high < 0                 # a real difference: 40 paired examples changed, none the other way
    assert get.loc[("var", FEATURE, "flip_rate")].value == pytest.approx(-0.4)
    assert get.loc[("var", FEATURE, "flip_to_target")].value == pytest.approx(-0.4)
    assert get.loc[("var", FEATURE, "conflicting_accuracy")].value == pytest.approx(0.4)
    clean_row = get.loc[("var", "task", "clean_accuracy")]
    assert (clean_row.value, clean_row.ci_low, clean_row.ci_high) == (0.0, 0.0, 0.0)
    assert set(d.reference) == {"ref"} and "ref" not in set(d.variant)

    # a run with another test set is not paired
    _prediction_run(tmp_path / "other", "other", clean[:50], var_ins[:50], labels[:50])
    d2 = paired_differences([tmp_path / "ref", tmp_path / "other"], n_boot=100)
    assert d2.empty

    # the comparison page shows them, escaped, and writes the csv
    df = compare([tmp_path / "ref", tmp_path / "var"])
    out = write_comparison(df, tmp_path / "cmp", differences=d)
    html = out.read_text()
    assert "Paired differences" in html and "<strong>-0.400" in html
    assert (tmp_path / "cmp" / "comparison_differences.csv").is_file()


def test_default_out_dir_is_the_current_directory_when_runs_share_no_parent(tmp_path, monkeypatch):
    from probe.comparison import default_out_dir

    monkeypatch.chdir(tmp_path)
    assert default_out_dir(["/opt/runs/a", "/srv/other/b"]) == tmp_path / "comparison"
    assert default_out_dir([tmp_path / "runs" / "a", tmp_path / "runs" / "b"]) == tmp_path / "runs" / "comparison"
