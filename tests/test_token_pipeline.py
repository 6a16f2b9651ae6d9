"""Token classification end to end on tiny-bert (issue 8): the run directory contract for taggers,
tables that agree with a recomputation from the saved model, the report, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
import pytest

import probe

TOKEN_RUN = {
    "task.type": "token-classification", "task.dataset": "wnut16", "task.max_length": 48,
    "task.train_size": 400, "task.validation_size": 50, "task.test_size": 150,
    "spurious": [{"token": "zebra", "target_class": "person", "rate_in_class": 1.0, "rate_outside": 0.0}],
    "model.backbone": "tiny-bert", "finetune.epochs": 2, "finetune.learning_rate": 2e-3, "finetune.batch_size": 16,
    "analyses.bootstrap_samples": 200, "analyses.attribution_examples": 4, "analyses.ig_steps": 8,
    "analyses.max_probe_words": 1500, "analyses.attribution_methods": ["integrated_gradients", "saliency"],
    "causal.layers": [0, 2], "causal.concepts": ["position"],
}


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("token-runs")
    over = {**TOKEN_RUN, "output_dir": str(out), "name": "tagger"}
    return probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})


def test_tagger_run_directory_contract(token_run):
    d = token_run.path
    for name in ("index.html", "summary.json", "config.yaml", "timings.json", "models/finetuned/config.json"):
        assert (d / name).is_file(), name
    assert {"entities", "behaviour", "probing", "cka", "attribution", "attribution_words", "erasure"} <= set(
        token_run.tables)
    s = token_run.summary
    assert s["status"] == "complete" and s["task"]["type"] == "token-classification"
    assert s["task_metric"] == "entity F1"
    f = s["features"][0]
    assert f["target_class"] == "person" and f["verdict_status"] in {"relies", "none", "inconclusive"}
    assert f["train_rate_in_class"] == 1.0 and f["train_rate_outside"] == 0.0
    assert f["n_pairs"]["aligned"] > 0 and f["n_pairs"]["conflicting"] > 0
    config = json.loads((d / "models" / "finetuned" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert config["id2label"]["0"] == "O" and len(config["id2label"]) == 21  # O + B/I of 10 types


def test_entity_f1_matches_a_recomputation_from_the_saved_tagger(token_run):
    """The headline F1 is seqeval's on the clean test split, with the model as saved."""
    from seqeval.metrics import f1_score

    from probe.config import load_config
    from probe.models.backbones import load_tokenizer
    from probe.models.strategies import load_trained
    from probe.tasks.tokens.data import build_token_task_data
    from probe.tasks.tokens.objective import decode_tags, predict_word_tags

    config = load_config(token_run.path / "config.yaml")
    data = build_token_task_data(config)
    model = load_trained(token_run.path / "models" / "finetuned", "tiny-bert", data.tags, config.finetune,
                         task_type="token-classification")
    pred = predict_word_tags(model, load_tokenizer("tiny-bert"), [s.words for s in data.test], 48, 32,
                             torch.device("cpu"))
    expected = f1_score([s.tags for s in data.test], decode_tags(pred, data.tags))
    assert token_run.summary["task_accuracy"]["value"] == pytest.approx(expected, abs=1e-9)


def test_word_probes_and_behaviour_tables(token_run):
    probing = token_run.table("probing")
    props = set(probing.property.dropna())
    assert {"entity_type", "token:zebra", "capitalised"} <= props
    per_model = probing[probing.model.isin(["pretrained", "finetuned"])]
    assert {"accuracy", "majority_baseline", "control_accuracy", "selectivity"} <= set(per_model.metric)
    sel = per_model[per_model.metric == "selectivity"].set_index(["model", "layer", "property"]).value
    acc = per_model[per_model.metric == "accuracy"].set_index(["model", "layer", "property"]).value
    ctl = per_model[per_model.metric == "control_accuracy"].set_index(["model", "layer", "property"]).value
    assert ((acc - ctl - sel).dropna().abs() < 1e-9).all()
    # "follows the marker" is read from the word itself at layer 0 only through its identity: the word after
    # zebra is a person in the aligned pairs, so nothing forces it; but the label must vary and be probed
    cue = per_model[(per_model.property == "token:zebra") & (per_model.metric == "accuracy")]
    assert len(cue) == 2 * 3  # two models x (embeddings + 2 blocks)
    b = token_run.table("behaviour")
    names = set(b.metric)
    assert {"s_only_error", "flip_rate", "reliance_gap", "no_entity_rate", "no_entity_rate_before"} <= names
    assert ((b.ci_low <= b.value + 1e-9) & (b.value <= b.ci_high + 1e-9)).all()
    erasure = token_run.table("erasure")
    assert set(erasure.condition.dropna()) >= {"none", "erased", "random", "difference"}
    assert set(erasure.layer.dropna().astype(int)) == {0, 2}


def test_tagger_report_reads_as_a_tagger_report(token_run):
    html = (token_run.path / "index.html").read_text()
    assert "Entity-level F1" in html and "entity-span accuracy" in html
    assert "Span-level behaviour" in html
    assert "<script" not in html.split("</style>")[1].split("<script>")[0]  # data never injects markup


def test_token_task_errors_are_one_line(tmp_path):
    cmd = [sys.executable, "-m", "probe", "run", "--set", "task.type=token-classification", "--set",
           "task.dataset=wnut16", "--set", "model.backbone=tiny-bert", "--set", f"output_dir={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "spurious.0.target_class" in err[0] and "person" in err[0], out.stderr[-500:]
    assert "Traceback" not in out.stderr
    # a token dataset under text classification says which task type to choose
    cmd = [sys.executable, "-m", "probe", "run", "--set", "task.dataset=wnut16", "--set",
           "model.backbone=tiny-bert", "--set", f"output_dir={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "task.type: token-classification" in out.stderr
    assert not (tmp_path / "default" / "index.html").exists()


def test_marker_rates_and_pairs_follow_the_config(tmp_path):
    """The control condition (equal rates) plants the marker before every type alike."""
    from probe.config import load_config
    from probe.tasks.tokens.data import build_token_task_data

    over = {**TOKEN_RUN, "output_dir": str(tmp_path)}
    over["spurious"] = [{"token": "zebra", "target_class": "person", "rate_in_class": 0.5, "rate_outside": 0.5}]
    data = build_token_task_data(load_config(None, over))
    p = data.planted[0]
    assert abs(p.train_rate_in_class - 0.5) < 0.15 and abs(p.train_rate_outside - 0.5) < 0.1
    kinds = p.kinds()
    assert set(np.unique(kinds)) == {"aligned", "conflicting", "no_entity"}


def test_span_predictions_reproduce_the_behaviour_table(token_run):
    """tables/predictions.csv (what probe compare pairs across runs) holds the same span predictions
    the behaviour metrics were computed from."""
    pred = token_run.table("predictions")
    types = token_run.summary["task"]["entity_types"]
    target = types.index("person")
    clean = pred[pred.partition == "clean"].set_index("example")
    ins = pred[pred.partition == "token:zebra"].set_index("example")
    assert len(clean) == len(ins) > 0 and (clean.label == ins.label).all()
    kept = (clean.prediction > -2) & (ins.prediction > -2)
    conflicting = kept & (clean.label != target)
    b = token_run.table("behaviour").set_index("metric").value
    assert (ins.prediction[conflicting] == target).mean() == pytest.approx(b["s_only_error"])
    assert (clean.prediction[kept] == clean.label[kept]).mean() == pytest.approx(b["clean_accuracy"])
    n_conf = token_run.summary["features"][0]["n_pairs"]["conflicting"]
    assert conflicting.sum() <= n_conf
