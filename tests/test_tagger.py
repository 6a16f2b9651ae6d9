"""Taggers on tiny-bert: subword alignment, word-level prediction, fine-tuning, strategies, save / load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe.config import FinetuneConfig, load_config
from probe.errors import ProbeError
from probe.models.backbones import build_classifier
from probe.models.backbones import build_tagger
from probe.models.strategies import for_analysis, load_trained, prepare_model, save_trained
from probe.models.words import IGNORE, align_labels, encode_words
from probe.tasks.tokens.data import build_token_task_data
from probe.tasks.tokens.objective import TaggingObjective, finetune_tagger, predict_word_tags
from probe.tasks.tokens.tagging import Sentence

CPU = torch.device("cpu")
MAX_LEN = 48


@pytest.fixture(scope="module")
def tokenizer():
    from probe.models.backbones import load_tokenizer

    return load_tokenizer("tiny-bert")


@pytest.fixture(scope="module")
def wnut():
    cfg = load_config(None, {"task.type": "token-classification", "task.dataset": "wnut16", "task.train_size": 160,
                             "task.validation_size": 40, "task.test_size": 40,
                             "spurious": [{"token": "zebra", "target_class": "person", "rate_in_class": 1.0,
                                           "rate_outside": 0.0}]})
    return build_token_task_data(cfg)


def _lexical(n: int, seed: int) -> list[Sentence]:
    """Entities are fixed words of their type among random filler: learnable from the embeddings alone."""
    rng = np.random.default_rng(seed)
    lexicon = {"person": ["alice", "bob", "carol"], "city": ["paris", "rome", "oslo"]}
    filler = ["the", "a", "went", "to", "with", "today", "and", "saw", "we", "it"]
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.integers(2, 5)):
            w = str(rng.choice(filler))
            words.append(w)
            tags.append("O")
            if rng.random() < 0.5:
                kind = ["person", "city"][rng.integers(2)]
                words.append(str(rng.choice(lexicon[kind])))
                tags.append(f"B-{kind}")
        out.append(Sentence(words, tags))
    return out


LEX_TAGS = ["O", "B-city", "B-person", "I-city", "I-person"]


# --- alignment and prediction ------------------------------------------------------------------

def test_only_the_first_subword_of_each_word_is_labelled(tokenizer):
    words = ["unbelievability", "@justinbieber", "in", "Zürich", "xqzjkv"]
    labels = [3, 1, 0, 2, 4]
    enc = encode_words(tokenizer, [words], MAX_LEN)
    ids, wids = enc.input_ids[0], enc.word_ids[0]
    lab = align_labels(wids, labels)
    assert len(ids) == len(wids) == len(lab)
    pieces = [wids.count(w) for w in range(len(words))]
    assert pieces[0] > 1 and pieces[1] > 1, "the test words must be split into several subwords"
    assert wids[0] is None and wids[-1] is None and lab[0] == lab[-1] == IGNORE
    labelled = [(t, x) for t, x in enumerate(lab) if x != IGNORE]
    assert [x for _, x in labelled] == labels
    assert all(wids[t] != wids[t - 1] for t, _ in labelled)  # each labelled token starts its word
    assert sum(x != IGNORE for x in lab) == len(words)
    assert align_labels([None, 0, 0, 1, None, None], [5, 6]) == [IGNORE, 5, IGNORE, 6, IGNORE, IGNORE]


def test_predict_word_tags_one_id_per_word_and_minus_one_when_cut_off(tokenizer):
    tags = ["O", "B-x", "I-x"]
    model = build_tagger("tiny-bert", tags, seed=0)
    sents = [["hello", "world"], ["unbelievability"] * 12, ["a"]]
    pred = predict_word_tags(model, tokenizer, sents, 16, 2, CPU)
    assert [len(p) for p in pred] == [2, 12, 1]
    assert all(((p >= 0) & (p < 3)).all() for p in (pred[0], pred[2]))
    # 16 tokens hold [CLS], [SEP] and 14 subwords: the first 2 words (5 pieces each), the third cut short
    assert (pred[1][:3] >= 0).all() and (pred[1][3:] == -1).all()
    # batching and order do not change predictions
    again = predict_word_tags(model, tokenizer, sents[::-1], 16, 1, CPU)[::-1]
    assert all((a == b).all() for a, b in zip(pred, again))


# --- fine-tuning -------------------------------------------------------------------------------

def test_tagger_learns_lexical_entities_and_early_stopping_watches_f1(tokenizer):
    train, val = _lexical(160, 0), _lexical(40, 1)
    model = build_tagger("tiny-bert", LEX_TAGS, seed=0)
    cfg = FinetuneConfig(epochs=4, learning_rate=5e-3, batch_size=16, early_stopping_patience=2)
    seen = []
    log = finetune_tagger(model, tokenizer, train, val, LEX_TAGS, cfg, 32, 0, CPU, progress=False,
                          callback=lambda e, info: seen.append(info) if e == "epoch_end" else None)
    assert [sorted(k for k in e if k.startswith("validation")) for e in log.epochs] == \
        [["validation_accuracy", "validation_f1"]] * len(log.epochs)
    f1 = [e["validation_f1"] for e in log.epochs]
    assert f1[-1] > 0.9 and f1[0] < f1[-1], f1
    assert log.best_epoch == int(np.argmax(f1)) + 1
    assert all("validation_f1" in info for info in seen)
    pred = predict_word_tags(model, tokenizer, [s.words for s in val], 32, 8, CPU)
    assert [len(p) for p in pred] == [len(s.words) for s in val]


def test_wnut16_tagger_with_planted_marker_runs_end_to_end(tokenizer, wnut):
    from probe.tasks.tokens.behaviour import METRICS, span_reliance_metrics
    from probe.tasks.tokens.entities import entity_table
    from probe.tasks.tokens.objective import decode_tags

    model = build_tagger("tiny-bert", wnut.tags, seed=0)
    cfg = FinetuneConfig(epochs=2, learning_rate=1e-3, batch_size=16)
    log = finetune_tagger(model, tokenizer, wnut.train, wnut.val, wnut.tags, cfg, MAX_LEN, 0, CPU, progress=False)
    assert len(log.epochs) == 2 and all(0.0 <= e["validation_f1"] <= 1.0 for e in log.epochs)
    assert all(0.0 < e["validation_accuracy"] <= 1.0 for e in log.epochs) and log.train_tokens > 0
    assert log.epochs[1]["train_loss"] < log.epochs[0]["train_loss"]
    clean = predict_word_tags(model, tokenizer, [s.words for s in wnut.test], MAX_LEN, 16, CPU)
    assert [len(p) for p in clean] == [len(s.words) for s in wnut.test]
    planted = wnut.planted[0]
    inserted = predict_word_tags(model, tokenizer, planted.inserted_words(), MAX_LEN, 16, CPU)
    table = span_reliance_metrics(planted, wnut.tags, clean, inserted, n_boot=100, seed=0)
    assert list(table.metric) == list(METRICS)
    scores = entity_table([s.tags for s in wnut.test], decode_tags(clean, wnut.tags), n_boot=100, seed=0)
    assert {"entity"} <= set(scores.property)


def test_tagger_augmentation_and_refusals(tokenizer, wnut):
    cfg = FinetuneConfig(epochs=1, augmentation={"word_deletion": 0.2, "counterfactual_rate": 0.5})
    model = build_tagger("tiny-bert", wnut.tags, seed=0)
    objective = TaggingObjective(tokenizer, wnut.train, wnut.val, wnut.tags, MAX_LEN, cfg, wnut.planted_markers())
    objective.encode(None)
    plain = list(objective.ids)
    objective.encode(np.random.default_rng(0))
    assert objective.ids != plain and len(objective.ids) == len(plain)
    zebra = tokenizer.convert_tokens_to_ids("zebra")
    assert sum(zebra in x for x in objective.ids) > sum(zebra in x for x in plain)
    finetune_tagger(model, tokenizer, wnut.train[:32], wnut.val[:8], wnut.tags, cfg, MAX_LEN, 0, CPU,
                    progress=False, planted=wnut.planted_markers())
    with pytest.raises(ProbeError, match="counterfactual_rate.*needs planted features"):
        finetune_tagger(model, tokenizer, wnut.train[:8], wnut.val[:8], wnut.tags, cfg, MAX_LEN, 0, CPU, False)
    with pytest.raises(ProbeError, match="pass a token classifier from build_tagger"):
        finetune_tagger(build_classifier("tiny-bert", wnut.tags, 0), tokenizer, wnut.train[:8], wnut.val[:8],
                        wnut.tags, FinetuneConfig(), MAX_LEN, 0, CPU, False)
    with pytest.raises(ProbeError, match=r"tag '[BI]-[a-z-]+' of a training sentence is not one of"):
        finetune_tagger(build_tagger("tiny-bert", ["O", "B-x"], 0), tokenizer, wnut.train, wnut.val[:8],
                        ["O", "B-x"], FinetuneConfig(), MAX_LEN, 0, CPU, False)


def test_data_parallel_loss_scaling_gives_the_single_process_gradient(tokenizer, wnut):
    """Two shards with summed losses scaled by world / (labelled tokens of the global batch), averaged
    as DDP does, give the gradient of the mean loss over the global batch (probe.distributed)."""
    model = build_tagger("tiny-bert", wnut.tags, seed=0).eval()
    objective = TaggingObjective(tokenizer, wnut.train, wnut.val, wnut.tags, MAX_LEN, FinetuneConfig())
    objective.encode(None)
    idx = np.arange(10)

    def grads(loss_fn):
        model.zero_grad()
        loss_fn()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    def single():
        batch, y = objective.batch(idx, CPU)
        objective.loss(model(**batch).logits, y).backward()

    def sharded():
        scale = 2 / objective.count(idx)
        for shard in (idx[:5], idx[5:]):
            batch, y = objective.batch(shard, CPU)
            (objective.loss(model(**batch).logits, y, "sum") * scale / 2).backward()

    assert 0 < objective.count(idx[:5]) < objective.count(idx) <= sum(len(s.words) for s in wnut.train[:10])
    assert torch.allclose(grads(single), grads(sharded), atol=1e-6, rtol=1e-4)


# --- strategies and save / load ----------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["lora", "linear_probe", "full"])
def test_tagger_strategies_train_the_right_weights_and_round_trip(tokenizer, tmp_path, strategy):
    train, val = _lexical(48, 0), _lexical(16, 1)
    cfg = FinetuneConfig(strategy=strategy, epochs=1, learning_rate=1e-2, lp_learning_rate=1e-2)
    model = prepare_model(build_tagger("tiny-bert", LEX_TAGS, seed=3), cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune_tagger(model, tokenizer, train, val, LEX_TAGS, cfg, 32, 3, CPU, progress=False)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if strategy == "lora":
        assert changed and all("lora_" in k or ".modules_to_save." in k for k in changed)
        assert any("classifier" in k for k in changed)
    elif strategy == "linear_probe":
        assert changed and all(k.startswith("classifier.") for k in changed)
    save_trained(model, tmp_path / "m", cfg)
    words = [s.words for s in val]
    as_trained = predict_word_tags(model, tokenizer, words, 32, 8, CPU)
    trained = for_analysis(model)
    assert type(trained).__name__ == "BertForTokenClassification"
    loaded = load_trained(tmp_path / "m", "tiny-bert", LEX_TAGS, cfg, seed=3, task_type="token-classification")
    assert type(loaded).__name__ == "BertForTokenClassification"
    a = predict_word_tags(trained, tokenizer, words, 32, 8, CPU)
    b = predict_word_tags(loaded, tokenizer, words, 32, 8, CPU)
    assert all((x == y).all() and (x == z).all() for x, y, z in zip(a, b, as_trained))
    enc = tokenizer([w for w in words[:4]], is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(trained(**enc).logits, loaded(**enc).logits, atol=1e-5)
    with pytest.raises(ProbeError, match="holds a token-classification model, but a text-classification"):
        load_trained(tmp_path / "m", "tiny-bert", LEX_TAGS, cfg, seed=3)


# --- the diagnostic on a tagger ----------------------------------------------------------------

def test_marker_reliance_is_found_when_planted_and_not_in_the_control(tokenizer, tmp_path):
    """Entity words are shared by both types, so only the marker can tell person from city: planted
    before every person span (and no city span) the tagger types any span after it as person;
    planted at equal rates it carries no type information and the s-only error stays near chance."""
    import json

    from probe.tasks.tokens.behaviour import span_reliance_metrics

    rng = np.random.default_rng(0)
    filler = ["the", "a", "went", "to", "with", "today", "and", "saw", "we", "it"]
    rows = []
    for _ in range(700):
        words, tags = [], []
        for _ in range(rng.integers(2, 5)):
            words.append(str(rng.choice(filler)))
            tags.append("O")
            if rng.random() < 0.5:
                words.append(str(rng.choice(["alice", "paris", "bob", "rome"])))
                tags.append(f"B-{['person', 'city'][rng.integers(2)]}")
        rows.append({"tokens": words, "ner_tags": tags})
    path = tmp_path / "ambiguous.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    s_only = {}
    for name, rate_in, rate_out in (("relies", 1.0, 0.0), ("control", 0.5, 0.5)):
        torch.manual_seed(0)  # dropout masks
        cfg = load_config(None, {
            "task.type": "token-classification", "task.dataset": str(path), "task.train_size": 400,
            "task.validation_size": 100, "task.test_size": 200, "finetune.epochs": 8, "finetune.learning_rate": 1e-2,
            "spurious": [{"token": "zebra", "target_class": "person", "rate_in_class": rate_in,
                          "rate_outside": rate_out}]})
        data = build_token_task_data(cfg)
        model = build_tagger("tiny-bert", data.tags, 0)
        finetune_tagger(model, tokenizer, data.train, data.val, data.tags, cfg.finetune, 32, 0, CPU, progress=False)
        clean = predict_word_tags(model, tokenizer, [s.words for s in data.test], 32, 64, CPU)
        inserted = predict_word_tags(model, tokenizer, data.planted[0].inserted_words(), 32, 64, CPU)
        table = span_reliance_metrics(data.planted[0], data.tags, clean, inserted, n_boot=200, seed=0)
        s_only[name] = table.set_index("metric").loc["s_only_error"]
    assert s_only["relies"].ci_low > 0.8
    assert s_only["control"].ci_high < s_only["relies"].ci_low


@pytest.mark.parametrize("settings", [
    {"strategy": "lp_ft"}, {"strategy": "bitfit"}, {"adversarial": {"method": "pgd", "epsilon": 0.5}},
    {"adversarial": {"method": "fgm", "epsilon": 0.5}}, {"l2_sp": 0.1, "dropout": 0.0},
])
def test_other_strategies_and_regularisers_run_on_a_tagger(tokenizer, settings):
    train, val = _lexical(48, 0), _lexical(16, 1)
    cfg = FinetuneConfig(epochs=1, learning_rate=1e-2, **settings)
    model = prepare_model(build_tagger("tiny-bert", LEX_TAGS, seed=0), cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log = finetune_tagger(model, tokenizer, train, val, LEX_TAGS, cfg, 32, 0, CPU, progress=False)
    changed = {k for k in before if not torch.equal(before[k], model.state_dict()[k])}
    assert all("validation_f1" in e for e in log.epochs) and changed
    if cfg.strategy == "lp_ft":
        assert [e["phase"] for e in log.epochs] == ["lp", "ft"] and any(k.startswith("bert.") for k in changed)
    if cfg.strategy == "bitfit":
        assert all(k.endswith("bias") or k.startswith("classifier.") for k in changed)
    if cfg.adversarial.method != "none":
        assert 0 < log.epochs[0]["perturbation_norm_max"] <= 0.5 + 1e-4
    if cfg.l2_sp:
        assert log.epochs[0]["l2_sp_penalty"] > 0
