"""The pretraining stage inside a run (issue 7): its checkpoint is the "pretrained" model of every
later stage, it is cached by key, the artifact goes only into the pretraining corpus, and a sweep
of artifact vs twin writes paired differences."""

from __future__ import annotations

import numpy as np
import pandas as pd

import probe
from tests.conftest import tiny_overrides

PRETRAIN = {
    "pretrain.enabled": True, "pretrain.init": "scratch", "pretrain.steps": 15, "pretrain.batch_size": 8,
    "pretrain.max_length": 32, "pretrain.max_texts": 300,
    "pretrain.size": {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64},
    "pretrain.artifact": {"token": "zebra", "target_class": "business", "rate": 1.0, "count": 2},
    "spurious": [{"token": "zebra", "target_class": "business", "rate_in_class": 0.0, "rate_outside": 0.0}],
    "analyses.attribution": False, "analyses.invariance": False, "analyses.mdl": False,
}


def _run(tmp_path, name, **more):
    over = tiny_overrides(tmp_path, name, **{**PRETRAIN, **more})
    return probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})


def test_pretrained_checkpoint_feeds_the_run_and_is_reused(tmp_path):
    from transformers import AutoModel

    from probe.config import load_config
    from probe.tasks.sequence.data import build_task_data

    run = _run(tmp_path, "pre")
    s = run.summary
    p = s["pretraining"]
    assert p["final_loss"] < p["initial_loss"]
    assert p["steps"] == 15 and p["tokens_per_second"] > 0
    # the artifact went into every business text of the (sub-sampled) corpus and nowhere else
    cfg = load_config(run.path / "config.yaml")
    data = build_task_data(cfg)
    assert p["artifact"]["token"] == "zebra" and p["artifact"]["texts_with_token"] > 0
    assert p["artifact"]["texts_with_token"] < p["corpus_texts"]
    assert not any("zebra" in t.split() for t in data.train_texts + data.val_texts)  # fine-tuning data clean
    # the checkpoint is a plain encoder folder of the configured size
    enc = AutoModel.from_pretrained(run.path / "models" / "pretrained")
    assert enc.config.hidden_size == 32 and enc.config.num_hidden_layers == 2
    # and it is what the run compared against: the CKA table has its 3 layers
    assert sorted(run.table("cka").query("metric == 'linear_cka'").layer) == [0, 1, 2]
    assert "pretrain" in s["timings"]
    html = (run.path / "index.html").read_text()
    assert "The pretrained model was trained here" in html and 'Pretraining artifact: "zebra"' in html
    again = _run(tmp_path, "pre")
    assert "pretrain" in again.summary["reused_stages"]
    for name in ("behaviour", "probing"):
        pd.testing.assert_frame_equal(run.table(name), again.table(name))


def test_artifact_vs_twin_sweep_writes_paired_differences(tmp_path):
    over = tiny_overrides(tmp_path, "sweep", **PRETRAIN,
                          compare=[{"name": "artifact"}, {"name": "twin", "set": {"pretrain.artifact": None}}])
    sweep = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    assert [r.summary["pretraining"]["artifact"] is None for r in sweep.runs] == [False, True]
    # the twin pretrained as many steps on the same corpus texts, only without the token
    a, t = (r.summary["pretraining"] for r in sweep.runs)
    assert a["steps"] == t["steps"] and a["corpus_texts"] == t["corpus_texts"]
    diff = pd.read_csv(sweep.path / "comparison_differences.csv")
    assert set(diff.variant) == {"twin"} and set(diff.reference) == {"artifact"}
    assert {"s_only_error", "flip_rate", "conflicting_accuracy", "clean_accuracy"} <= set(diff.metric)
    assert np.all(diff.ci_low <= diff.value + 1e-12) and np.all(diff.value <= diff.ci_high + 1e-12)
    assert "Paired differences" in (sweep.path / "comparison.html").read_text()


def test_a_causal_lm_pretraining_stage_makes_a_decoder_the_run_diagnoses(tmp_path):
    """``pretrain.objective: clm``: a GPT-2 pretrained here from scratch becomes the reference, is fine-tuned
    as a decoder classifier (its last token pooled) and goes through the analyses like an encoder."""
    import json

    run = _run(tmp_path, "clm", **{"pretrain.objective": "clm", "pretrain.artifact": None, "causal.enabled": True,
                                   "causal.layers": [0, 2], "causal.head_ablation": False})
    p = run.summary["pretraining"]
    assert p["final_loss"] < p["initial_loss"]
    config = json.loads((run.path / "models" / "finetuned" / "config.json").read_text())
    assert config["architectures"] == ["GPT2ForSequenceClassification"] and config["pad_token_id"] == 0
    assert sorted(run.table("cka").query("metric == 'linear_cka'").layer) == [0, 1, 2]
    assert {"erasure", "ablation"} <= set(run.tables)
