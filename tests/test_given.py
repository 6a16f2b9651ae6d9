"""Diagnosing a model fine-tuned elsewhere (``model.finetuned``, ``probe diagnose``; issue #14): tiny random
classifiers of six architectures saved to disk, a LoRA adapter folder, models probe saved itself (which
must give back the tables of the run that trained them), and the inputs that are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import (AutoModel, AutoModelForSequenceClassification, BertConfig, DistilBertConfig, GPT2Config,
                          LlamaConfig, Qwen2Config, RobertaConfig)

import probe
from probe.errors import ProbeError
from tests.conftest import tiny_overrides

V = 30522  # the minilm tokenizer's vocabulary
SMALL = {"task.train_size": 30, "task.validation_size": 30, "task.test_size": 60, "task.max_length": 24,
         "analyses.bootstrap_samples": 100, "analyses.attribution_examples": 2, "analyses.ig_steps": 4,
         "analyses.invariance_examples": 20, "analyses.attribution_methods": ["integrated_gradients", "occlusion"],
         "analyses.faithfulness_methods": ["integrated_gradients"], "causal.layers": [0, 2], "causal.top_heads": 1,
         "spurious": [{"token": "zebra", "target_class": "business"}], "causal.enabled": True}
CLASSES = ["business", "entertainment", "politics", "sports", "tech"]
CONFIGS = {
    "bert": lambda: BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32),
    "roberta": lambda: RobertaConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, pad_token_id=0, max_position_embeddings=64),
    "distilbert": lambda: DistilBertConfig(vocab_size=V, dim=16, n_layers=2, n_heads=2, hidden_dim=32),
    "gpt2": lambda: GPT2Config(vocab_size=V, n_embd=16, n_layer=2, n_head=2, n_positions=64, pad_token_id=0,
                               bos_token_id=101, eos_token_id=102),
    "llama": lambda: LlamaConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=32, pad_token_id=0),
    "qwen2": lambda: Qwen2Config(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=32, pad_token_id=0),
}


def _run(tmp_path, name, **more):
    over = {**tiny_overrides(tmp_path, name), **SMALL, **more}
    return probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})


def save_family(family: str, root, label_order: list[str], seed: int = 0):
    """A random reference (AutoModel) and a 'fine-tuned' classifier: the reference plus noise and a head
    whose outputs are named in ``label_order`` (not the dataset's order), both with the minilm tokenizer."""
    from probe.models.backbones import load_tokenizer

    tok = load_tokenizer("minilm")
    torch.manual_seed(seed)
    ref = AutoModel.from_config(CONFIGS[family]())
    config = CONFIGS[family]()
    config.num_labels = len(label_order)
    config.id2label = dict(enumerate(label_order))
    config.label2id = {c: i for i, c in enumerate(label_order)}
    clf = AutoModelForSequenceClassification.from_config(config)
    clf.base_model.load_state_dict(ref.state_dict(), strict=False)  # a classifier may drop the pooler
    with torch.no_grad():
        for p in clf.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    ref_dir, clf_dir = root / f"{family}-ref", root / f"{family}-clf"
    ref.save_pretrained(ref_dir)
    tok.save_pretrained(ref_dir)
    clf.save_pretrained(clf_dir)
    tok.save_pretrained(clf_dir)
    return ref_dir, clf_dir, clf.eval()


@pytest.mark.parametrize("family", list(CONFIGS))
def test_a_saved_classifier_of_each_family_is_diagnosed_with_every_analysis(tmp_path, family):
    order = ["sports", "tech", "business", "politics", "entertainment"]  # the checkpoint's ids, not the dataset's
    ref_dir, clf_dir, clf = save_family(family, tmp_path, order)
    # transformers picks a tokenizer class by the folder's model type: name the one these tiny models use
    run = _run(tmp_path, family, **{"model.finetuned": str(clf_dir), "model.backbone": str(ref_dir),
                                    "model.tokenizer": "minilm"})
    s = run.summary
    assert s["status"] == "complete" and s["model"] == {"backbone": str(ref_dir), "finetuned": str(clf_dir)}
    assert {"behaviour", "probing", "mdl", "cka", "attribution", "erasure", "ablation"} <= set(run.tables)
    assert "training" not in run.tables and s["training"]["strategy"] == "given"
    # the predictions are the checkpoint's own, read through its id2label in the dataset's class order
    from probe.config import load_config
    from probe.models.backbones import load_tokenizer
    from probe.models.batching import predict_logits
    from probe.tasks.sequence.data import build_task_data

    data = build_task_data(load_config(run.path / "config.yaml"))
    assert data.classes == CLASSES
    logits = predict_logits(clf, load_tokenizer("minilm"), data.test_texts, 24, 16, "cpu")
    want = np.array([CLASSES.index(order[i]) for i in logits.argmax(1)])
    pred = run.table("predictions")
    got = pred[pred.partition == "clean"].sort_values("example").prediction.to_numpy()
    assert np.array_equal(got, want)
    assert set(run.table("ablation").intervention) >= {"none", "swap_pretrained", "reinit", "head"}


def test_a_lora_adapter_folder_is_diagnosed_on_its_base(tmp_path):
    from peft import LoraConfig, get_peft_model

    ref_dir, clf_dir, _ = save_family("bert", tmp_path, CLASSES)
    base = AutoModelForSequenceClassification.from_pretrained(clf_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # a non-trivial adapter
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(clf_dir)
    run = _run(tmp_path, "adapter-run", **{"model.finetuned": str(adapter_dir), "model.backbone": str(ref_dir),
                                       "causal.enabled": False, "analyses.attribution": False})
    assert run.summary["status"] == "complete" and run.summary["task"]["n_test"] == 60
    merged = peft_model.merge_and_unload().eval()
    from probe.models.backbones import load_tokenizer
    from probe.models.batching import predict_logits

    texts = [t for t in probe.load_run(run.path).table("predictions").example.unique()]
    assert len(texts) == 60
    clean = run.table("predictions")
    from probe.config import load_config
    from probe.tasks.sequence.data import build_task_data

    data = build_task_data(load_config(run.path / "config.yaml"))
    want = predict_logits(merged, load_tokenizer("minilm"), data.test_texts, 24, 16, "cpu").argmax(1)
    assert np.array_equal(clean[clean.partition == "clean"].sort_values("example").prediction.to_numpy(), want)


@pytest.mark.parametrize("backbone,strategy", [("tiny-bert", "full"), ("tiny-bert", "lora"), ("tiny-gpt2", "full")])
def test_a_model_probe_saved_gives_back_the_tables_of_its_run(tmp_path, backbone, strategy):
    more = {"model.backbone": backbone, "finetune.strategy": strategy, "causal.enabled": False,
            "analyses.attribution": False, "analyses.invariance": False, "analyses.mdl": False}
    trained = _run(tmp_path, "trained", **more)
    saved = json.loads((trained.path / "models" / "finetuned" / "strategy.json").read_text())
    assert saved["base"] == backbone and saved["labels"] == CLASSES
    given = _run(tmp_path, "given", **{**more, "model.backbone": None,
                                       "model.finetuned": str(trained.path / "models" / "finetuned")})
    assert given.summary["model"]["backbone"] == backbone  # the reference recorded at training
    for table in ("behaviour", "probing", "cka", "predictions"):
        assert trained.table(table).equals(given.table(table)), table


def test_probe_diagnose_end_to_end(tmp_path, capsys):
    from probe.cli import main

    ref_dir, clf_dir, _ = save_family("gpt2", tmp_path, CLASSES)
    code = main(["diagnose", str(clf_dir), "--data", "bbc-news", "--reference", str(ref_dir), "--quiet",
                 "--set", f"output_dir={tmp_path}", "--set", "task.test_size=40", "--set", "task.train_size=20",
                 "--set", "task.validation_size=20", "--set", "task.max_length=24", "--set", "causal.enabled=false",
                 "--set", "analyses.attribution=false", "--set", "analyses.bootstrap_samples=100"])
    assert code == 0
    out = capsys.readouterr().out
    assert "No spurious features were configured" in out and "diagnose-gpt2-clf" in out
    run = probe.load_run(tmp_path / "diagnose-gpt2-clf")
    assert run.complete and run.summary["model"]["finetuned"] == str(clf_dir)


def _refused(tmp_path, **more) -> str:
    with pytest.raises(ProbeError) as e:
        _run(tmp_path, "bad", **more)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_checkpoints_are_refused_in_one_line_before_any_work(tmp_path):
    ref_dir, clf_dir, _ = save_family("bert", tmp_path, CLASSES)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a model folder" in _refused(tmp_path, **{"model.finetuned": str(empty), "model.backbone": "tiny-bert"})
    adapter = tmp_path / "orphan"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "SEQ_CLS"}))
    assert "names no base model" in _refused(tmp_path, **{"model.finetuned": str(adapter), "model.backbone": "tiny-bert",
                                                          "causal.enabled": False})
    three = tmp_path / "three"
    _, three_dir, _ = save_family("bert", three.parent, ["a", "b", "c"], seed=1)
    msg = _refused(tmp_path, **{"model.finetuned": str(three_dir), "model.backbone": str(ref_dir)})
    assert "['a', 'b', 'c']" in msg and "business" in msg  # both label lists
    gpt_ref, _, _ = save_family("gpt2", tmp_path, CLASSES)
    assert "causal.layer_swap" in _refused(tmp_path, **{"model.finetuned": str(clf_dir), "model.backbone": str(gpt_ref)})
    assert "does not record" in _refused(tmp_path, **{"model.finetuned": str(clf_dir), "model.backbone": None})
    other_vocab = tmp_path / "other-vocab"
    clf = AutoModelForSequenceClassification.from_pretrained(clf_dir)
    clf.save_pretrained(other_vocab)
    _tiny_bpe_tokenizer().save_pretrained(other_vocab)
    assert "another vocabulary" in _refused(tmp_path, **{"model.finetuned": str(other_vocab), "model.backbone": str(ref_dir)})
    assert "seeds" in _refused(tmp_path, **{"model.finetuned": str(clf_dir), "seeds": [0, 1]})
    assert "finetune.augmentation" in _refused(tmp_path, **{"model.finetuned": str(clf_dir),
                                                            "finetune.augmentation.word_deletion": 0.1})
    assert "causal decoder" in _refused(tmp_path, **{"task.type": "token-classification", "task.dataset": "wnut16",
                                                      "spurious": [], "model.backbone": "tiny-gpt2"})


def _tiny_bpe_tokenizer():
    """A byte-level BPE tokenizer trained on a few sentences (offline): another vocabulary."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the cat sat on the mat", "markets fell sharply"] * 20, vocab_size=300,
                            special_tokens=["<pad>", "<eos>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")
