"""``tracking: tensorboard`` writes event files that TensorBoard reads back: fine-tuning and pretraining
curves and the headline numbers; off by default."""

from __future__ import annotations

import json

import pytest

import probe
from tests.conftest import tiny_overrides

pytest.importorskip("tensorboard", reason="tracking: tensorboard needs the tensorboard package (the dev extra)")

FAST = {"analyses.probing": False, "analyses.similarity": False, "analyses.mdl": False,
        "analyses.attribution": False, "analyses.invariance": False,
        "pretrain.enabled": True, "pretrain.init": "scratch", "pretrain.steps": 12, "pretrain.batch_size": 8,
        "pretrain.max_length": 32, "pretrain.max_texts": 200,
        "pretrain.size": {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64},
        "finetune.epochs": 2}


def _scalars(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc, {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_curves_and_headline_read_back(tmp_path):
    over = tiny_overrides(tmp_path, "tb", tracking="tensorboard", **FAST)
    run = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    tb = run.path / "tensorboard"
    summary = run.summary
    log = json.loads((run.path / "models" / "finetuned" / "training.json").read_text())

    _, ft = _scalars(tb / "finetune" / "seed0")
    steps = sum(len(e["steps"]["loss"]) for e in log["epochs"])
    assert [s for s, _ in ft["loss"]] == list(range(1, steps + 1))
    assert [v for _, v in ft["loss"]] == pytest.approx([x for e in log["epochs"] for x in e["steps"]["loss"]], rel=1e-6)
    lrs = [v for _, v in ft["learning_rate"]]
    assert max(lrs) > 0 and lrs[-1] < max(lrs)  # warm-up from 0, then the linear schedule decays
    assert len(ft["epoch/train_loss"]) == 2 and ft["epoch/train_loss"][-1][0] == steps
    assert ft["epoch/validation_accuracy"][-1][1] == pytest.approx(log["epochs"][-1]["validation_accuracy"])
    assert ft["epoch/tokens_per_second"][-1][1] > 0

    _, pre = _scalars(tb / "pretrain")
    assert [s for s, _ in pre["loss"]] == [s for s, _ in summary["pretraining"]["losses"]]
    assert len(pre["learning_rate"]) == len(pre["loss"]) and pre["tokens_per_second"][0][1] > 0
    assert [s for s, _ in pre["held_out_loss"]] == [0, 12]

    acc, head = _scalars(tb / "headline")
    assert head["clean_accuracy"][0][1] == pytest.approx(summary["task_accuracy"]["value"])
    gap = summary["features"][0]["reliance_gap"]
    assert head["token:zebra/reliance_gap/ci_high"][0][1] == pytest.approx(gap["ci_high"])
    assert any(t.startswith("token:zebra/verdict") for t in acc.Tags()["tensors"])


def test_tracking_is_off_by_default_and_out_of_the_hash(tiny_run):
    from probe.config import load_config

    assert not (tiny_run.path / "tensorboard").exists()
    assert load_config(None).tracking == "none"
    assert load_config(None, {"tracking": "tensorboard"}).hash() == load_config(None).hash()
