"""MLM pretraining stage: corpus loading, artifact planting, blocks, masking, training, saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probe.config import ComputeConfig, PretrainArtifact, PretrainConfig, ScratchSize
from probe.data.corpus import load_corpus, plant_artifact
from probe.errors import ProbeError

SIZE = ScratchSize(layers=2, hidden=64, heads=2, intermediate=128)


@pytest.fixture(scope="module")
def tokenizer():
    from probe.models.backbones import load_tokenizer

    return load_tokenizer("tiny-bert")


def _grammar(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    subjects = ["the cat", "the dog", "a bird", "my friend", "the teacher"]
    verbs = ["eats", "sees", "likes", "finds"]
    objects = ["the apple", "a ball", "the book", "some bread"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} ." for _ in range(n)]


# --- training ----------------------------------------------------------------------------------

def test_scratch_mlm_learns_a_small_grammar(tokenizer):
    """From ln(vocabulary) ~ 10.3 to about the corpus's unigram entropy (~2.7 nats over 18 words); using
    the context (held-out loss ~1.2) takes ~1000 steps at this size, too long for a test."""
    from probe.models.lm import build_lm
    from probe.models.pretrain import pretrain_lm

    texts = _grammar(200)
    cfg = PretrainConfig(init="scratch", size=SIZE, steps=60, batch_size=16, max_length=32,
                         learning_rate=3e-3, warmup_ratio=0.1)
    model = build_lm("tiny-bert", cfg, tokenizer, seed=0)
    log = pretrain_lm(model, tokenizer, texts, cfg, ComputeConfig(), seed=0, device="cpu",
                       progress=False, held_out_fraction=0.2)
    counts = np.unique(sum(tokenizer(texts, add_special_tokens=False)["input_ids"], []), return_counts=True)[1]
    unigram_entropy = float(-(counts / counts.sum() * np.log(counts / counts.sum())).sum())
    assert log.held_out_blocks >= 5 and log.blocks + log.held_out_blocks == 46
    assert log.initial_loss > 9.5
    assert log.final_loss < 0.6 * log.initial_loss, (log.initial_loss, log.final_loss)
    assert log.final_loss < unigram_entropy + 0.25, (log.final_loss, unigram_entropy)
    assert log.tokens == 60 * 16 * 32 and log.tokens_per_second > 0 and log.mfu is None
    assert [s for s, _ in log.losses] == list(range(10, 61, 10))
    assert log.losses[-1][1] < log.losses[0][1]
    assert json.loads(json.dumps(log.to_dict()))["precision"] == "fp32"


def test_scratch_clm_learns_the_grammar_from_left_context(tokenizer):
    """Causal LM: every position predicts the next token. On the grammar "S V O ." a decoder that reads
    its left context beats the unigram entropy (the next word's category is fixed by position)."""
    from probe.models.lm import NextToken, build_lm
    from probe.models.pretrain import pretrain_lm

    texts = _grammar(200)
    cfg = PretrainConfig(objective="clm", init="scratch", size=SIZE, steps=60, batch_size=16, max_length=32,
                         learning_rate=3e-3, warmup_ratio=0.1)
    model = build_lm("tiny-bert", cfg, tokenizer, seed=0)
    assert type(model).__name__ == "GPT2LMHeadModel" and model.config.vocab_size == len(tokenizer)
    log = pretrain_lm(model, tokenizer, texts, cfg, ComputeConfig(), seed=0, device="cpu", progress=False,
                      held_out_fraction=0.2)
    counts = np.unique(sum(tokenizer(texts, add_special_tokens=False)["input_ids"], []), return_counts=True)[1]
    unigram_entropy = float(-(counts / counts.sum() * np.log(counts / counts.sum())).sum())
    assert log.initial_loss > 9.5 and log.final_loss < unigram_entropy, (log.initial_loss, log.final_loss)
    batch = NextToken(tokenizer)([[101, 5, 6, 102], [101, 7, 102]])
    assert batch["labels"].tolist() == [[5, 6, 102, -100], [7, 102, -100, -100]]  # next token; none after the last
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_the_wrong_objective_for_a_backbone_is_refused(tokenizer):
    from probe.models.lm import build_lm

    with pytest.raises(ProbeError, match="pretrain.objective"):
        build_lm("tiny-gpt2", PretrainConfig(objective="mlm"), tokenizer, seed=0)
    with pytest.raises(ProbeError, match="pretrain.objective"):
        build_lm("tiny-bert", PretrainConfig(objective="clm"), tokenizer, seed=0)


def test_pretraining_is_repeatable_and_independent_of_workers(tokenizer):
    from probe.models.lm import build_lm
    from probe.models.pretrain import pretrain_lm

    cfg = PretrainConfig(init="scratch", size=SIZE, steps=4, batch_size=4, max_length=16, packing=False)
    runs = []
    for workers in (0, 1):
        model = build_lm("tiny-bert", cfg, tokenizer, seed=3)
        pretrain_lm(model, tokenizer, _grammar(30), cfg, ComputeConfig(dataloader_workers=workers), seed=3,
                     device="cpu", progress=False)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    state = torch.random.get_rng_state()
    build_lm("tiny-bert", cfg, tokenizer, seed=3)
    assert torch.equal(state, torch.random.get_rng_state()), "the global generator was touched"


def test_sharded_loss_gives_the_single_process_gradient(tokenizer):
    """Each process's loss sum(CE on its shard) / masked tokens in the global batch * world: the mean
    of the shard gradients (what DDP applies) equals the gradient of the global mean loss."""
    from probe.models.lm import LabelledPositionsLoss, Masker, build_lm
    from probe.models.pretrain import _StepBatches, make_blocks

    cfg = PretrainConfig(init="scratch", size=SIZE, max_length=16)
    model = build_lm("tiny-bert", cfg, tokenizer, seed=0).eval()
    loss_fn = LabelledPositionsLoss(model)
    blocks = make_blocks(tokenizer, _grammar(40), 16, packing=False)
    masker = Masker(tokenizer, 0.3)

    def grad(world: int) -> torch.Tensor:
        total = 0
        for rank in range(world):
            item = _StepBatches(blocks, masker, 1, 7, 5, False, rank, world)[0]
            model.zero_grad()
            (loss_fn(**item["batch"]) * world / item["count"] * item["weight"]).backward()
            total = total + model.bert.embeddings.word_embeddings.weight.grad.clone() / world
        return total

    assert torch.allclose(grad(1), grad(3), atol=1e-6)
    # the head applied at the chosen positions only gives the full model's masked-LM loss
    batch = masker(blocks[:8], 0)
    with torch.no_grad():
        full = model(**batch).loss
        assert torch.allclose(loss_fn(**batch) / (batch["labels"] != -100).sum(), full, atol=1e-5)


# --- blocks and masking ------------------------------------------------------------------------

def test_packed_blocks_frame_the_token_stream(tokenizer):
    from probe.models.pretrain import make_blocks

    texts = _grammar(50)
    blocks = make_blocks(tokenizer, texts, 24, packing=True)
    sep = tokenizer.sep_token_id
    stream = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream += ([sep] if stream else []) + ids
    assert len(blocks) == len(stream) // 22 > 1
    assert all(len(b) == 24 and b[0] == tokenizer.cls_token_id and b[-1] == sep for b in blocks)
    assert sum((b[1:-1] for b in blocks), []) == stream[: 22 * len(blocks)]
    single = make_blocks(tokenizer, ["a b c"], 24, packing=True)
    assert len(single) == 1 and single[0][0] == tokenizer.cls_token_id and len(single[0]) == 5
    rows = make_blocks(tokenizer, texts[:3] + [" ".join(["word"] * 40)], 24, packing=False)
    assert len(rows) == 4 and len(rows[-1]) == 24 and rows[0] == tokenizer(texts[0])["input_ids"]


def test_masking_follows_80_10_10_and_spares_special_tokens(tokenizer):
    from probe.models.lm import mask_blocks

    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 64, size=3000)
    blocks = [[tokenizer.cls_token_id, *rng.integers(1000, 30000, size=n - 2).tolist(), tokenizer.sep_token_id]
              for n in lengths]
    out = mask_blocks(tokenizer, blocks, 0.15, seed=1)
    original = torch.full_like(out["input_ids"], tokenizer.pad_token_id)
    for i, b in enumerate(blocks):
        original[i, : len(b)] = torch.tensor(b)
    chosen = out["labels"] != -100
    special = torch.isin(original, torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id,
                                                  tokenizer.pad_token_id]))
    maskable = int((~special).sum())
    assert maskable >= 50_000
    assert not (chosen & special).any()
    assert torch.equal(out["labels"][chosen], original[chosen])
    assert torch.equal(out["input_ids"][~chosen], original[~chosen])
    assert torch.equal(out["attention_mask"].sum(1), torch.as_tensor(lengths))
    n = int(chosen.sum())
    assert abs(n / maskable - 0.15) < 0.005
    as_mask = int((out["input_ids"][chosen] == tokenizer.mask_token_id).sum()) / n
    unchanged = int((out["input_ids"][chosen] == original[chosen]).sum()) / n
    assert abs(as_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01 and abs(1 - as_mask - unchanged - 0.1) < 0.01
    again = mask_blocks(tokenizer, blocks, 0.15, seed=1)
    assert all(torch.equal(out[k], again[k]) for k in out)
    assert not torch.equal(out["labels"], mask_blocks(tokenizer, blocks, 0.15, seed=2)["labels"])


# --- saving ------------------------------------------------------------------------------------

def test_saved_encoder_loads_with_the_auto_classes(tokenizer, tmp_path):
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

    from probe.models.lm import build_lm
    from probe.models.pretrain import save_pretrained_encoder

    cfg = PretrainConfig(init="scratch", size=SIZE)
    model = build_lm("tiny-bert", cfg, tokenizer, seed=0).eval()
    with torch.no_grad():  # move away from the initialisation so a fresh model cannot pass
        for p in model.parameters():
            p.add_(0.01)
    path = save_pretrained_encoder(model, tokenizer, tmp_path / "pretrained")
    assert any(path.glob("*.safetensors")) and not (tmp_path / "pretrained.tmp").exists()
    batch = tokenizer(["the cat sees a ball ."], return_tensors="pt")
    with torch.no_grad():
        expected = model.bert(**batch).last_hidden_state
        loaded = AutoModel.from_pretrained(path).eval()
        assert torch.equal(loaded(**batch).last_hidden_state, expected)
    assert AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)(**batch).logits.shape == (1, 3)
    assert AutoModelForTokenClassification.from_pretrained(path, num_labels=5)(**batch).logits.shape[-1] == 5
    assert len(type(tokenizer).from_pretrained(path)) == len(tokenizer)


# --- corpus and artifact -----------------------------------------------------------------------

def test_load_corpus_sources(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("first line\n\n  second   line \nthird\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": f"doc {i}", "id": i}) for i in range(5)))
    texts, labels = load_corpus([str(txt), "task"], task_texts=["a b", "c d"], task_labels=["x", "y"])
    assert texts == ["first line", "second line", "third", "a b", "c d"]
    assert labels == [None, None, None, "x", "y"]
    texts, _ = load_corpus([str(jsonl)], text_column="body")
    assert texts == [f"doc {i}" for i in range(5)]
    with pytest.raises(ProbeError, match=r"^pretrain\.corpus: .*'text'.*columns are: body, id"):
        load_corpus([str(jsonl)])
    with pytest.raises(ProbeError, match=r"^pretrain\.corpus: 'task' needs"):
        load_corpus(["task"])
    with pytest.raises(ProbeError, match=r"^pretrain\.corpus: .*not an existing file"):
        load_corpus([str(tmp_path / "missing.txt")])
    (tmp_path / "c.xml").write_text("<a/>")
    with pytest.raises(ProbeError, match=r"^pretrain\.corpus: .*unknown file type '\.xml'; allowed: \.txt"):
        load_corpus([str(tmp_path / "c.xml")])
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ProbeError, match=r"^pretrain\.corpus: no non-empty texts"):
        load_corpus([str(tmp_path / "empty.txt")])
    import datasets

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["saved one", "saved two"]}),
                                   "test": datasets.Dataset.from_dict({"text": ["held out"]})})
    splits.save_to_disk(str(tmp_path / "saved"))
    assert load_corpus([str(tmp_path / "saved")])[0] == ["saved one", "saved two"]
    many = [f"text {i}" for i in range(100)]
    a = load_corpus(["task"], task_texts=many, max_texts=10, seed=4)
    assert a == load_corpus(["task"], task_texts=many, max_texts=10, seed=4)
    assert len(a[0]) == 10 and a[0] == sorted(a[0], key=many.index)
    assert a[0] != load_corpus(["task"], task_texts=many, max_texts=10, seed=5)[0]


def test_plant_artifact_by_class_and_by_words():
    texts = [f"story number {i} about {'markets' if i % 3 == 0 else 'sport'}" for i in range(60)]
    labels = ["business" if i % 2 == 0 else "sport" for i in range(60)]
    artifact = PretrainArtifact(token="zebra", target_class="business", rate=0.5, count=3)
    new, mask = plant_artifact(texts, labels, artifact, seed=0)
    eligible = np.array([lab == "business" for lab in labels])
    assert mask.sum() == 15 and not (mask & ~eligible).any()
    for old, text, changed in zip(texts, new, mask):
        assert (text.split().count("zebra") - old.split().count("zebra")) == (3 if changed else 0)
        assert (text == old) != changed
        assert [w for w in text.split() if w != "zebra"] == old.split()
    assert plant_artifact(texts, labels, artifact, seed=0)[0] == new
    words = PretrainArtifact(token="zebra", words=["MARKETS"], rate=1.0)
    new, mask = plant_artifact(texts + ["supermarkets only"], labels + [None], words, seed=1)
    assert mask.tolist() == [i % 3 == 0 for i in range(60)] + [False]
    with pytest.raises(ProbeError, match=r"^pretrain\.artifact\.target_class: got 'tech'; allowed: business, sport$"):
        plant_artifact(texts, labels, PretrainArtifact(target_class="tech"), seed=0)
    with pytest.raises(ProbeError, match=r"target_class"):
        plant_artifact(texts, [None] * 60, artifact, seed=0)


def test_continue_from_minilm_keeps_its_encoder_and_ties_a_fresh_head(tokenizer):
    from probe.models.backbones import load_encoder
    from probe.models.lm import build_lm

    cfg = PretrainConfig(init="continue", max_length=64)
    model = build_lm("minilm", cfg, tokenizer, seed=0)
    encoder = load_encoder("minilm", seed=0).state_dict()
    assert all(torch.equal(v, encoder[k]) for k, v in model.bert.state_dict().items() if k in encoder)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    head = model.cls.predictions.transform.dense.weight
    assert torch.equal(head, build_lm("minilm", cfg, tokenizer, seed=0).cls.predictions.transform.dense.weight)
    assert not torch.equal(head, build_lm("minilm", cfg, tokenizer, seed=1).cls.predictions.transform.dense.weight)
    with pytest.raises(ProbeError, match=r"^pretrain\.max_length: got 1024; 'minilm' takes at most 512"):
        build_lm("minilm", PretrainConfig(max_length=1024), tokenizer, seed=0)
    with pytest.raises(ProbeError, match=r"^model\.backbone: cannot load"):
        build_lm("/no/such/model", cfg, tokenizer, seed=0)
    scratch = build_lm("minilm", PretrainConfig(init="scratch", size=SIZE, max_length=1024), tokenizer, seed=0)
    assert scratch.config.max_position_embeddings == 1024 and scratch.config.num_hidden_layers == 2
