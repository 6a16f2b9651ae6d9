"""Fine-tuning strategies, regularisers, adversarial training and augmentation, on tiny-bert.

Each test trains a 2-layer, 32-wide BERT for one or a few epochs on 48 BBC News texts cut to
32 tokens, and checks a property that a wrong implementation would break.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe.config import FinetuneConfig, load_config
from probe.data.augment import counterfactual_plant, delete_words
from probe.errors import ProbeError
from probe.models.adversarial import fgm_perturbation, pgd_step, project_l2
from probe.models.backbones import build_classifier
from probe.models.batching import predict_logits
from probe.models.strategies import for_analysis, load_trained, prepare_model, save_trained
from probe.tasks.sequence.objective import finetune_classifier as finetune

MAX_LEN = 32
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    from probe.data.sources import load_text_classification
    from probe.models.backbones import load_tokenizer

    texts, labels, classes = load_text_classification("bbc-news", "text", "label")
    idx = np.random.default_rng(0).choice(len(texts), 64, replace=False)
    t = [" ".join(texts[i].split()[:40]) for i in idx]
    y = labels[idx]
    return {"train": (t[:48], y[:48]), "val": (t[48:], y[48:]), "classes": classes,
            "tokenizer": load_tokenizer("tiny-bert")}


def _train(data, cfg: FinetuneConfig, seed: int = 0, val_labels=None, **kw):
    """A prepared tiny-bert trained with ``cfg``; returns (model, log, state before training)."""
    model = prepare_model(build_classifier("tiny-bert", data["classes"], seed), cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (tt, ty), (vt, vy) = data["train"], data["val"]
    log = finetune(model, data["tokenizer"], tt, ty, vt, vy if val_labels is None else val_labels, cfg, MAX_LEN,
                   seed, CPU, progress=False, **kw)
    return model, log, before


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


# --- config -----------------------------------------------------------------------------------

def test_defaults_are_plain_full_finetuning():
    cfg = load_config(None).finetune
    assert cfg.strategy == "full" and cfg.l2_sp == 0 and cfg.dropout is None
    assert cfg.early_stopping_patience is None and cfg.adversarial.method == "none"
    assert cfg.augmentation.word_deletion == 0 and cfg.augmentation.counterfactual_rate == 0
    cfg = load_config(None, ["finetune.strategy=lora", "finetune.lora.rank=4",
                             "finetune.lora.target_modules=[query, key, value]", "finetune.adversarial.method=pgd"])
    assert cfg.finetune.lora.rank == 4 and cfg.finetune.lora.target_modules == ["query", "key", "value"]


@pytest.mark.parametrize("override, expected", [
    ("finetune.strategy=adapter", "finetune.strategy: got 'adapter': Input should be 'full', 'linear_probe', "
                                  "'lp_ft', 'lora' or 'bitfit'"),
    ("finetune.lora.rnk=4", "finetune.lora.rnk: unknown key; allowed keys here: rank, alpha, dropout, target_modules"),
    ("finetune.lora.target_modules=[]", "finetune.lora.target_modules: got []: must be a non-empty list"),
    ("finetune.adversarial.method=fgsm", "finetune.adversarial.method: got 'fgsm': Input should be 'none', 'fgm' or 'pgd'"),
    ("finetune.adversarial.epsilon=0", "finetune.adversarial.epsilon: got 0"),
    ("finetune.augmentation.word_deletion=1.0", "finetune.augmentation.word_deletion: got 1.0"),
    ("finetune.augmentation.typo=0.1", "allowed keys here: word_deletion, counterfactual_rate"),
    ("finetune.dropout=1.5", "finetune.dropout: got 1.5"),
    ("finetune.early_stopping_patience=0", "finetune.early_stopping_patience: got 0"),
    ("finetune.l2_sp=-1", "finetune.l2_sp: got -1"),
])
def test_config_errors_are_one_line(override, expected):
    with pytest.raises(ProbeError) as err:
        load_config(None, [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_misuse_is_refused_in_one_line(data):
    (tt, ty), (vt, vy) = data["train"], data["val"]
    plain = build_classifier("tiny-bert", data["classes"], 0)
    for cfg, val, expected in [
        (FinetuneConfig(strategy="lora"), (vt, vy), "prepare_model"),
        (FinetuneConfig(augmentation={"counterfactual_rate": 0.5}), (vt, vy), "needs planted features"),
        (FinetuneConfig(early_stopping_patience=1), ([], vy[:0]), "needs a validation split"),
    ]:
        with pytest.raises(ProbeError) as err:
            finetune(plain, data["tokenizer"], tt, ty, *val, cfg, MAX_LEN, 0, CPU, progress=False)
        assert expected in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ProbeError, match="target_modules.*linear layers of this model: .*query"):
        prepare_model(plain, FinetuneConfig(strategy="lora", lora={"target_modules": ["nonexistent"]}))


# --- strategies -------------------------------------------------------------------------------

def test_full_trains_every_weight(data):
    model, log, before = _train(data, FinetuneConfig(epochs=1, learning_rate=1e-3))
    assert log.strategy == "full" and log.trainable_parameters == log.total_parameters > 1_000_000
    assert _changed(before, model.state_dict()) == {k for k, _ in model.named_parameters()}


def test_lora_trains_only_adapters_and_head(data):
    cfg = FinetuneConfig(strategy="lora", epochs=1, learning_rate=1e-2, lora={"rank": 4})
    model, log, before = _train(data, cfg)
    changed = _changed(before, model.state_dict())
    frozen = {k for k in before if "lora_" not in k and ".modules_to_save." not in k}
    assert frozen and not (changed & frozen), "base weights must stay bit-identical"
    adapters = {k for k in before if "lora_" in k}
    assert len(adapters) == 2 * 2 * 2 and adapters <= changed  # A and B, query and value, 2 layers
    assert any("classifier.modules_to_save" in k for k in changed)
    n_adapter = sum(before[k].numel() for k in adapters)
    head = sum(before[k].numel() for k in before if ".modules_to_save." in k)
    assert log.trainable_parameters == n_adapter + head
    assert log.trainable_parameters < log.total_parameters / 50
    assert n_adapter == 2 * 2 * (4 * 32 + 32 * 4)


def test_linear_probe_leaves_encoder_bit_identical(data):
    model, log, before = _train(data, FinetuneConfig(strategy="linear_probe", epochs=1))
    changed = _changed(before, model.state_dict())
    assert changed == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    assert log.trainable_parameters == 5 * 32 + 5 + 32 * 32 + 32
    assert log.epochs[0]["phase"] == "lp"


def test_step_losses_are_the_same_whether_or_not_a_callback_reads_them_each_step(data):
    steps = []
    cfg = FinetuneConfig(epochs=2, learning_rate=1e-3)
    torch.manual_seed(0)  # dropout draws from the global generator
    _, quiet, _ = _train(data, cfg)  # no callback: losses stay on the device until the epoch ends
    torch.manual_seed(0)
    _, heard, _ = _train(data, cfg, callback=lambda event, info: steps.append(info["loss"]) if event == "step" else None)
    losses = [e["steps"]["loss"] for e in quiet.epochs]
    assert losses == [e["steps"]["loss"] for e in heard.epochs] and steps == losses[0] + losses[1]
    assert all(type(v) is float for v in steps + losses[0]) and len(set(losses[0])) > 1
    assert [e["train_loss"] for e in quiet.epochs] == [e["train_loss"] for e in heard.epochs]
    assert quiet.train_tokens == heard.train_tokens > 0 and isinstance(quiet.train_tokens, int)


def test_lp_ft_second_phase_starts_from_first_phase_head(data):
    seen = {}

    def spy(event, info):
        if event in ("phase_start", "phase_end"):
            seen[(event, info["phase"])] = {k: v.clone() for k, v in info["model"].state_dict().items()}

    cfg = FinetuneConfig(strategy="lp_ft", lp_epochs=1, epochs=1, learning_rate=1e-3)
    model, log, before = _train(data, cfg, callback=spy)
    head = ("classifier.weight", "classifier.bias", "bert.pooler.dense.weight")
    lp_end, ft_start = seen[("phase_end", "lp")], seen[("phase_start", "ft")]
    for k in head:
        assert torch.equal(lp_end[k], ft_start[k])
        assert not torch.equal(before[k], lp_end[k]), "phase 1 must train the head"
    assert _changed(before, lp_end) == set(head) | {"bert.pooler.dense.bias"}
    encoder = [k for k in before if k.startswith("bert.encoder.")]
    assert all(not torch.equal(before[k], model.state_dict()[k]) for k in encoder), "phase 2 trains everything"
    assert [e["phase"] for e in log.epochs] == ["lp", "ft"] and [e["epoch"] for e in log.epochs] == [1, 2]
    assert [p["trainable"] for p in log.phases] == ["head", "all"]
    assert log.phases[0]["learning_rate"] == cfg.lp_learning_rate


def test_bitfit_changes_only_biases_and_head(data):
    model, log, before = _train(data, FinetuneConfig(strategy="bitfit", epochs=1, learning_rate=1e-3))
    changed = _changed(before, model.state_dict())
    head = {k for k in before if k.startswith("classifier.") or ".pooler." in k}
    assert changed - head and all(k.endswith(".bias") for k in changed - head)
    biases = {k for k in before if k.endswith(".bias") and k not in head}
    assert biases <= changed
    assert log.trainable_parameters == sum(before[k].numel() for k in biases | head)


def test_dropout_override_reaches_every_dropout_module(data):
    model = prepare_model(build_classifier("tiny-bert", data["classes"], 0), FinetuneConfig(dropout=0.0))
    ps = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(ps) >= 6 and set(ps) == {0.0}
    assert model.config.hidden_dropout_prob == model.config.attention_probs_dropout_prob == 0.0
    model.train()  # without dropout, training mode is deterministic
    x = data["tokenizer"](data["val"][0][:2], return_tensors="pt", padding=True, truncation=True, max_length=MAX_LEN)
    assert torch.equal(model(**x).logits, model(**x).logits)


# --- regularisation ---------------------------------------------------------------------------

def _distance(before: dict, model) -> float:
    return sum(float(((p.detach() - before[k]) ** 2).sum()) for k, p in model.named_parameters()
               if k.startswith("bert.encoder."))


def test_l2_sp_penalty_starts_at_zero_grows_and_pulls_towards_pretrained(data):
    penalties = []
    spy = lambda event, info: penalties.append(info["l2_sp"]) if event == "step" else None  # noqa: E731
    cfg = FinetuneConfig(epochs=2, learning_rate=1e-3, l2_sp=1.0)
    _train(data, cfg, callback=spy)
    assert len(penalties) == 6 and penalties[0] == 0.0
    assert 0 < penalties[1] < penalties[-1]
    free, _, before_free = _train(data, FinetuneConfig(epochs=2, learning_rate=1e-3))
    tied, log, before_tied = _train(data, FinetuneConfig(epochs=2, learning_rate=1e-3, l2_sp=1e4))
    assert _distance(before_tied, tied) < 0.5 * _distance(before_free, free)
    assert log.epochs[-1]["l2_sp_penalty"] > 0


def test_early_stopping_stops_and_restores_best_epoch(data):
    snapshots = {}
    spy = (lambda event, info: snapshots.__setitem__(info["epoch"], {k: v.clone() for k, v in
           info["model"].state_dict().items()}) if event == "epoch_end" else None)
    # labels no prediction can match: validation accuracy never improves after epoch 1
    impossible = np.full(len(data["val"][1]), -1)
    cfg = FinetuneConfig(epochs=6, learning_rate=1e-3, early_stopping_patience=2)
    model, log, _ = _train(data, cfg, val_labels=impossible, callback=spy)
    assert len(log.epochs) == 3 and log.best_epoch == 1 and log.stopped_epoch == 3
    final = model.state_dict()
    assert not _changed(snapshots[1], final)
    assert _changed(snapshots[3], final), "the weights of the last epoch must be replaced"

    model, log, _ = _train(data, FinetuneConfig(epochs=2, learning_rate=1e-3, early_stopping_patience=5))
    assert len(log.epochs) == 2 and log.stopped_epoch is None and log.best_epoch in (1, 2)


# --- adversarial training ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_adversarial_perturbations_respect_epsilon(data, method):
    deltas = []
    spy = lambda event, info: deltas.append((info["delta"], info["mask"])) if event == "perturbation" else None  # noqa: E731
    eps = 0.5
    cfg = FinetuneConfig(epochs=1, learning_rate=1e-3,
                         adversarial={"method": method, "epsilon": eps, "steps": 3, "alpha": 0.4})
    model, log, _ = _train(data, cfg, callback=spy)
    assert len(deltas) == 3
    for delta, mask in deltas:
        norms = delta.flatten(1).norm(dim=1)
        assert float(norms.max()) <= eps + 1e-6
        assert torch.all(delta[mask == 0] == 0), "padding is never perturbed"
        if method == "fgm":
            assert torch.allclose(norms, torch.full_like(norms, eps), atol=1e-5)
        else:  # 3 steps of 0.4 overshoot 0.5 unless the gradient turns: most examples end on the sphere
            assert float(norms.max()) > eps - 1e-4 and float(norms.min()) > 0.4 - 1e-5
    assert log.epochs[0]["perturbation_norm_max"] <= eps + 1e-6
    assert not model.get_input_embeddings()._forward_hooks, "the hook must be removed"


def test_perturbation_helpers():
    g = torch.randn(4, 7, 5)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[0, 3:] = 0
    r = fgm_perturbation(g, mask, 2.0)
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((4,), 2.0))
    assert torch.all(r[0, 3:] == 0)
    small = 0.1 * r
    assert torch.equal(project_l2(small, 1.0), small), "inside the ball nothing moves"
    big = project_l2(10 * r, 1.0)
    assert torch.allclose(big.flatten(1).norm(dim=1), torch.ones(4)) and torch.allclose(big, r / 2)
    d = torch.zeros_like(g)
    for _ in range(10):
        d = pgd_step(d, g, mask, 0.3, 1.0)
        assert float(d.flatten(1).norm(dim=1).max()) <= 1.0 + 1e-6


# --- augmentation -----------------------------------------------------------------------------

def test_word_deletion_rate_and_at_least_one_word():
    texts = [" ".join(f"w{i}" for i in range(10))] * 2000
    out = delete_words(texts, 0.3, np.random.default_rng(0))
    kept = np.array([len(t.split()) for t in out])
    assert abs(1 - kept.mean() / 10 - 0.3) < 0.01
    assert all(set(t.split()) <= set(texts[0].split()) for t in out), "deletion only deletes"
    assert all(t.split() == sorted(t.split(), key=lambda w: int(w[1:])) for t in out[:200]), "order is kept"
    single = delete_words(["alpha beta"] * 500, 0.99, np.random.default_rng(1))
    assert all(len(t.split()) >= 1 for t in single)
    assert delete_words(texts[:3], 0.0, np.random.default_rng(0)) == texts[:3]
    fresh = delete_words(texts[:50], 0.3, np.random.default_rng(2))
    assert fresh != out[:50], "a different generator draws different deletions"


def test_counterfactual_plants_other_classes_only_at_the_rate():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    texts = [f"story number {i} about things and more things" for i in range(3000)]
    labels_before = labels.copy()
    out, chosen = counterfactual_plant(texts, labels, [("zebra", 0, 3)], 0.4, np.random.default_rng(1))
    assert np.array_equal(labels, labels_before) and len(out) == len(texts)
    has = np.array(["zebra" in t.split() for t in out])
    assert not has[labels == 0].any(), "the target class is never changed"
    assert abs(has[labels != 0].mean() - 0.4) < 0.03
    assert np.array_equal(has, chosen[0])
    assert all(t.split().index("zebra") <= 3 for t in np.array(out)[has])
    assert all(out[i] == texts[i] for i in np.flatnonzero(~has))
    two, chosen2 = counterfactual_plant(texts, labels, [("zebra", 0, 3), ("kiwi", 1, 0)], 1.0, rng)
    assert chosen2.shape == (2, 3000) and all(t.split()[0] == "kiwi" for t, y in zip(two, labels) if y != 1)


def test_augmentation_is_drawn_afresh_each_epoch(data, monkeypatch):
    import probe.data.augment as augment

    calls = []
    real = augment.counterfactual_plant

    def spy(texts, labels, planted, rate, rng):
        out = real(texts, labels, planted, rate, rng)
        calls.append(out[0])
        return out

    monkeypatch.setattr(augment, "counterfactual_plant", spy)
    cfg = FinetuneConfig(epochs=2, augmentation={"counterfactual_rate": 0.5, "word_deletion": 0.1})
    _train(data, cfg, planted=[("zebra", 0, 5)])
    assert len(calls) == 2 and calls[0] != calls[1]
    ty = data["train"][1]
    for texts in calls:
        has = np.array(["zebra" in t.split() for t in texts])
        assert not has[ty == 0].any() and has[ty != 0].any()


# --- save / load ------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["full", "lora", "bitfit"])
def test_save_load_round_trips_predictions(data, tmp_path, strategy):
    cfg = FinetuneConfig(strategy=strategy, epochs=1, learning_rate=1e-2)
    model, _, _ = _train(data, cfg, seed=3)
    save_trained(model, tmp_path / "m", cfg)
    files = {p.name for p in (tmp_path / "m").iterdir()}
    if strategy == "lora":
        assert {"adapter_model.safetensors", "adapter_config.json"} <= files and "model.safetensors" not in files
    else:
        assert "model.safetensors" in files
    texts = data["val"][0]
    as_trained = predict_logits(model, data["tokenizer"], texts, MAX_LEN, 8, CPU)  # LoRA: adapters not merged yet
    trained = for_analysis(model)
    assert type(trained).__name__ == "BertForSequenceClassification"
    assert hasattr(trained.base_model.encoder, "layer") and not any(
        "lora" in n for n, _ in trained.named_parameters())
    loaded = load_trained(tmp_path / "m", "tiny-bert", data["classes"], cfg, seed=3)
    a = predict_logits(trained, data["tokenizer"], texts, MAX_LEN, 8, CPU)
    b = predict_logits(loaded, data["tokenizer"], texts, MAX_LEN, 8, CPU)
    assert np.abs(as_trained - a).max() <= 1e-5, "for_analysis must not change the model's function"
    assert np.abs(a - b).max() <= 1e-5
    untrained = predict_logits(build_classifier("tiny-bert", data["classes"], 3), data["tokenizer"], texts,
                               MAX_LEN, 8, CPU)
    assert np.abs(a - untrained).max() > 1e-3, "training must have changed the predictions"
    if strategy == "lora":
        with pytest.raises(ProbeError, match="other base weights"):
            load_trained(tmp_path / "m", "tiny-bert", data["classes"], cfg, seed=4)
        with pytest.raises(ProbeError, match="holds a 'lora' model"):
            load_trained(tmp_path / "m", "tiny-bert", data["classes"], FinetuneConfig(), seed=3)
