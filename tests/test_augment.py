"""Synonym replacement (EDA with a thesaurus from the input embeddings), contextual replacement (a
masked LM) and back-translation: each changes about its rate, keeps labels and the planted token,
touches only the training split, is deterministic for a seed; the thesaurus offers real, different
vocabulary words; contextual replacement draws from the MLM's top predictions; back-translation runs
end to end on tiny random translation models."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from probe.config import FinetuneConfig, load_config
from probe.data.augment import (contextual_replace, insert_synonyms, is_variant, replace_synonyms, stop_words,
                                swap_words)
from probe.errors import ProbeError
from probe.models.augmenters import (Augmenter, BackTranslator, MaskedFiller, build_augmenter, check_sources,
                                     load_mlm, load_seq2seq)
from probe.models.backbones import build_classifier, load_tokenizer
from probe.models.thesaurus import EmbeddingThesaurus, whole_word_vocabulary
from probe.tasks.tokens.tagging import Sentence, entity_spans
from tests.conftest import tiny_overrides

CPU = torch.device("cpu")
WORDS = ["river", "mountain", "garden", "window", "pencil", "castle", "forest", "silver", "orange", "rocket"]
NEAR = ["lake", "hill", "yard", "door", "crayon", "palace", "woods", "golden", "lemon", "missile"]
THESAURUS = {w: [n, m] for w, n, m in zip(WORDS, NEAR, NEAR[1:] + NEAR[:1])}


def _corpus(n: int = 1500, length: int = 20, seed: int = 0) -> list[list[str]]:
    """Word lists: "zebra" first, then content words and the stop-word "the"."""
    rng = np.random.default_rng(seed)
    pool = WORDS + ["the"]
    return [["zebra"] + [pool[i] for i in rng.integers(len(pool), size=length - 1)] for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-bert")


def _dump(tokenizer, model, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tokenizer):
    """Folders with a tiny random masked LM and two tiny random translation models (BART layout)."""
    from transformers import BartConfig, BartForConditionalGeneration, BertConfig, BertForMaskedLM

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64))
    out = {"mlm": _dump(tokenizer, mlm, root / "mlm")}
    for name in ("forward", "backward"):
        cfg = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                         max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                         decoder_start_token_id=tokenizer.sep_token_id, forced_eos_token_id=None)
        out[name] = _dump(tokenizer, BartForConditionalGeneration(cfg), root / name)
    return out


# --- EDA on word lists ------------------------------------------------------------------------

def test_synonym_replacement_changes_its_rate_of_words_and_only_content_words():
    corpus = _corpus()
    before = copy.deepcopy(corpus)
    out = replace_synonyms(corpus, THESAURUS, 0.2, np.random.default_rng(0), keep=["zebra"])
    assert corpus == before, "inputs are never touched"
    changed = [(a, b) for x, y in zip(corpus, out) for a, b in zip(x, y) if a != b]
    assert abs(len(changed) / sum(map(len, corpus)) - 0.2) < 0.01
    assert all(b in THESAURUS[a] for a, b in changed), "a replacement is one of the word's neighbours"
    assert all(y[0] == "zebra" for y in out), "the planted token is never replaced"
    assert all(b == "the" for x, y in zip(corpus, out) for a, b in zip(x, y) if a == "the"), "stop-words stay"
    assert replace_synonyms(corpus, THESAURUS, 0.2, np.random.default_rng(0), keep=["zebra"]) == out
    assert replace_synonyms(corpus, THESAURUS, 0.2, np.random.default_rng(1), keep=["zebra"]) != out
    cased = replace_synonyms([["River,", "FOREST"]], THESAURUS, 0.99, np.random.default_rng(0))[0]
    assert cased[0][0].isupper() and cased[0].endswith(",") and cased[1].isupper(), "case and punctuation kept"


def test_insertion_adds_neighbours_and_swap_only_moves_words():
    corpus = _corpus(800)
    grown, tags = insert_synonyms(corpus, THESAURUS, 0.1, np.random.default_rng(0), keep=["zebra"])
    assert tags is None
    added = sum(len(y) - len(x) for x, y in zip(corpus, grown))
    assert abs(added / sum(map(len, corpus)) - 0.1) < 0.01
    neighbours = {n for v in THESAURUS.values() for n in v}
    for x, y in zip(corpus, grown):
        extra = list(y)
        for w in x:
            extra.remove(w)  # every original word is still there
        assert set(extra) <= neighbours
    swapped = swap_words(corpus, 0.1, np.random.default_rng(0), keep=["zebra"])
    assert all(sorted(x) == sorted(y) and y[0] == "zebra" for x, y in zip(corpus, swapped))
    moved = sum(a != b for x, y in zip(corpus, swapped) for a, b in zip(x, y))
    assert 0 < moved <= 2 * 0.1 * sum(map(len, corpus)) * 1.1


def test_tagger_augmentation_changes_o_words_only_and_keeps_tags_aligned():
    words = ["river", "zebra", "Paris", "Hilton", "garden", "the", "castle", "London", "window"]
    tags = ["O", "O", "B-loc", "I-loc", "O", "O", "O", "B-loc", "O"]
    sentences = [list(words) for _ in range(300)]
    tag_lists = [list(tags) for _ in range(300)]
    rng = np.random.default_rng(0)
    replaced = replace_synonyms(sentences, THESAURUS, 0.3, rng, keep=["zebra"], tags=tag_lists)
    grown, grown_tags = insert_synonyms(replaced, THESAURUS, 0.3, rng, keep=["zebra"], tags=tag_lists)
    swapped = swap_words(grown, 0.3, rng, keep=["zebra"], tags=grown_tags)
    assert any(s != words for s in swapped)
    for w, t in zip(swapped, grown_tags):
        assert len(w) == len(t) and w[w.index("zebra") + 1] == "Paris", "the marker stays before its entity"
        assert [(w[a:b], kind) for a, b, kind in entity_spans(t)] == [(["Paris", "Hilton"], "loc"), (["London"], "loc")]


def test_contextual_replacement_draws_from_the_fill_by_probability():
    corpus = _corpus(1000)
    calls = []

    def fill(items):
        calls.append(items)
        return [[[("lake", 0.6), ("hill", 0.3), ("the", 0.09), ("zebras", 0.01)] for _ in pos] for _, pos in items]

    out = contextual_replace(corpus, 0.25, np.random.default_rng(0), fill, top_k=2, keep=["zebra"])
    assert len(calls) == 1, "every text's masks go to the masked LM in one call"
    changed = [(a, b) for x, y in zip(corpus, out) for a, b in zip(x, y) if a != b]
    assert abs(len(changed) / sum(map(len, corpus)) - 0.25) < 0.01
    assert {b for _, b in changed} <= {"lake", "hill"}, "stop-words and the planted token's variants are passed over"
    lake = sum(b == "lake" for a, b in changed if a not in ("lake", "hill")) / len(changed)
    assert abs(lake - 2 / 3) < 0.05, "drawn in proportion to the probabilities of the top_k kept"
    assert all(y[0] == "zebra" for y in out)


# --- the models behind them -------------------------------------------------------------------

def test_thesaurus_neighbours_are_real_different_vocabulary_words(tokenizer):
    emb = np.random.default_rng(0).normal(size=(len(tokenizer), 16)).astype(np.float32)
    ids = tokenizer.convert_tokens_to_ids
    emb[ids("firm")] = emb[ids("company")] + 0.01  # nearest by cosine ...
    emb[ids("companies")] = emb[ids("company")] + 0.001  # ... but a spelling variant
    emb[ids("zebra")] = emb[ids("company")] + 0.002  # ... and the planted token
    emb[ids("the")] = emb[ids("company")] + 0.003  # ... and a stop-word
    thesaurus = EmbeddingThesaurus(emb, tokenizer, k=5, keep=["zebra"])
    assert thesaurus["company"][0] == "firm" and "Company" in thesaurus
    vocab = set(tokenizer.get_vocab())
    for word in ["company", "market", "football", "minister", "profit"]:
        near = thesaurus[word]
        assert len(near) == 5
        for n in near:
            assert n in vocab and tokenizer(n, add_special_tokens=False)["input_ids"] == [ids(n)]
            assert n.isalpha() and n.lower() not in stop_words() and not n.startswith("##")
            assert not is_variant(n, word) and not is_variant(n, "zebra")
    assert "the" not in thesaurus and "xyzzyq" not in thesaurus and thesaurus.get("##s") == ()


def test_contextual_replacement_uses_the_mlm_top_predictions(tokenizer, tiny_models):
    model, mlm_tokenizer = load_mlm(tiny_models["mlm"])
    filler = MaskedFiller(model, mlm_tokenizer, CPU, 32, width=3 + 16)
    corpus = [w[1:12] for w in _corpus(40, seed=3)]
    out = contextual_replace(corpus, 0.3, np.random.default_rng(0), filler, top_k=3)
    whole = set(whole_word_vocabulary(mlm_tokenizer)[0].tolist())  # letters-only entries that stand alone
    masked = [" ".join(a if a == b else mlm_tokenizer.mask_token for a, b in zip(x, y)) for x, y in zip(corpus, out)]
    enc = mlm_tokenizer(masked, return_tensors="pt", padding=True)  # the [MASK] string, not the filler's ids
    with torch.no_grad():
        logits = model(**enc).logits[enc["input_ids"] == mlm_tokenizer.mask_token_id]
    pairs = [(a, b) for x, y in zip(corpus, out) for a, b in zip(x, y) if a != b]
    assert len(pairs) == len(logits)
    for row, (a, b) in zip(logits, pairs):
        allowed = []
        for i in row.argsort(descending=True).tolist():
            w = mlm_tokenizer.convert_ids_to_tokens(i)
            if i in whole and w not in stop_words() and not is_variant(w, a):
                allowed.append(w)
            if len(allowed) == 3:
                break
        assert b in allowed, f"{b!r} is not among the MLM's top predictions {allowed} for {a!r}"
    changed = len(pairs)
    assert abs(changed / sum(map(len, corpus)) - 0.3) < 0.08


def test_back_translation_rate_and_cache(tiny_models, tmp_path):
    from probe.config import BackTranslation

    texts = [f"story {i} about the river" for i in range(400)]
    calls = []

    def fake(batch):
        calls.append(list(batch))
        return [t.upper() for t in batch]

    aug = Augmenter(FinetuneConfig(augmentation={"back_translation": {"rate": 0.3}}).augmentation, None, 32,
                    translator=fake)
    out, counts = aug.texts(texts, np.random.default_rng([0, 1]))
    assert abs(counts["back_translation"] / len(texts) - 0.3) < 0.06 and out != texts
    assert all(o == t or o == t.upper() for o, t in zip(out, texts))
    assert aug.texts(texts, np.random.default_rng([0, 1]))[0] == out
    assert aug.texts(texts, np.random.default_rng([0, 2]))[0] != out
    cfg = BackTranslation(max_length=12, batch_size=4)
    bt = BackTranslator(load_seq2seq(tiny_models["forward"], "forward"), load_seq2seq(tiny_models["backward"], "backward"),
                        cfg, CPU, tmp_path / "bt.json")
    first = bt(texts[:6])
    assert bt.translated == 6 and all(isinstance(t, str) for t in first)
    assert bt(texts[:3] + texts[:6]) == first[:3] + first and bt.translated == 6, "translated once per text"
    again = BackTranslator(bt.forward, bt.backward, cfg, CPU, tmp_path / "bt.json")
    assert again(texts[:6]) == first and again.translated == 0, "the cache file serves a rerun"
    assert json.loads((tmp_path / "bt.json").read_text()) == dict(zip(texts[:6], first))


# --- fine-tuning and runs ---------------------------------------------------------------------

def test_augmentation_touches_training_texts_only_keeps_labels_and_reports_counts(tokenizer, monkeypatch):
    from probe.data.sources import load_text_classification
    from probe.tasks.sequence.objective import finetune_classifier

    texts, labels, classes = load_text_classification("bbc-news", "text", "label")
    train, val = [" ".join(t.split()[:30]) for t in texts[:48]], [" ".join(t.split()[:30]) for t in texts[48:64]]
    y, vy = labels[:48].copy(), labels[48:64].copy()
    config = load_config(None, ["model.backbone=tiny-bert", "task.max_length=32",
                                "finetune.augmentation.synonym_replacement.rate=0.2",
                                "finetune.augmentation.synonym_replacement.swap=0.1"])
    augmenter = build_augmenter(config, backbone="tiny-bert", tokenizer=tokenizer, device=CPU)
    seen = []
    real = Augmenter.texts

    def spy(self, batch, rng):
        seen.append(list(batch))
        out = real(self, batch, rng)
        seen.append(out[0])
        return out

    monkeypatch.setattr(Augmenter, "texts", spy)
    frozen = (list(train), list(val))
    model = build_classifier("tiny-bert", classes, 0)
    cfg = config.finetune.model_copy(update={"epochs": 2})
    log = finetune_classifier(model, tokenizer, train, y, val, vy, cfg, 32, 0, CPU, progress=False,
                              planted=[("zebra", 0, 5)], augmenter=augmenter)
    assert (list(train), list(val)) == frozen and np.array_equal(y, labels[:48]) and np.array_equal(vy, labels[48:64])
    assert len(seen) == 4 and seen[0] == train and seen[2] == train, "only the training texts are augmented"
    assert seen[1] != seen[3], "redrawn every epoch"
    assert all(0 < e["augmented_synonym_replacement"] <= 48 for e in log.epochs)
    with pytest.raises(ProbeError, match="need an augmenter"):
        finetune_classifier(model, tokenizer, train, y, val, vy, cfg, 32, 0, CPU, progress=False)


def test_refusals_are_one_line(tiny_models):
    cases = [
        (lambda: load_config(None, ["task.type=token-classification", "task.dataset=wnut16",
                                    "finetune.augmentation.back_translation.rate=0.5"]),
         "back_translation: a translation does not keep the words"),
        (lambda: check_sources(load_config(None, ["finetune.augmentation.contextual_replacement.rate=0.1"])),
         "contextual_replacement.mlm: 'minilm' has no trained masked-LM head"),
        (lambda: check_sources(load_config(None, ["finetune.augmentation.contextual_replacement.mlm=/no/such/mlm"])),
         "cannot load '/no/such/mlm' as a masked language model"),
        (lambda: check_sources(load_config(None, ["finetune.augmentation.back_translation.rate=0.5"])),
         "back_translation.forward: cannot load translation model 'Helsinki-NLP/opus-mt-en-de'"),
        (lambda: load_config(None, ["finetune.augmentation.synonym_replacement.rate=1.0"]),
         "synonym_replacement.rate: got 1.0"),
        (lambda: load_config(None, ["finetune.augmentation.contextual_replacement.typo=1"]),
         "allowed keys here: rate, mlm, top_k, seed"),
    ]
    for call, expected in cases:
        with pytest.raises(ProbeError) as err:
            call()
        assert expected in str(err.value) and "\n" not in str(err.value)
    check_sources(load_config(None, ["pretrain.enabled=true", "finetune.augmentation.contextual_replacement.rate=0.1"]))


def test_every_augmentation_end_to_end_on_tiny_models(tmp_path, tiny_models):
    import probe

    aug = "finetune.augmentation."
    overrides = tiny_overrides(tmp_path, **{
        "analyses.probing": False, "analyses.attribution": False, "analyses.invariance": False, "finetune.epochs": 2,
        aug + "synonym_replacement": {"rate": 0.1, "insertion": 0.05},
        aug + "contextual_replacement": {"rate": 0.15, "mlm": tiny_models["mlm"]},
        aug + "back_translation": {"rate": 0.3, "forward": tiny_models["forward"], "backward": tiny_models["backward"],
                                   "max_length": 12}})
    run = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in overrides.items()})
    assert run.summary["status"] == "complete"
    epochs = json.loads((run.path / "models" / "finetuned" / "training.json").read_text())["epochs"]
    n_train = run.summary["task"]["n_train"]
    for e in epochs:
        assert 0.15 * n_train < e["augmented_back_translation"] < 0.45 * n_train
        assert 0 < e["augmented_synonym_replacement"] <= n_train and 0 < e["augmented_contextual_replacement"] <= n_train
    training = run.table("training")
    assert {"augmented_back_translation", "augmented_synonym_replacement"} <= set(training.columns)
    assert list((run.path / "cache").glob("back-translation-*.json"))
