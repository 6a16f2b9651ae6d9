"""Label-word classifiers (``model.head: label-words``, issue #26): the scores against a hand computation
from the LM's logits (one- and multi-token words, GPT-2 / Llama / Qwen2), the training loss, prompts that
keep their template when the text is cut, tiny causal LMs through every analysis, a LoRA adapter on a
causal LM through ``probe diagnose``, and the inputs that are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import probe
from probe.errors import ProbeError
from probe.models.backbones import load_tokenizer
from probe.models.batching import predict_logits
from probe.models.label_words import LabelWordModel, PromptTokenizer, label_words
from tests.conftest import tiny_overrides
from tests.tiny_lms import CONFIGS, save_tiny_lm, tiny_lm

CLASSES = ["business", "entertainment", "politics", "sports", "tech"]
PROMPT = "Text: {text}\nTopic:"
MULTI = ["business news", "film and music", "politics", "sport", "tech"]  # two multi-token words
SMALL = {"task.train_size": 40, "task.validation_size": 20, "task.test_size": 60, "task.max_length": 32,
         "analyses.bootstrap_samples": 100, "analyses.attribution_examples": 2, "analyses.ig_steps": 4,
         "analyses.invariance_examples": 20, "analyses.attribution_methods": ["integrated_gradients", "occlusion"],
         "analyses.faithfulness_methods": ["integrated_gradients"], "causal.layers": [0, 2], "causal.top_heads": 1,
         "spurious": [{"token": "zebra", "target_class": "business"}], "causal.enabled": True,
         "analyses.attribution": True, "model.head": "label-words"}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


@pytest.mark.parametrize("family", list(CONFIGS))
@pytest.mark.parametrize("words", [CLASSES, MULTI])
def test_scores_equal_a_hand_computation_from_the_lm_logits(tok, family, words):
    lm = tiny_lm(family)
    lw = label_words(tok, PROMPT, words, CLASSES)
    assert (max(len(w) for w in lw.ids) > 1) == (words is MULTI)
    reader = PromptTokenizer(tok, lw)
    texts = ["the market fell today", "a late goal in the last minute of a long and tense game", "vote"]
    model = LabelWordModel(lm, lw, CLASSES)
    batch = reader.pad({"input_ids": [reader.encode_prompt(t)[0] for t in texts]}, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)  # padded batch
    got = out.scores.numpy()
    margins = predict_logits(model, reader, texts, 64, 8, "cpu")  # what every analysis reads
    assert np.allclose(margins, got - got.mean(1, keepdims=True), atol=1e-5)
    for i, text in enumerate(texts):
        prompt = reader.encode_prompt(text)[0]
        for k, word in enumerate(lw.ids):
            with torch.no_grad():
                logp = torch.log_softmax(lm(torch.tensor([prompt + list(word)])).logits[0].float(), -1)
            hand = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(word))
            assert got[i, k] == pytest.approx(hand, abs=1e-4)


def test_the_zero_shot_reference_needs_no_probe_head(tok):
    from probe.discovery.discover import _reference_head

    model = LabelWordModel(tiny_lm("gpt2"), label_words(tok, PROMPT, None, CLASSES), CLASSES)
    assert _reference_head(model, tok, ["a"], [0], 5, 32, 8, 0) is model


def test_representation_is_the_last_prompt_token(tok):
    lm = tiny_lm("gpt2")
    lw = label_words(tok, PROMPT, MULTI, CLASSES)
    reader = PromptTokenizer(tok, lw)
    prompts = [reader.encode_prompt(t)[0] for t in ("short", "a somewhat longer text here")]
    batch = reader.pad({"input_ids": prompts}, padding=True, return_tensors="pt")
    model = LabelWordModel(lm, lw, CLASSES)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        for i, p in enumerate(prompts):
            alone = lm(torch.tensor([p]), output_hidden_states=True).hidden_states
            for layer in (0, 1, 2):
                assert torch.allclose(out.hidden_states[layer][i, len(p) - 1], alone[layer][0, -1], atol=1e-5)


@pytest.mark.parametrize("family", list(CONFIGS))
@pytest.mark.parametrize("words", [CLASSES, MULTI])
def test_training_loss_is_the_gold_label_words_negative_score(tok, family, words):
    from probe.config import FinetuneConfig
    from probe.models.label_word_training import LabelWordObjective
    from probe.tasks.sequence.objective import SequenceObjective

    lm = tiny_lm(family)
    lw = label_words(tok, PROMPT, words, CLASSES)
    reader = PromptTokenizer(tok, lw)
    texts, labels = ["markets rallied", "the band played on and on for hours", "a goal"], np.array([0, 1, 3])
    base = SequenceObjective(reader, texts, labels, texts, labels, 32, FinetuneConfig())
    objective = LabelWordObjective(base, reader)
    objective.encode(None)
    inputs, y = objective.batch(np.arange(3), "cpu")
    with torch.no_grad():
        logits = lm(**inputs).logits
        loss = objective.loss(logits, y)
    longest = max(len(w) for w in lw.ids)  # the head ran on the positions that predict label words only
    assert logits.shape[1] == y.shape[1] == longest + 1 < inputs["input_ids"].shape[1]
    with torch.no_grad():
        inputs = reader.pad({"input_ids": [reader.encode_prompt(t)[0] for t in texts]}, padding=True,
                            return_tensors="pt")
        scores = LabelWordModel(lm, lw, CLASSES)(**inputs).scores.numpy()
    assert float(loss) == pytest.approx(-scores[np.arange(3), labels].mean(), abs=1e-4)


def test_prompt_keeps_its_template_when_the_text_is_cut(tok):
    lw = label_words(tok, PROMPT, None, CLASSES)
    reader = PromptTokenizer(tok, lw)
    text = " ".join(["word"] * 200)
    ids = reader(text, truncation=True, max_length=24, return_offsets_mapping=True)
    tail = tok("\nTopic:", add_special_tokens=False)["input_ids"]
    assert len(ids["input_ids"]) <= 24 and ids["input_ids"][-len(tail):] == tail
    spans = [(s, e) for s, e in ids["offset_mapping"] if e > s]
    assert spans and all(text[s:e] == "word" for s, e in spans)  # offsets point into the text
    assert reader("zebra", add_special_tokens=False)["input_ids"] == tok("zebra", add_special_tokens=False)["input_ids"]
    with pytest.raises(ProbeError, match="task.max_length: 3 tokens leave no room"):
        reader.encode_prompt(text, max_length=3, strict=True)
    whole = reader(text, truncation=True, max_length=3)["input_ids"]  # an analysis's small budget: the template kept
    assert whole == reader.encode_prompt("")[0] and whole[-len(tail):] == tail


@pytest.mark.parametrize("words, message", [
    (["business", "business", "politics", "sport", "tech"], "have the same label word tokens"),
    (["[CLS]", "film", "politics", "sport", "tech"], "tokenises to nothing"),
    (["business", "film"], "got 2 words for 5 classes"),
])
def test_bad_label_words_are_refused(tok, words, message):
    with pytest.raises(ProbeError, match=message):
        label_words(tok, PROMPT, words, CLASSES)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=cwd, capture_output=True, text=True,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("sets, message", [
    (["model.head=label-words", "task.prompt=no field here"], "needs {text} exactly once"),
    (["model.head=label-words", "model.backbone=tiny-bert"], "is a bert model, not a causal decoder"),
    (["model.head=label-words", "model.backbone=tiny-gpt2", "task.label_words=[a, a, b, c, d]"],
     "have the same label word tokens"),
    (["model.head=label-words", "model.backbone=tiny-gpt2", "finetune.strategy=linear_probe"],
     "label words are read through"),
    (["task.prompt={text} is"], "task.prompt applies to model.head label-words"),
    (["model.head=label-words", "model.backbone=tiny-gpt2", "task.max_length=8",
      "task.prompt=one two three four five six seven eight nine {text} label"], "leave no room for the text"),
    (["model.head=label-words", "model.backbone=tiny-gpt2", "task.label_word_synonyms=[a, b]"],
     "task.label_word_synonyms: got 2 words for 5 classes"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, sets, message):
    res = _cli("run", *[a for s in sets for a in ("--set", s)], "--set", f"output_dir={tmp_path}", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr, res.stderr


def _run(tmp_path, name, **more):
    over = {**tiny_overrides(tmp_path, name), **SMALL, **more}
    return probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})


def _check_tables(run, n_classes: int = 5):
    for name in ("behaviour", "probing", "cka", "attribution", "erasure", "ablation"):
        assert name in run.tables and len(run.table(name)), name
    b = run.table("behaviour")
    acc = b[(b.property == "task") & (b.metric == "clean_accuracy") & (b.model == "finetuned")].value
    assert len(acc) and 0 <= float(acc.iloc[0]) <= 1


def test_tiny_gpt2_with_label_words_through_every_analysis(tmp_path):
    run = _run(tmp_path, "gpt2", **{"model.backbone": "tiny-gpt2", "discover.enabled": True,
                                    "task.label_word_synonyms": ["finance", "film", "government", "football", "science"]})
    assert run.status == "complete"
    _check_tables(run)
    zero = run.table("zero_shot")
    assert set(zero.model) == {"pretrained"} and "reliance_gap" in set(zero.metric)
    formats = run.table("prompt_format")
    assert {"pretrained", "finetuned"} <= set(formats.model) and "label word synonyms" in set(formats.property)
    assert run.summary["label_words"]["zero_shot_accuracy"]["value"] >= 0
    templates = run.table("discovery_prompt")
    assert len(templates) and templates.feature.str.startswith("template: ").all()
    assert set(templates.verdict) <= {"format moves predictions", "format not used", "not seen by the tokenizer",
                                      "inconclusive"}
    unseen = templates[templates.verdict == "not seen by the tokenizer"]
    assert (unseen.flip_rate == 0).all()  # an uncased tokenizer does not see the casing variants
    info = json.loads((run.path / "models" / "finetuned" / "strategy.json").read_text())
    assert info["head"] == "label-words" and info["prompt"] == "Text: {text}\nLabel:"


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_llama_and_qwen2_with_multi_token_label_words(tmp_path, tok, family):
    base = save_tiny_lm(family, tmp_path / f"{family}-base", tok)
    run = _run(tmp_path, family, **{"model.backbone": base, "task.prompt": PROMPT, "task.label_words": MULTI})
    assert run.status == "complete"
    _check_tables(run)


def test_lora_adapter_on_a_causal_lm_through_probe_diagnose(tmp_path, tok):
    base = save_tiny_lm("gpt2", tmp_path / "gpt2-base", tok)
    trained = _run(tmp_path, "lora", **{"model.backbone": base, "finetune.strategy": "lora", "causal.enabled": False,
                                         "analyses.attribution": False, "finetune.learning_rate": 5e-3})
    folder = trained.path / "models" / "finetuned"
    assert (folder / "adapter_config.json").is_file()
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    adapter = tmp_path / "adapter"  # a bare peft adapter, as another tool would leave it
    adapter.mkdir()
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (adapter / f).write_bytes((folder / f).read_bytes())
    res = _cli("diagnose", str(adapter), "--data", "bbc-news", "--prompt", "Text: {text}\nLabel:", "--quiet",
               "--set", f"output_dir={tmp_path}", "--set", "task.train_size=40", "--set", "task.validation_size=20",
               "--set", "task.test_size=60", "--set", "task.max_length=32", "--set", "causal.enabled=false",
               "--set", "analyses.attribution=false", "--set", "analyses.bootstrap_samples=100", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    given = probe.load_run(tmp_path / "diagnose-adapter")
    ref, got = trained.table("predictions"), given.table("predictions")
    clean = lambda t: t[t.partition == "clean"].prediction.to_numpy()  # noqa: E731
    assert (clean(got) == clean(ref)).all()  # the adapter diagnosed gives the trained run's predictions


def test_template_variants_change_one_element_and_keep_the_fields():
    from probe.data.prompts import check_prompt, template_variants

    variants = template_variants("Premise: {text}\nHypothesis: {text_pair}\nLabel:", ["yes", "no"])
    names = [n for n, _, _ in variants]
    assert "order of fields" in names and "newline more" in names and len(set(names)) == len(names)
    for _, template, words in variants:
        check_prompt(template, pair=True)  # every variant is a usable template
        assert len(words) == 2
    single = dict((n, t) for n, t, _ in template_variants("Text: {text}\nLabel:", ["a", "b"]))
    assert "order of fields" not in single and single["separator '='"] == "Text = {text}\nLabel ="
    synonyms = template_variants("Text: {text}\nLabel:", ["good", "bad"], ["great", "awful"])
    assert synonyms[-1] == ("label word synonyms", "Text: {text}\nLabel:", ["great", "awful"])


def test_prompt_format_table_is_paired_against_the_training_template(tok):
    from probe.analyses.prompt_format import TRAINING, format_predictions, prompt_format_table, variant_readers

    lm = tiny_lm("gpt2", seed=3)
    reader = PromptTokenizer(tok, label_words(tok, PROMPT, None, CLASSES))
    texts = [f"text number {i} about {w}" for i, w in enumerate(["markets", "films", "votes", "goals", "chips"] * 6)]
    labels = np.arange(len(texts)) % 5
    df = prompt_format_table({"finetuned": lm}, reader, texts, labels, CLASSES, 32, 8, "cpu", 200, 0)
    preds = format_predictions(lm, variant_readers(reader, CLASSES), texts, CLASSES, 32, 8, "cpu")
    acc = {n: float((p == labels).mean()) for n, p in preds.items()}
    for name, p in preds.items():
        rows = df[df.property == name].set_index("metric").value
        assert rows["format_accuracy"] == pytest.approx(acc[name])
        if name != TRAINING:
            assert rows["format_flip_rate"] == pytest.approx(float((p != preds[TRAINING]).mean()))
            assert rows["format_accuracy_change"] == pytest.approx(acc[name] - acc[TRAINING])
    same = df[(df.identical_inputs == 1) & (df.metric == "format_flip_rate")]
    assert len(same) and (same.value == 0).all()  # an uncased tokenizer reads "TEXT:" as "Text:"
    spread = df[df.metric == "format_spread"].iloc[0]
    assert spread.value == pytest.approx(max(acc.values()) - min(acc.values()))
    assert spread.ci_low <= spread.ci_high


def test_compare_sweep_with_remedies_on_label_words(tmp_path):
    from probe.config import load_config

    cfg = load_config(None, {**tiny_overrides(tmp_path, "sweep"), **SMALL, "model.backbone": "tiny-gpt2",
                             "causal.enabled": False, "analyses.attribution": False, "analyses.invariance": False,
                             "analyses.probing": False})
    data = cfg.to_dict()
    data["compare"] = [{"name": "full"}, {"name": "lora", "set": {"finetune.strategy": "lora"}},
                       {"name": "bitfit", "set": {"finetune.strategy": "bitfit"}},
                       {"name": "cf", "set": {"finetune.augmentation.counterfactual_rate": 0.5,
                                              "finetune.adversarial.method": "fgm", "finetune.l2_sp": 0.01}}]
    sweep = probe.run(data, progress=False)
    assert all(r.summary["status"] == "complete" for r in sweep.runs)
    assert "extract:pretrained" in sweep.runs[1].summary["reused_stages"]
    table = sweep.comparison.set_index("variant")
    assert table.loc["lora", "trainable_parameters"] < table.loc["full", "trainable_parameters"] / 10
    assert table.loc["bitfit", "trainable_parameters"] < table.loc["full", "trainable_parameters"] / 10
    # the zero-shot reference is the same model for every variant
    zero = [r.summary["label_words"]["zero_shot_accuracy"]["value"] for r in sweep.runs]
    assert len(set(zero)) == 1


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hooks_and_replayed_blocks_act_on_the_label_word_model(tok, family):
    from probe.causal.hooks import KeptStates, edit_hidden_state, resume_at

    lm = tiny_lm(family)
    lw = label_words(tok, PROMPT, MULTI, CLASSES)
    reader = PromptTokenizer(tok, lw)
    model = LabelWordModel(lm, lw, CLASSES)
    batch = reader.pad({"input_ids": [reader.encode_prompt(t)[0] for t in ("one text", "another, longer text")]},
                       padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = model(**batch).scores
        kept = KeptStates()
        with resume_at(model, 2, kept):
            first = model(**batch).scores
            again = model(**batch).scores  # blocks below layer 2 replayed from the first pass
        with edit_hidden_state(model, 1, lambda h: h * 0):
            zeroed = model(**batch).scores
    assert torch.allclose(plain, first) and torch.allclose(plain, again)
    assert not torch.allclose(plain, zeroed)


def test_pair_prompts_fill_both_fields_and_offsets_point_into_the_first_text(tok):
    prompt = "Hypothesis: {text_pair}\nPremise: {text}\nLabel:"
    with pytest.raises(ProbeError, match="unknown field"):
        label_words(tok, prompt, None, ["yes", "no"])  # a single-text task has no second field
    reader = PromptTokenizer(tok, label_words(tok, prompt, None, ["yes", "no"], pair=True))
    enc = reader(["the cat sat"], ["a cat"], return_offsets_mapping=True)
    ids = enc["input_ids"][0]
    assert ids == reader.encode_prompt("the cat sat", "a cat")[0]
    assert tok.decode(ids, skip_special_tokens=True).startswith("hypothesis : a cat")
    words = [("the cat sat")[s:e] for s, e in enc["offset_mapping"][0] if e > s]
    assert words == ["the", "cat", "sat"]


def test_a_classifier_checkpoint_is_refused_with_label_words(tmp_path, tok):
    from transformers import AutoModelForSequenceClassification

    config = CONFIGS["gpt2"]()
    config.num_labels = 5
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    res = _cli("diagnose", str(tmp_path / "clf"), "--data", "bbc-news", "--reference", "tiny-gpt2", "--prompt",
               "Text: {text}\nLabel:", "--set", f"output_dir={tmp_path}", cwd=tmp_path)
    assert res.returncode == 2 and "with a classification head" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_causal_lm_folder_through_probe_diagnose(tmp_path, tok):
    folder = save_tiny_lm("gpt2", tmp_path / "lm", tok)  # a plain transformers causal LM, its own reference
    res = _cli("diagnose", folder, "--data", "bbc-news", "--reference", folder, "--prompt", "Text: {text}\nLabel:",
               "--label-words", "business,entertainment,politics,sports,tech", "--quiet",
               "--set", f"output_dir={tmp_path}", "--set", "task.train_size=40", "--set", "task.validation_size=20",
               "--set", "task.test_size=60", "--set", "task.max_length=32", "--set", "causal.enabled=false",
               "--set", "analyses.attribution=false", "--set", "analyses.bootstrap_samples=100", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    run = probe.load_run(tmp_path / "diagnose-lm")
    b, zero = run.table("behaviour"), run.table("zero_shot")
    acc = lambda t: float(t[(t.property == "task") & (t.metric == "clean_accuracy")].value.iloc[0])  # noqa: E731
    assert acc(b) == pytest.approx(acc(zero))  # the model is its own reference: zero-shot = "fine-tuned"
