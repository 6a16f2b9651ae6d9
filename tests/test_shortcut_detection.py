"""The diagnosis itself: a planted shortcut is reported, its control is not.

tiny-bert learns BBC topics only partly in a few seconds, but a token planted in every
training article of one class is the easiest cue there is: the verdict must say "relies".
With the token planted at equal rates in every class it carries no label information, and
the verdict must not say "relies". The slow tests repeat this with the real minilm defaults.
"""

from pathlib import Path

import pytest

import probe
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
CONTROL_ERASURE_CHANGE = 0.1
FAST = {"task.train_size": 600, "task.test_size": 200, "finetune.epochs": 6, "finetune.learning_rate": 2e-3,
        "finetune.batch_size": 32}


def _run(tmp_path, name, rate_in, rate_out):
    over = tiny_overrides(tmp_path, name, **FAST, **{"spurious.0.rate_in_class": rate_in,
                                                     "spurious.0.rate_outside": rate_out})
    return probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})


def test_tiny_bert_planted_shortcut_is_found(tmp_path):
    f = _run(tmp_path, "planted", 1.0, 0.0).summary["features"][0]
    assert f["verdict_status"] == "relies", f["verdict"]
    assert f["reliance_gap"]["ci_low"] > 0.2
    assert f["s_only_error"]["value"] > 0.4
    assert f["verdict"].startswith('Relies on planted token "zebra" → business.')


def test_tiny_bert_control_is_not_reported(tmp_path):
    f = _run(tmp_path, "control", 0.5, 0.5).summary["features"][0]
    assert f["verdict_status"] != "relies", f["verdict"]
    assert f["reliance_gap"]["ci_high"] < 0.05
    assert f["flip_rate"]["value"] < 0.2


@pytest.mark.slow
def test_minilm_default_and_control(tmp_path):
    """README's claims, end to end on the real default (every analysis but layer swaps and the head
    scan, about 7 minutes on 2 cores) and its control (behaviour, integrated gradients and erasure at three
    layers, about 3 minutes)."""
    run = probe.run(None, progress=False, output_dir=str(tmp_path), causal__head_ablation=False,
                    causal__layer_swap=False)  # swaps and head ablation are tested on tiny-bert (test_causal.py)
    f = run.summary["features"][0]
    assert f["verdict_status"] == "relies"
    assert f["conflicting_accuracy_before"]["ci_low"] > 0.85
    assert f["conflicting_accuracy"]["ci_high"] < f["conflicting_accuracy_before"]["ci_low"] - 0.4
    # probing: the topic probe is selective at every layer, and cheaper to transmit than its control
    probing = run.table("probing")
    sel = probing[(probing.property == "task") & (probing.metric == "selectivity")]
    assert len(sel) == 14 and (sel.ci_low > 0.2).all()
    mdl = run.table("mdl").set_index(["model", "layer", "property", "metric"]).value
    for model in ("pretrained", "finetuned"):
        for layer in range(7):
            assert mdl[(model, layer, "task", "codelength_bits")] < mdl[(model, layer, "task", "control_codelength_bits")]
    # attribution: the token dominates the fine-tuned model's integrated gradients on conflicting examples
    attr = run.table("attribution")
    ig = attr[(attr.method == "integrated_gradients") & (attr.partition == "conflicting")].set_index(["model", "metric"])
    assert ig.loc[("finetuned", "spurious_top1_rate"), "value"] > 0.8
    assert ig.loc[("pretrained", "spurious_top1_rate"), "value"] < 0.3
    comp = attr[(attr.metric == "comprehensiveness_aopc") & (attr.method == "integrated_gradients-random")]
    assert (comp[comp.model == "finetuned"].ci_low > 0).all()

    # causal: erasing which position holds the token undoes the shortcut at some layer, at little clean cost,
    # far beyond random directions of the same rank; and no linear probe recovers the concept afterwards
    erasure = run.table("erasure")
    pos = erasure[(erasure.concept == "position") & (erasure.method == "leace")]
    diff = pos[(pos.condition == "difference") & (pos.metric == "conflicting_accuracy")].set_index("layer")
    erased = pos[pos.condition == "erased"].pivot_table(index="layer", columns="metric", values="value")
    none = erasure[erasure.condition == "none"].set_index("metric").value
    good = [l for l in diff.index if diff.loc[l, "ci_low"] > 0.5
            and none["clean_accuracy"] - erased.loc[l, "clean_accuracy"] <= 0.03]
    assert good, diff
    guarantee = erasure[(erasure.method == "leace") & (erasure.condition == "erased")]
    acc = guarantee[guarantee.metric == "concept_accuracy"].set_index(["layer", "concept"]).ci_low
    majority = guarantee[guarantee.metric == "concept_majority"].set_index(["layer", "concept"]).value
    assert (acc <= majority + 0.02).all()

    control = probe.run(ROOT / "examples" / "control.yaml", progress=False, output_dir=str(tmp_path),
                        analyses__probing=False, analyses__similarity=False, analyses__invariance=False,
                        analyses__attribution_methods=["integrated_gradients"], causal__layer_swap=False,
                        causal__head_ablation=False, causal__layers=[0, 3, 6])
    c = control.summary["features"][0]
    assert c["verdict_status"] == "none", c["verdict"]
    assert control.summary["task_accuracy"]["ci_low"] > 0.85
    assert c["conflicting_accuracy"]["ci_low"] > c["conflicting_accuracy_before"]["value"] - 0.1
    attr = control.table("attribution")
    ig = attr[(attr.method == "integrated_gradients") & (attr.partition == "conflicting")].set_index(["model", "metric"])
    assert ig.loc[("finetuned", "spurious_top1_rate"), "value"] < 0.3
    # on the control, erasing the token's concept changes conflicting accuracy little at any layer
    e = control.table("erasure")
    base = e[(e.condition == "none") & (e.metric == "conflicting_accuracy")].value.iloc[0]
    conf = e[(e.condition == "erased") & (e.metric == "conflicting_accuracy")]
    assert (conf.value - base).abs().max() <= CONTROL_ERASURE_CHANGE, conf

