"""The causal stage end to end on tiny-bert, and its verdict sentence on tables with a known answer."""

import numpy as np
import pandas as pd

import probe
from probe.analyses.verdict import erasure_sentence
from tests.conftest import tiny_overrides


def _erasure_rows(layer_conf: dict[int, tuple[float, float, float]], clean: dict[int, float]) -> pd.DataFrame:
    """A synthetic erasure table: per layer (erased, random, difference-ci-low) conflicting accuracy."""
    rows = [dict(property="f", metric="conflicting_accuracy", condition="none", layer=None, concept=None,
                 method=None, value=0.1, ci_low=0.05, ci_high=0.15),
            dict(property="f", metric="clean_accuracy", condition="none", layer=None, concept=None, method=None,
                 value=0.9, ci_low=0.85, ci_high=0.95)]
    for layer, (erased, random, diff_low) in layer_conf.items():
        for cond, conf in (("erased", erased), ("random", random)):
            rows.append(dict(property="f", metric="conflicting_accuracy", condition=cond, layer=layer,
                             concept="position", method="leace", value=conf, ci_low=conf - 0.05, ci_high=conf + 0.05))
            rows.append(dict(property="f", metric="clean_accuracy", condition=cond, layer=layer, concept="position",
                             method="leace", value=clean[layer] if cond == "erased" else 0.9, ci_low=0.8,
                             ci_high=0.95))
        rows.append(dict(property="f", metric="conflicting_accuracy", condition="difference", layer=layer,
                         concept="position", method="leace", value=erased - random, ci_low=diff_low,
                         ci_high=erased - random + 0.05))
    return pd.DataFrame(rows)


def test_erasure_sentence_names_the_layers_that_restore_at_little_clean_cost():
    # layer 0: restores but costs 10 clean points; layers 1-2: restore cheaply; layer 3: within the random control
    table = _erasure_rows({0: (0.8, 0.1, 0.6), 1: (0.85, 0.1, 0.7), 2: (0.7, 0.12, 0.5), 3: (0.2, 0.15, -0.02)},
                          {0: 0.8, 1: 0.89, 2: 0.9, 3: 0.9})
    text = erasure_sentence(table, "f", "zebra", min_gain=0.05)
    assert "at layers 1–2" in text and "best: layer 1" in text and "0.10 → 0.85" in text
    none = erasure_sentence(_erasure_rows({0: (0.2, 0.15, -0.02)}, {0: 0.9}), "f", "zebra", min_gain=0.05)
    assert "at no layer" in none
    assert erasure_sentence(table, "other", "zebra", 0.05) == ""


def test_causal_stage_on_a_tiny_shortcut(tmp_path):
    over = tiny_overrides(tmp_path, "causal", **{"task.train_size": 600, "task.test_size": 200, "finetune.epochs": 6,
                                                 "finetune.learning_rate": 2e-3, "finetune.batch_size": 32,
                                                 "analyses.attribution": False, "analyses.invariance": False,
                                                 "analyses.mdl": False, "analyses.probing": False,
                                                 "analyses.similarity": False, "causal.enabled": True,
                                                 "causal.methods": ["leace", "inlp"]})
    run = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    assert run.summary["features"][0]["verdict_status"] == "relies"
    erasure = run.table("erasure")
    assert (run.path / "tables" / "erasure.csv").is_file() and (run.path / "tables" / "ablation.csv").is_file()
    assert set(erasure.condition) == {"none", "erased", "random", "difference"}
    assert set(erasure.layer.dropna().astype(int)) == {0, 1, 2}
    # the guarantee on held-out positions: after LEACE no fresh probe beats chance beyond noise
    leace = erasure[(erasure.method == "leace") & (erasure.condition == "erased")]
    bal = leace[leace.metric == "concept_balanced_accuracy"]
    assert len(bal) == 6 and (bal.ci_low <= 0.52).all(), bal
    assert (bal["rank"] == 1).all()
    acc = leace[leace.metric == "concept_accuracy"].set_index(["layer", "concept"])
    majority = leace[leace.metric == "concept_majority"].set_index(["layer", "concept"]).value
    assert (acc.ci_low <= majority + 0.02).all(), acc
    # random directions of the same rank leave the position concept decodable
    rnd = erasure[(erasure.method == "leace") & (erasure.condition == "random")
                  & (erasure.metric == "concept_balanced_accuracy") & (erasure.concept == "position")]
    assert (rnd.ci_low > 0.6).all(), rnd
    # a layer's random control of a given rank is one eraser whatever the concept or method asking for it:
    # its behaviour rows are the same numbers (computed once)
    behaviour = erasure[(erasure.condition == "random") & (erasure.metric == "conflicting_accuracy")]
    groups = behaviour.groupby(["layer", "rank"]).value
    assert (groups.nunique() == 1).all() and (groups.size() >= 2).sum() >= 3, behaviour  # LEACE: both concepts
    # INLP removes directions and decodability falls well below that of as many random directions (it need
    # not reach chance within its iteration budget: what a linear probe finds is not all the model stores)
    inlp = erasure[(erasure.method == "inlp") & (erasure.concept == "position")
                   & (erasure.metric == "concept_balanced_accuracy")]
    erased, rand = (inlp[inlp.condition == c].set_index("layer") for c in ("erased", "random"))
    assert len(erased) == 3 and (erased["rank"] >= 1).all() and (erased["rank"] == rand["rank"]).all()
    assert (erased.value < rand.value - 0.1).all(), inlp
    # erasing which position holds the token, at the embeddings, undoes the shortcut; random directions do not
    at0 = erasure[(erasure.layer == 0) & (erasure.concept == "position") & (erasure.method == "leace")]
    conf = at0[at0.metric == "conflicting_accuracy"].set_index("condition").value
    base = erasure[(erasure.condition == "none") & (erasure.metric == "conflicting_accuracy")].value.iloc[0]
    assert conf["erased"] > base + 0.2 and conf["random"] < base + 0.1, (base, conf)
    assert "Causal test" in run.summary["features"][0]["causal"]
    ablation = run.table("ablation")
    assert {"none", "swap_pretrained", "reinit", "pretrained_encoder", "head"} <= set(ablation.intervention)
    swap = ablation[(ablation.intervention == "swap_pretrained") & (ablation.metric == "clean_accuracy")]
    assert sorted(swap.layer.astype(int)) == [1, 2]
    html = (run.path / "index.html").read_text()
    assert "Causal tests: where the model uses the cue" in html
    assert np.isfinite(erasure.value).all()
