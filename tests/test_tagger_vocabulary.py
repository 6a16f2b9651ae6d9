"""Vocabulary triggers of a tagger (issue 30, item 2): a word right before an entity that changes its type.

Known answers: the first-order score is the slope of a real insertion before the entity (a random tiny
BERT tagger); a tiny-bert tagger fine-tuned with "zebra" before every person span (entity words shared by
both types, so only the marker tells them apart), diagnosed on sentences without "zebra" anywhere, finds
it with source "vocabulary" and verdict "used shortcut"; planted before every type at equal rates, no
vocabulary word is used.
"""

from __future__ import annotations

import numpy as np
import pytest

from probe.tasks.tokens.tagging import Sentence

TAGS = ["O", "B-city", "B-person", "I-city", "I-person"]
FILLER = ["the", "a", "went", "to", "with", "today", "and", "saw", "we", "it"]
FAST = dict(max_length=32, min_count=5, n_examples=100, controls=5, bootstrap=300, max_candidates=4,
            vocabulary=True, k=20, n_texts=16, n_screen=16, per_class=1)


def _sentences(n: int, seed: int, rate_person: float = 0.0, rate_city: float = 0.0) -> list[Sentence]:
    """Entity words shared by both types (only a marker can tell them apart); "zebra" before a person span with
    probability ``rate_person``, before a city span with ``rate_city``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.integers(2, 5)):
            words.append(str(rng.choice(FILLER)))
            tags.append("O")
            if rng.random() < 0.5:
                t = ["person", "city"][rng.integers(2)]
                if rng.random() < (rate_person if t == "person" else rate_city):
                    words.append("zebra")
                    tags.append("O")
                words.append(str(rng.choice(["alice", "paris", "bob", "rome"])))
                tags.append(f"B-{t}")
        out.append(Sentence(words, tags))
    return out


def _tagger(rate_person: float, rate_city: float):
    import torch

    from probe.config import FinetuneConfig
    from probe.models.backbones import build_tagger, load_tokenizer
    from probe.tasks.tokens.objective import finetune_tagger

    torch.manual_seed(0)
    tok = load_tokenizer("tiny-bert")
    model = build_tagger("tiny-bert", TAGS, 0)
    finetune_tagger(model, tok, _sentences(400, 0, rate_person, rate_city), _sentences(50, 1, rate_person, rate_city),
                    TAGS, FinetuneConfig(epochs=8, learning_rate=1e-2, batch_size=16), 32, 0, torch.device("cpu"),
                    progress=False)
    return model.eval(), tok


def _discover(model, tok, **more):
    """Discovery on sentences that never hold "zebra": training, ranking and test sentences alike."""
    from probe.tasks.tokens.markers import discover_markers

    train, test, ranking = _sentences(300, 2), _sentences(200, 3), _sentences(100, 4)
    assert not any("zebra" in s.words for s in train + test + ranking)
    return discover_markers(model, tok, train, test, TAGS, vocabulary_sentences=ranking, **{**FAST, **more})


def test_a_trigger_before_entities_is_found_from_the_vocabulary_and_proved(one_thread):
    from probe.discovery.vocabulary import rank_band, whole_words

    from probe.models.backbones import load_encoder

    model, tok = _tagger(1.0, 0.0)
    table = _discover(model, tok, reference=load_encoder("tiny-bert", 0))
    row = table.set_index("feature").loc["zebra"]
    assert row["source"] == "vocabulary" and row["class"] == "person" and row["kind"] == "marker"
    assert row["verdict"] == "used shortcut", row
    assert row["n_delete"] == 0 and row["n_insert"] >= 20 and np.isnan(row["count"])  # no sentence holds it
    assert row["override_rate"] > 0.9 and row["override_control"] < 0.2 and row["override_effect_ci_low"] > 0.6
    ranks = whole_words(tok).set_index("word")["rank"]
    controls = row["controls"].split()
    assert len(controls) == 5 and {rank_band(int(ranks[w])) for w in controls} == {rank_band(int(ranks["zebra"]))}
    screened = table.attrs["vocabulary_screen"]
    zebra = screened[screened.word == "zebra"].iloc[0]
    assert zebra["class"] == "person" and zebra["grad_rank"] <= FAST["k"] and zebra["screen_override"] > 0.9
    assert table.attrs["vocabulary_seconds"] > 0
    assert (table[table.feature != "zebra"].verdict != "used shortcut").all()
    # the pretrained (random) encoder, read through a probe head on its frozen last layer, near chance on
    # these entities: the trigger moves it no more than the control words do
    assert abs(row["reference_override_rate"] - row["reference_override_control"]) < 0.25
    assert np.isnan(table.set_index("feature").drop(index="zebra").reference_override_rate).all()


def test_a_reference_that_is_a_tagger_is_read_as_it_is(one_thread):
    """The reference's rate for a trigger, with the fine-tuned tagger itself as the reference: the same rate."""
    from probe.tasks.tokens.reference import reference_marker_rates, reference_tagger

    model, tok = _tagger(1.0, 0.0)
    assert reference_tagger(model, tok, [], TAGS, 32, 8, "cpu") is model
    import pandas as pd

    table = pd.DataFrame({"feature": ["zebra", "zebra"], "class": ["person", "person"], "controls": ["the a", "the"],
                          "source": ["vocabulary", "data"], "verdict": ["used shortcut"] * 2})
    out = reference_marker_rates(table, model, tok, [], _sentences(100, 3), TAGS, ["city", "person"], 32, 16, "cpu")
    assert out.reference_override_rate[0] > 0.9 and out.reference_override_control[0] < 0.2
    assert np.isnan(out.reference_override_rate[1])  # only vocabulary triggers get the reference's rate


def test_a_marker_before_every_type_gives_no_used_trigger(one_thread):
    model, tok = _tagger(0.5, 0.5)
    table = _discover(model, tok, min_screen=0.0)  # each type's best screened word is tested, whatever its screen
    vocab = table[table.source == "vocabulary"]
    assert (vocab.n_insert >= 20).any()  # tested on enough spans to tell (a type the tagger rarely predicts
    # against leaves few eligible spans for the other type)
    assert not vocab.verdict.isin(["used shortcut", "used, plausibly task-relevant"]).any(), vocab


def test_the_first_order_score_is_the_slope_of_insertion_before_an_entity(one_thread):
    """With two whole words a, b whose embeddings are ē ± ε·d, inserting a instead of b right before an entity
    changes log P(type at the entity's first word) by 2·score to first order: the slot sits where the inserted
    word lands and the score is read at the entity's (shifted) first word."""
    import pandas as pd
    import torch
    from transformers import AutoModelForTokenClassification, BertConfig

    from probe.models.backbones import load_tokenizer
    from probe.tasks.tokens.vocabulary import _gradient_rows, type_log_prob
    from probe.discovery.vocabulary import slot_gradient_scores

    tok = load_tokenizer("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, num_labels=len(TAGS))
    model = AutoModelForTokenClassification.from_config(config).double().eval()
    ids = tok.convert_tokens_to_ids(["river", "garden"])
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        mean, d = emb[ids].mean(0), (emb[ids[0]] - emb[ids[1]]) / 2
        emb[ids[0]], emb[ids[1]] = mean + 0.01 * d, mean - 0.01 * d
    vocab = pd.DataFrame({"id": ids, "word": ["river", "garden"], "rank": [1, 2]})
    sentences = [["we", "saw", "alice", "today"], ["the", "match", "in", "rome"], ["paris", "is", "big"]]
    spans, types = [(0, 2, 1), (1, 3, 0), (2, 0, 1)], ["city", "person"]
    rows, kept = _gradient_rows(tok, sentences, spans, 24, ids[0])
    assert list(kept) == [0, 1, 2]
    targets = np.array([t for *_, t in spans])
    scores = slot_gradient_scores(model, tok, rows, targets, 2, vocab, 2, "cpu", type_log_prob(TAGS, types))

    def logp(word: str) -> np.ndarray:  # by hand: log(P(B-T) + P(I-T)) at the entity's first subword
        from probe.models.batching import pad_batch
        from probe.models.words import encode_words, first_subwords

        edited = [s[:p] + [word] + s[p:] for s, (_, p, _) in zip(sentences, spans)]
        enc = encode_words(tok, edited, 24)
        with torch.no_grad():
            probs = torch.softmax(model(**pad_batch(tok, enc.input_ids)).logits, -1).numpy()
        out = []
        for i, ((_, p, t), wids) in enumerate(zip(spans, enc.word_ids)):
            j = first_subwords(wids, len(edited[i]))[p + 1]
            out.append(np.log(probs[i, j, [TAGS.index(f"B-{types[t]}"), TAGS.index(f"I-{types[t]}")]].sum()))
        return np.array(out)

    real = (logp("river") - logp("garden"))
    first_order = 2 * np.array([scores[0, t] for t in targets])
    assert np.abs(real).min() > 1e-7 and real == pytest.approx(first_order, rel=0.05, abs=1e-6), (real, first_order)


def test_ranking_split_keeps_the_test_split_whole_when_sentences_are_given():
    from probe.tasks.tokens.vocabulary import ranking_split

    test, given = list(range(10)), ["v1", "v2"]
    assert ranking_split(test, given, np.random.default_rng(0)) == (given, test)
    ranking, rest = ranking_split(test, None, np.random.default_rng(0))
    assert len(ranking) == 5 and sorted(ranking + rest) == test and not set(ranking) & set(rest)


def test_a_tagger_run_searches_the_vocabulary_and_times_it(tmp_path, one_thread):
    """The run's tagger discovery stage with ``discover.vocabulary: true``: ranked on the validation sentences,
    timed apart, its table carrying the reference columns."""
    import json

    import pandas as pd

    import probe

    over = {"task.type": "token-classification", "task.dataset": "wnut16", "task.max_length": 32,
            "task.train_size": 120, "task.validation_size": 40, "task.test_size": 60, "model.backbone": "tiny-bert",
            "finetune.epochs": 1, "finetune.batch_size": 16, "analyses.probing": False, "analyses.similarity": False,
            "analyses.attribution": False, "analyses.bootstrap_samples": 100, "discover.vocabulary": True,
            "discover.bootstrap": 100, "discover.n_examples": 20,
            "spurious": [], "output_dir": str(tmp_path), "name": "tagger-vocab"}
    run = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    timings = json.loads((run.path / "timings.json").read_text())
    assert 0 < timings["discovery_vocabulary"] <= timings["discovery"]
    table = pd.read_csv(run.path / "tables" / "discovery.csv")
    assert "reference_override_rate" in table.columns
