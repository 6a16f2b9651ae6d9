"""Label words on text pairs (issue #26 for ``task.type: text-pair``): the pair prompt's scores against a hand
computation from the LM's logits, truncation that keeps both texts and says which one it cut, the field-order
format variant, tiny GPT-2 and Llama causal LMs through ``probe run`` and ``probe diagnose`` with every pair
analysis reading the label-word scores, template findings in the summary, and the prompts that are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from probe.errors import ProbeError
from probe.models.backbones import load_tokenizer
from probe.models.batching import predict_logits, tokenize
from probe.models.label_words import LabelWordModel, PromptTokenizer, label_words
from probe.models.pair_tokens import cut_sides, encode_pair_words
from tests.tiny_lms import save_tiny_lm, tiny_lm

FAMILIES = ("gpt2", "llama")
PROMPT = "Premise: {text}\nHypothesis: {text_pair}\nAnswer:"
CLASSES = ["no", "yes"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("words", [None, ["contradiction", "entailment"]])
def test_pair_scores_equal_a_hand_computation_from_the_lm_logits(tok, one_thread, family, words):
    lm = tiny_lm(family)
    lw = label_words(tok, PROMPT, words, CLASSES, pair=True)
    reader = PromptTokenizer(tok, lw)
    pairs = [("the cat sat on the mat", "a cat sat"), ("markets fell sharply today", "nothing happened"), ("a", "b")]
    model = LabelWordModel(lm, lw, CLASSES)
    margins = predict_logits(model, reader, pairs, 64, 8, "cpu")  # what every analysis reads
    hand_words = [tok(w, add_special_tokens=False)["input_ids"] for w in (words or CLASSES)]
    assert words is None or max(len(w) for w in hand_words) > 1  # multi-token label words
    for i, (first, second) in enumerate(pairs):
        prompt = tok(PROMPT.format(text=first, text_pair=second))["input_ids"][:-1]  # [CLS] ... without [SEP]
        scores = []
        for word in hand_words:
            with torch.no_grad():
                logp = torch.log_softmax(lm(torch.tensor([prompt + word])).logits[0].float(), -1)
            scores.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(word)))
        scores = np.array(scores)
        assert np.allclose(margins[i], scores - scores.mean(), atol=1e-4)


def test_a_long_pair_is_cut_longest_first_and_keeps_the_template(tok):
    reader = PromptTokenizer(tok, label_words(tok, PROMPT, None, CLASSES, pair=True))
    long_, short = " ".join(f"w{i}" for i in range(60)), "a short claim"
    tail = tok("\nAnswer:", add_special_tokens=False)["input_ids"]
    for pair, cut in (((long_, short), {"first": 1, "second": 0}), ((short, long_), {"first": 0, "second": 1}),
                      ((long_, long_), {"first": 1, "second": 1}), ((short, short), {"first": 0, "second": 0})):
        ids, spans = reader.encode_spans(*pair, max_length=40)
        assert len(ids) <= 40 and ids[-len(tail):] == tail  # the template is never cut
        assert tokenize(reader, [pair], 40) == [ids]  # what every pass reads
        assert cut_sides(reader, [pair], 40) == cut
        kept = [sum(1 for s in spans if s[0] == k) for k in (0, 1)]
        for k in (0, 1):
            starts = [s for side, s, e in spans if side == k]
            assert starts[0] == 0 and starts == sorted(starts)  # each token's span points into its own text
            assert max(e for side, s, e in spans if side == k) <= len(pair[k])
            if not cut[("first", "second")[k]]:
                assert kept[k] == len(tok(pair[k], add_special_tokens=False)["input_ids"])
        if cut == {"first": 1, "second": 1}:
            assert abs(kept[0] - kept[1]) <= 1  # both long: each keeps half of the room
    enc, covered = encode_pair_words(reader, [(long_.split(), short.split())], 40)  # attribution's words by side
    n_first = covered[0][0]
    assert covered[0][1] == 3 and 0 < n_first < 60
    words = [w for w in enc.word_ids[0] if w is not None]
    assert words == sorted(words) and set(words) == set(range(n_first + 3))
    with pytest.raises(ProbeError, match="leave no room for both texts"):
        reader.encode_prompt("x", "x", max_length=len(reader.encode_prompt("", "")[0]) + 1, strict=True)


def test_the_field_order_variant_moves_each_text_with_its_name():
    from probe.data.prompts import check_prompt, field_order, template_variants

    assert field_order(PROMPT) == "Hypothesis: {text_pair}\nPremise: {text}\nAnswer:"
    assert field_order(field_order(PROMPT)) == PROMPT
    assert field_order("Task {{x}}\nA: {text}\nB: {text_pair} ->") == "Task {{x}}\nB: {text_pair}\nA: {text} ->"
    assert field_order("Sentence 1: {text} Sentence 2: {text_pair} Label:") == \
        "Sentence 2: {text_pair} Sentence 1: {text} Label:"
    assert field_order("Text: {text}\nLabel:") is None
    variants = dict((n, t) for n, t, _ in template_variants(PROMPT, CLASSES))
    assert variants["order of fields"] == field_order(PROMPT)
    check_prompt(variants["order of fields"], pair=True)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})


SMALL = {"task.train_size": 40, "task.validation_size": 20, "task.test_size": 40, "task.max_length": 40,
         "finetune.epochs": 1, "finetune.batch_size": 16, "analyses.bootstrap_samples": 100, "analyses.mdl": False,
         "analyses.attribution": True, "analyses.attribution_examples": 2, "analyses.ig_steps": 4,
         "analyses.attribution_methods": ["integrated_gradients", "occlusion"], "analyses.invariance_examples": 10,
         "causal.enabled": True, "causal.layers": [0, 2], "causal.top_heads": 1, "discover.enabled": True,
         "discover.bootstrap": 100, "discover.n_examples": 20, "discover.min_count": 5, "discover.max_candidates": 2}


def _check_pair_run(folder, token_side: str | None = None) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "complete", summary.get("error")
    assert not summary.get("analysis_errors")
    tables = {p.stem: pd.read_csv(p) for p in (folder / "tables").glob("*.csv")}
    for name in ("behaviour", "probing", "cka", "partial_input", "relations", "attribution", "ablation", "zero_shot",
                 "prompt_format", "discovery", "discovery_prompt") + (("erasure",) if token_side else ()):
        assert name in tables and len(tables[name]), name
    partial = tables["partial_input"]
    assert {"finetuned", "pretrained"} <= set(partial.model)  # the zero-shot reference on the same conditions
    shares = tables["attribution"]
    shares = shares[shares.metric.isin(["first_side_share", "second_side_share"])]
    assert np.allclose(shares.groupby(["model", "method", "partition"]).value.sum(), 1.0)
    formats = tables["prompt_format"]
    assert "order of fields" in set(formats.property) and {"pretrained", "finetuned"} <= set(formats.model)
    order = formats[(formats.property == "order of fields") & (formats.metric == "format_accuracy")]
    assert (order.identical_inputs == 0).all()  # the texts trade places: every input changes
    behaviour = tables["behaviour"]
    assert {"first: add_url", "second: add_url"} <= set(behaviour.property)
    lw = summary["label_words"]
    assert "{text_pair}" in lw["prompt"] and 0 <= lw["zero_shot_accuracy"]["value"] <= 1
    # every template element that moves predictions is a finding of the summary, as discovered words are
    moved = set(tables["discovery_prompt"].query("verdict == 'format moves predictions'").feature)
    assert moved == {d["feature"] for d in summary.get("discovered", []) if d["kind"] == "template"}
    if token_side:
        erasure = tables["erasure"]
        assert set(erasure.property) == {"token:zebra"}
        assert {"token_side_share"} <= set(tables["attribution"].metric)
    return summary


def test_tiny_causal_lms_with_label_words_on_pairs_through_probe_run(tmp_path, tok):
    for family in ("gpt2", "llama"):
        config = {"model": {"backbone": save_tiny_lm(family, tmp_path / family, tok), "head": "label-words"},
                  "task": {"type": "text-pair", "dataset": "bbc-news-pairs"}, "output_dir": str(tmp_path),
                  "name": f"pairs-{family}",
                  "spurious": [{"kind": "planted", "token": "zebra", "target_class": "unrelated", "side": "second",
                                "rate_in_class": 1.0, "rate_outside": 0.0}]}
        path = tmp_path / f"{family}.yaml"
        path.write_text(yaml.safe_dump(config))
        res = _cli("run", str(path), *[a for k, v in SMALL.items() for a in ("--set", f"{k}={json.dumps(v)}")],
                   cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        summary = _check_pair_run(tmp_path / f"pairs-{family}", token_side="second")
        assert summary["label_words"]["prompt"] == "First text: {text}\nSecond text: {text_pair}\nLabel:"
        assert summary["task"]["test_pairs_cut"]["first"] > 0  # two article sentences do not fit 40 tokens


def _nli_csv(path) -> str:
    """Pairs whose "yes" hypotheses repeat the premise's words and whose "no" ones do not: lexical overlap is
    associated with the label, so the relational tests have a property to test."""
    animals, places, foods = ["cat", "dog", "horse", "goat"], ["river", "barn", "road"], ["bread", "soup", "rice"]
    rows = []
    for i in range(120):
        a, p = animals[i % 4], places[i % 3]
        premise = f"yesterday the {a} slept near the {p} for hours"
        yes = i % 2 == 1
        rows.append({"premise": premise, "label": ["no", "yes"][yes],
                     "hypothesis": f"the {a} slept near the {p}" if yes else f"someone cooked {foods[i % 3]} today"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_a_causal_lm_answering_pairs_through_probe_diagnose(tmp_path, tok):
    folder = save_tiny_lm("llama", tmp_path / "llama", tok)
    data = _nli_csv(tmp_path / "nli.csv")
    res = _cli("diagnose", folder, "--data", data, "--task-type", "text-pair", "--text-column", "premise",
               "--text-pair-column", "hypothesis", "--reference", folder, "--prompt", PROMPT, "--label-words",
               "contradiction,entailment", "--quiet", "--set", f"output_dir={tmp_path}",
               *[a for k, v in SMALL.items() if not k.startswith("finetune") for a in ("--set", f"{k}={json.dumps(v)}")],
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "diagnose-llama"
    summary = _check_pair_run(run)
    assert summary["label_words"]["label_words"] == ["contradiction", "entailment"]
    zero, behaviour = (pd.read_csv(run / "tables" / f"{n}.csv") for n in ("zero_shot", "behaviour"))
    acc = lambda t: float(t[(t.property == "task") & (t.metric == "clean_accuracy")].value.iloc[0])  # noqa: E731
    assert acc(behaviour) == pytest.approx(acc(zero))  # the model is its own reference: zero-shot = "fine-tuned"
    partial = pd.read_csv(run / "tables" / "partial_input.csv")
    clean = partial[(partial.partition == "clean") & (partial.metric == "accuracy")]
    by_model = clean.pivot_table(index="property", columns="model", values="value")
    assert np.allclose(by_model.finetuned, by_model.pretrained)  # the same model read through the same prompt


@pytest.mark.parametrize("sets, message", [
    (["task.type=text-pair", "task.prompt='Premise: {text} Label:'"], "needs {text_pair} exactly once, got 0"),
    (["task.prompt='Text: {text} and {text_pair} Label:'"], "unknown field {text_pair}; allowed: {text}"),
    (["task.type=text-pair", "task.prompt='A: {text} B: {text_pair} C: {text_pair}'"], "needs {text_pair} exactly once"),
    (["task.type=text-pair", "task.max_length=10"], "leave no room for both texts"),
])
def test_bad_pair_prompts_are_one_line_exit_2(tmp_path, sets, message):
    sets = [*sets, "model.head=label-words", "model.backbone=tiny-gpt2"]
    if "task.type=text-pair" in sets:
        sets += ["task.dataset=bbc-news-pairs", "spurious=[]"]
    res = _cli("run", *[a for s in sets for a in ("--set", s)], "--set", f"output_dir={tmp_path}", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_field_with_a_conversion_or_format_spec_is_refused():
    from probe.data.prompts import check_prompt

    for prompt in ("A: {text!r} B: {text_pair}", "A: {text} B: {text_pair:>9}"):
        with pytest.raises(ProbeError, match="has a conversion or format spec"):
            check_prompt(prompt, pair=True)


def test_template_findings_reach_the_summary_scorecard_and_banner():
    from probe.analyses.verdict import discovery_lead
    from probe.discovery.verdicts import FORMAT_USED, discovered_templates
    from probe.report.impact import banner
    from probe.report.scorecard import scorecard

    table = pd.DataFrame([
        {"feature": "template: order of fields", "edit": "B: {text_pair}\nA: {text}", "control": "delete 2 random "
         "word(s) of the text", "n": 30, "flip_rate": 0.6, "control_flip_rate": 0.1, "effect": 0.5,
         "effect_ci_low": 0.3, "effect_ci_high": 0.7, "p": 0.001, "q": 0.004, "verdict": FORMAT_USED},
        {"feature": "template: double space", "edit": "A:  {text}", "control": "delete 1 random word(s) of the text",
         "n": 30, "flip_rate": 0.0, "control_flip_rate": 0.0, "effect": 0.0, "effect_ci_low": 0.0,
         "effect_ci_high": 0.0, "p": 1.0, "q": 1.0, "verdict": "format not used"}])
    found = discovered_templates(table)
    assert [d["feature"] for d in found] == ["template: order of fields"]
    assert found[0]["kind"] == "template" and found[0]["effect"] == 0.5 and "60%" in found[0]["sentence"]
    summary = {"features": [], "discovered": found, "name": "x"}
    rows = scorecard(summary, {})
    assert rows[0]["feature"] == "template: order of fields" and rows[0]["status"] == "relies"
    assert rows[0]["value"] == "0.50" and rows[0]["href"] == "#discovery-prompt"
    assert '"template: order of fields"' in discovery_lead(found) and "→" not in discovery_lead(found)
    top = banner(summary, {}, "config.yaml")
    assert top["status"] == "relies" and "format moves predictions" in top["verdict"]
