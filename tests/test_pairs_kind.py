"""The text-pair kind end to end on tiny-bert: a run on bbc-news-pairs with a planted second-side token, a
pair checkpoint through `probe diagnose`, and bad pair input refused in one line."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from probe.config import load_config
from probe.engine import execute

TINY = {"model.backbone": "tiny-bert", "task.type": "text-pair", "task.dataset": "bbc-news-pairs",
        "task.train_size": 120, "task.validation_size": 40, "task.test_size": 100, "task.max_length": 40,
        "finetune.epochs": 1, "finetune.batch_size": 16, "analyses.bootstrap_samples": 100,
        "analyses.mdl": False, "causal.layers": [0, 2], "discover.bootstrap": 100, "discover.n_examples": 30,
        "discover.min_count": 10, "discover.max_candidates": 3}


def test_a_pair_run_writes_every_pair_table(tmp_path):
    config = load_config(None, {**TINY, "output_dir": str(tmp_path), "name": "pairs", "analyses.mdl": True,
                                "discover.enabled": True,
                                "spurious": [{"kind": "planted", "token": "zebra", "target_class": "unrelated",
                                              "side": "second", "rate_in_class": 1.0, "rate_outside": 0.0}]})
    run = execute(config, progress=False)
    s = run.summary
    assert s["status"] == "complete" and s["task"]["classes"] == ["continues", "unrelated"]
    tables = {p.stem for p in (tmp_path / "pairs" / "tables").glob("*.csv")}
    assert {"behaviour", "probing", "mdl", "cka", "partial_input", "relations", "ablation", "predictions",
            "attribution", "attribution_words", "erasure", "discovery", "budgets"} <= tables
    _assert_pair_faithfulness(tmp_path / "pairs")
    attribution = pd.read_csv(tmp_path / "pairs" / "tables" / "attribution.csv")
    methods = {"integrated_gradients", "saliency", "input_x_gradient", "occlusion"}
    assert set(attribution.method) == methods | {"random"} | {f"{m}-random" for m in methods}  # ERASER's controls
    shares = attribution[attribution.metric.isin(["first_side_share", "second_side_share"])]
    total = shares.groupby(["model", "method", "partition"]).value.sum()
    assert np.allclose(total, 1.0) and len(total) == 2 * 4 * 3  # both models, every method, every partition
    token_side = attribution[attribution.metric == "token_side_share"].set_index(["model", "method", "partition"])
    second = shares[shares.metric == "second_side_share"].set_index(["model", "method", "partition"])
    assert np.allclose(token_side.value, second.value.loc[token_side.index])  # zebra is on the second side
    assert set(s["attribution_first_side_share"]) == methods
    assert 0 <= s["attribution_first_side_share"]["occlusion"]["value"] <= 1
    behaviour = pd.read_csv(tmp_path / "pairs" / "tables" / "behaviour.csv")
    assert {"first: add_url", "second: add_url"} <= set(behaviour.property)
    budgets = pd.read_csv(tmp_path / "pairs" / "tables" / "budgets.csv")  # attribution's and the causal tests' rows
    assert {"attribution", "occlusion", "ablation", "head scan"} <= set(budgets.analysis)
    assert (budgets.examples <= budgets.cap).all() and budgets.stopped.notna().all()
    erasure = pd.read_csv(tmp_path / "pairs" / "tables" / "erasure.csv")
    assert {"leace"} <= set(erasure.method.dropna()) and set(erasure.property) == {"token:zebra"}
    partial = pd.read_csv(tmp_path / "pairs" / "tables" / "partial_input.csv")
    assert set(partial.property) == {"full", "first replaced", "first empty", "second replaced", "second empty"}
    assert set(s["partial_input"]) == set(partial.property)
    assert s["task"]["test_pairs_cut"]["first"] > 0  # two article sentences do not fit 40 tokens with the third
    relations = pd.read_csv(tmp_path / "pairs" / "tables" / "relations.csv")
    assert {"pair:lexical_overlap", "pair:topic_match", "pair:length_difference"} <= set(relations.feature)
    probing = pd.read_csv(tmp_path / "pairs" / "tables" / "probing.csv")
    assert {"task", "token:zebra", "topic_match", "lexical_overlap"} <= set(probing.property)
    assert [f["name"] for f in s["features"]] == ["token:zebra"]
    # the saved pair classifier given single texts: refused in one line, before any work
    out = _cli("diagnose", str(tmp_path / "pairs" / "models" / "finetuned"), "--data", "bbc-news", "--quiet",
               "--set", f"output_dir={tmp_path}")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "is a text-pair model but task.type is" in out.stderr


def _assert_pair_faithfulness(run):
    """ERASER rows for every model, method and partition, overall and per side, finite, on the examples the
    precision budget chose; and the report shows the pair tables."""
    attribution = pd.read_csv(run / "tables" / "attribution.csv")
    aopc = attribution[attribution.metric.str.endswith("_aopc")]
    per_cell = aopc.groupby(["model", "method", "partition"]).metric.unique()
    assert len(per_cell) == 2 * (2 * 4 + 1) * 3  # both models; each method, its -random, random; every partition
    for (_, method, _), metrics in per_cell.items():  # per side: the first faithfulness method (and random)
        sides = ("", "first_side_", "second_side_") if method.split("-")[0] in ("integrated_gradients", "random") \
            else ("",)
        assert set(metrics) == {f"{s}{k}_aopc" for s in sides for k in ("comprehensiveness", "sufficiency")}
    assert np.isfinite(aopc.value).all() and np.isfinite(aopc.ci_low).all()
    budgets = pd.read_csv(run / "tables" / "budgets.csv")
    used = budgets[budgets.analysis == "attribution"].set_index(["model", "partition"]).examples
    n = aopc[aopc.metric == "comprehensiveness_aopc"].groupby(["model", "partition"]).n.max()
    assert (n == used.loc[n.index]).all()
    html = (run / "index.html").read_text()
    for tid in ("table-faithfulness", "table-side-attribution", "table-partial-input", "table-relations",
                "table-invariance", "table-erasure-difference", "table-heads", 'id="shortcuts-found"',
                'id="description-length"', 'id="probing"', 'id="similarity"'):
        assert tid in html, tid
    assert "second-text comprehensiveness" in html and "accuracy, partial input" in html


def test_planted_tokens_go_into_their_side_and_no_article_crosses_splits():
    from probe.tasks import task_kind

    config = load_config(None, {**TINY, "spurious": [{"kind": "planted", "token": "zebra", "target_class": "unrelated",
                                                      "side": "first", "rate_in_class": 1.0, "rate_outside": 0.0}]})
    data = task_kind("text-pair").load_data(config)
    target = data.classes.index("unrelated")
    has = np.array([("zebra" in a.split(), "zebra" in b.split()) for a, b in data.train_texts])
    assert (has[:, 0] == (data.train_labels == target)).all() and not has[:, 1].any()
    inserted = data.planted[0].inserted
    assert all("zebra" in a.split() and b == c[1] for (a, b), c in zip(inserted, data.test_texts))
    train = {x for pair in data.tables["train"].articles for x in pair}
    test = {x for pair in data.tables["test"].articles for x in pair}
    assert not train & test


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def _nli_csv(path, second=lambda i: f"hypothesis number {i} about a cat"):
    rows = [{"premise": f"premise {i} says the cat sat", "hypothesis": second(i), "label": ["yes", "no"][i % 2]}
            for i in range(60)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("case", ["missing pair column", "empty second texts", "single-text kind"])
def test_bad_pair_input_is_refused_in_one_line(tmp_path, case):
    empty = case == "empty second texts"
    data = _nli_csv(tmp_path / "nli.csv", (lambda i: "") if empty else (lambda i: f"hypothesis {i}"))
    sets = ["task.type=text-pair", f"task.dataset={data}", "task.text_column=premise", "model.backbone=tiny-bert",
            "task.train_size=30", "task.validation_size=10", "task.test_size=20", f"output_dir={tmp_path}"]
    sets.append("task.text_pair_column=claim" if case == "missing pair column" else "task.text_pair_column=hypothesis")
    if case == "single-text kind":
        sets[0] = "task.type=text-classification"
    out = _cli("run", *[x for s in sets for x in ("--set", s)])
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    want = {"missing pair column": "task.text_pair_column: column 'claim' is not in",
            "empty second texts": "holds only empty or missing texts",
            "single-text kind": "reads one text per example"}[case]
    assert want in lines[0]


def test_a_pair_checkpoint_is_diagnosed(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig

    from probe.models.backbones import load_tokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=2, id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1})
    folder, reference = tmp_path / "pair-clf", tmp_path / "pair-ref"
    clf = AutoModelForSequenceClassification.from_config(config)
    clf.save_pretrained(folder)
    clf.base_model.save_pretrained(reference)
    for f in (folder, reference):
        load_tokenizer("minilm").save_pretrained(f)
    data = _nli_csv(tmp_path / "nli.csv")
    out = _cli("diagnose", str(folder), "--data", data, "--text-column", "premise", "--text-pair-column", "hypothesis",
               "--reference", str(reference), "--quiet", "--set", f"output_dir={tmp_path}", "--set", "task.train_size=30", "--set",
               "task.validation_size=10", "--set", "task.test_size=20", "--set", "analyses.bootstrap_samples=100",
               "--set", "causal.enabled=false", "--set", "analyses.mdl=false", "--set", "discover.enabled=false")
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / f"diagnose-{folder.name}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["task"]["classes"] == ["no", "yes"]
    assert (run / "tables" / "partial_input.csv").exists()
    assert "partial-input and relational tests were measured" in summary["verdict"]


def _zebra_run(tmp_path, rate_in: float, rate_out: float):
    config = load_config(None, {
        **TINY, "task.train_size": 400, "task.validation_size": 60, "task.test_size": 200, "task.max_length": 48,
        "finetune.epochs": 4, "finetune.learning_rate": 2e-3, "analyses.probing": False, "analyses.similarity": False,
        "causal.enabled": False, "discover.enabled": True, "discover.hide_planted": True, "discover.max_candidates": 4,
        "discover.n_examples": 60, "discover.bootstrap": 200, "output_dir": str(tmp_path), "name": "zebra",
        "spurious": [{"kind": "planted", "token": "zebra", "target_class": "unrelated", "side": "second",
                      "rate_in_class": rate_in, "rate_outside": rate_out}]})
    run = execute(config, progress=False)
    return run.summary, pd.read_csv(tmp_path / "zebra" / "tables" / "discovery.csv")


def test_a_planted_second_side_token_is_relied_on_and_ranked_first_by_discovery(tmp_path):
    summary, discovery = _zebra_run(tmp_path, 1.0, 0.0)
    assert summary["features"][0]["verdict_status"] == "relies"
    top = discovery.iloc[0]  # hidden from discovery, found from the data and the model alone
    assert top.feature == "second:zebra" and top.verdict == "used shortcut" and top["class"] == "unrelated"
    partial = pd.read_csv(tmp_path / "zebra" / "tables" / "partial_input.csv")
    zebra = partial[(partial.partition == "token:zebra") & (partial.metric == "target_rate")].set_index("property")
    assert zebra.loc["first empty", "value"] > 0.9 and zebra.loc["first replaced", "value"] > 0.9  # the second suffices
    assert zebra.loc["second empty", "value"] < 0.5 and zebra.loc["second replaced", "value"] < 0.5
    shares = _conflicting_attribution(tmp_path)  # the fine-tuned model looks at the second text, at zebra
    for method in ("integrated_gradients", "occlusion"):
        assert shares.loc[(method, "token_side_share"), "finetuned"] > 0.8
        assert shares.loc[(method, "spurious_attribution_share"), "finetuned"] > 0.5
        assert shares.loc[(method, "spurious_attribution_share"), "pretrained"] < 0.1
        assert shares.loc[(f"{method}-random", "comprehensiveness_aopc"), "finetuned"] > 0.1  # ERASER
    # removing the top words of the second text (zebra) costs the prediction, the first text's do not
    assert shares.loc[("integrated_gradients", "second_side_comprehensiveness_aopc"), "finetuned"] > 0.3
    assert abs(shares.loc[("integrated_gradients", "first_side_comprehensiveness_aopc"), "finetuned"]) < 0.1
    assert abs(shares.loc[("integrated_gradients", "second_side_sufficiency_aopc"), "finetuned"]) < 0.1


def _conflicting_attribution(tmp_path) -> pd.DataFrame:
    a = pd.read_csv(tmp_path / "zebra" / "tables" / "attribution.csv")
    return a[a.partition == "conflicting"].pivot_table(index=["method", "metric"], columns="model", values="value")


def test_the_same_token_at_equal_rates_is_not_relied_on(tmp_path):
    summary, discovery = _zebra_run(tmp_path, 0.5, 0.5)
    assert summary["features"][0]["verdict_status"] != "relies"
    zebra = discovery[discovery.feature == "second:zebra"]
    assert zebra.empty or zebra.verdict.iloc[0] not in ("used shortcut", "used, plausibly task-relevant")
    shares = _conflicting_attribution(tmp_path)
    assert (shares.xs("spurious_attribution_share", level="metric").finetuned < 0.1).all()  # no method points at it


def test_erasing_the_planted_token_on_its_side_removes_the_reliance(tmp_path):
    """LEACE at the embeddings, fitted on zebra's pieces in the second text, undoes what the token does; a
    random direction of the same rank does not (docs/design.md §6 on pairs)."""
    config = load_config(None, {
        **TINY, "task.train_size": 400, "task.validation_size": 60, "task.test_size": 200, "task.max_length": 48,
        "finetune.epochs": 4, "finetune.learning_rate": 2e-3, "analyses.probing": False, "analyses.similarity": False,
        "analyses.attribution": False, "analyses.invariance": False, "causal.layer_swap": False,
        "causal.head_ablation": False, "discover.enabled": False, "output_dir": str(tmp_path), "name": "zebra",
        "spurious": [{"kind": "planted", "token": "zebra", "target_class": "unrelated", "side": "second",
                      "rate_in_class": 1.0, "rate_outside": 0.0}]})
    execute(config, progress=False)
    e = pd.read_csv(tmp_path / "zebra" / "tables" / "erasure.csv")
    e = e[(e.layer == 0) & (e.concept == "position")].pivot_table(index="condition", columns="metric", values="value")
    assert e.loc["random", "flip_rate"] > 0.5 and e.loc["erased", "flip_rate"] < 0.1
    assert e.loc["random", "concept_balanced_accuracy"] > 0.9 and e.loc["erased", "concept_balanced_accuracy"] < 0.6
