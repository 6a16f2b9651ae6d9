"""End to end on tiny-bert: the run directory contract, resume, determinism and failure marking."""

import json
import shutil
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

import probe
from probe.errors import ProbeError
from tests.conftest import tiny_overrides


def _run(tmp_path, name="tiny", **more):
    over = tiny_overrides(tmp_path, name, **more)
    return probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})


def _tables(run):
    return {p.name: p.read_bytes() for p in sorted((run.path / "tables").glob("*.csv"))}


def test_run_directory_contract(tiny_run):
    d = tiny_run.path
    for name in ("index.html", "summary.json", "config.yaml", "timings.json",
                 "models/finetuned/model.safetensors", "models/finetuned/config.json"):
        assert (d / name).is_file(), name
    assert {"probing", "cka", "behaviour", "training"} <= set(tiny_run.tables)
    s = tiny_run.summary
    assert s["status"] == "complete"
    for key in ("task_accuracy", "aligned_accuracy", "conflicting_accuracy", "s_only_error", "flip_rate",
                "reliance_gap"):
        assert set(s[key]) == {"value", "ci_low", "ci_high"}, key
        assert s[key]["ci_low"] <= s[key]["value"] + 1e-9 <= s[key]["ci_high"] + 2e-9, key
    f = s["features"][0]
    assert f["name"] == "token:zebra" and f["verdict_status"] in {"relies", "none", "inconclusive"}
    assert f["verdict"]
    timings = json.loads((d / "timings.json").read_text())
    assert {"data", "finetune", "extract", "analyses", "report", "total"} <= set(timings)
    assert list(d.glob("cache/activations-*.npz"))


def test_tables_are_tidy(tiny_run):
    n_layers = 3  # tiny-bert: embeddings + 2 blocks
    probing = tiny_run.table("probing")
    assert list(probing.columns) == ["seed", "model", "layer", "property", "metric", "value", "ci_low", "ci_high"]
    assert {"task", "token:zebra", "length_bucket"} <= set(probing.property)
    per_model = probing[probing.model.isin(["pretrained", "finetuned"])]
    assert set(per_model.metric) == {"accuracy", "majority_baseline", "control_accuracy", "selectivity", "probe_C"}
    n_props = probing.property.nunique()
    assert len(per_model) == 2 * n_layers * n_props * 5
    diff = probing[probing.metric == "accuracy_difference"]
    assert len(diff) == n_layers * n_props and set(diff.model) == {"finetuned-minus-pretrained"}
    sel = per_model[per_model.metric == "selectivity"].set_index(["model", "layer", "property"]).value
    acc = per_model[per_model.metric == "accuracy"].set_index(["model", "layer", "property"]).value
    ctl = per_model[per_model.metric == "control_accuracy"].set_index(["model", "layer", "property"]).value
    assert ((acc - ctl - sel).abs() < 1e-9).all()
    cka = tiny_run.table("cka")
    assert set(cka.metric) == {"linear_cka", "debiased_linear_cka"}
    assert sorted(cka[cka.metric == "linear_cka"].layer) == list(range(n_layers))
    matrix = tiny_run.table("cka_matrix")
    assert len(matrix) == 2 * n_layers * n_layers
    mdl = tiny_run.table("mdl")
    assert {"codelength_bits", "compression", "control_codelength_bits", "relative_extractability"} <= set(mdl.metric)
    behaviour = tiny_run.table("behaviour")
    assert {"clean_accuracy", "conflicting_accuracy", "s_only_error", "flip_rate", "reliance_gap",
            "change_rate"} <= set(behaviour.metric)
    attribution = tiny_run.table("attribution")
    assert set(attribution.model) == {"pretrained", "finetuned"}
    assert {"integrated_gradients", "saliency", "input_x_gradient", "occlusion"} <= set(attribution.method)
    assert {"spurious_attribution_share", "spurious_top1_rate", "comprehensiveness_aopc"} <= set(attribution.metric)
    assert set(attribution.partition) == {"clean", "conflicting", "aligned"}
    words = tiny_run.table("attribution_words")
    assert {"word", "score", "selection"} <= set(words.columns) and (words.word == "zebra").any()


def test_load_run_api(tiny_run):
    again = probe.load_run(tiny_run.path)
    assert again.summary == tiny_run.summary and again.complete
    assert isinstance(again.table("cka"), pd.DataFrame)
    with pytest.raises(ProbeError, match="has no table 'nope'; it has: attribution, attribution_words, behaviour, budgets, cka, cka_matrix, mdl, "):
        again.table("nope")
    with pytest.raises(ProbeError, match="not a probe run directory"):
        probe.load_run(tiny_run.path / "tables")


def test_report_rerenders_from_tables(tiny_run):
    from probe.report.render import render_report

    html_path = tiny_run.path / "index.html"
    html_path.unlink()
    render_report(tiny_run.path)
    html = html_path.read_text()
    assert tiny_run.summary["features"][0]["verdict"].split(".")[0].replace('"', "&#34;") in html
    assert html.count("data:image/svg+xml;base64,") >= 3


def test_interrupted_run_resumes_and_reproduces(tmp_path):
    first = _run(tmp_path)
    tables = _tables(first)
    assert first.summary["reused_stages"] == []
    # as if killed (SIGKILL) after fine-tuning: only the checkpoint and the "running" summary survive
    for name in ("cache", "tables"):
        shutil.rmtree(first.path / name)
    for name in ("index.html", "timings.json"):
        (first.path / name).unlink()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (first.path / "summary.json").write_text(json.dumps({"status": "running", "pid": gone.pid,
                                                         "host": socket.gethostname(), "started": time.time()}))
    assert probe.load_run(first.path).status == "interrupted"
    second = _run(tmp_path)
    assert second.summary["reused_stages"] == ["finetune"]
    assert _tables(second) == tables
    third = _run(tmp_path)
    assert sorted(third.summary["reused_stages"]) == ["extract:finetuned", "extract:pretrained", "finetune"]
    assert _tables(third) == tables
    # a changed fine-tuning config is not served from the old checkpoint
    fourth = _run(tmp_path, **{"finetune.learning_rate": 1e-4})
    assert "finetune" not in fourth.summary["reused_stages"]


def test_two_fresh_runs_write_identical_tables(tmp_path, tiny_run):
    other = _run(tmp_path, name="again")
    assert _tables(other) == _tables(tiny_run)


def test_failed_run_is_marked_failed(tmp_path, monkeypatch):
    import probe.representations.extract as extract

    def boom(*a, **k):
        raise RuntimeError("simulated crash during extraction")

    monkeypatch.setattr(extract, "extract_pooled", boom)
    with pytest.raises(RuntimeError):
        _run(tmp_path, name="crash")
    summary = json.loads((tmp_path / "crash" / "summary.json").read_text())
    assert summary["status"] == "failed" and "simulated crash" in summary["error"]
    assert not (tmp_path / "crash" / "index.html").exists()
    with pytest.raises(ProbeError, match="is not complete"):
        from probe.report.render import render_report

        render_report(tmp_path / "crash")


def test_seeds_keep_per_seed_rows_and_add_the_aggregate(tmp_path):
    run = _run(tmp_path, name="seeds", seeds=[0, 1], **{"analyses.attribution": False, "analyses.mdl": False})
    assert (run.path / "models" / "finetuned-seed0").is_dir() and (run.path / "models" / "finetuned-seed1").is_dir()
    behaviour = run.table("behaviour")
    assert set(behaviour.seed.astype(str)) == {"0", "1", "all"}
    gap = behaviour[(behaviour.metric == "reliance_gap") & (behaviour.property == "token:zebra")].set_index("seed")
    per_seed = gap.loc[["0", "1"], "value"].astype(float)
    assert gap.loc["all", "value"] == pytest.approx(per_seed.mean())
    assert gap.loc["all", "ci_low"] <= gap.loc["all", "value"] <= gap.loc["all", "ci_high"]
    f = run.summary["features"][0]
    assert f["reliance_gap"]["value"] == pytest.approx(per_seed.mean())
    assert [p["seed"] for p in run.summary["per_seed"]] == [0, 1]
    probing = run.table("probing")
    assert set(probing.seed.astype(str)) == {"0", "1", "all"}
    assert "finetune:seed0" not in run.summary["reused_stages"]
