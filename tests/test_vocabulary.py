"""Vocabulary search (issue 30): trigger words the data never holds, ranked by the gradient, proved by insertion.

Known answers: a model whose head reads one embedding direction ranks the token aligned with it first and
insertion confirms it; a tiny BERT fine-tuned with "marble" in every class-a text, diagnosed on texts with
no "marble" anywhere, finds it with source "vocabulary"; the same on shuffled labels finds nothing.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.discovery_synthetic import CLASSES, MAX_LENGTH, STRONG, make_texts, train_tiny

USED = ("used shortcut", "used, plausibly task-relevant")
FAST = dict(max_length=MAX_LENGTH, n_examples=100, controls=5, max_candidates=4, bootstrap=300, properties=False,
            vocabulary=True, vocabulary_k=10, vocabulary_texts=16, vocabulary_screen=16)


@pytest.fixture(scope="module")
def tokenizer():
    from probe.models.backbones import load_tokenizer

    return load_tokenizer("tiny-bert")


def _one_direction(tokenizer, trigger: str, dim: int = 8, seed: int = 0):
    """Embeddings + mean pooling + a head that reads coordinate 0 only: logit_1 = 20·pooled[0] − 1, logit_0 = 0.
    Every token has a small coordinate 0 except ``trigger``, whose is 5."""
    import torch
    from torch import nn

    class OneDirectionClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.emb = nn.Embedding(len(tokenizer), dim)
            with torch.no_grad():
                self.emb.weight.copy_(torch.randn(len(tokenizer), dim, generator=g) * 0.1)
                self.emb.weight[tokenizer.convert_tokens_to_ids(trigger), 0] = 5.0
            self.embeddings = self.emb  # laid out like a BERT without blocks, for the attribution code
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList([nn.Identity()])  # never called
            self.config = SimpleNamespace(num_labels=2, model_type="bert", id2label={0: "x", 1: "y"})

        def get_input_embeddings(self):
            return self.emb

        def forward(self, input_ids, attention_mask, **_):
            m = attention_mask.unsqueeze(-1).float()
            pooled = (self.emb(input_ids) * m).sum(1) / m.sum(1)
            logit = 20 * pooled[:, :1] - 1
            return SimpleNamespace(logits=torch.cat([torch.zeros_like(logit), logit], 1))

    return OneDirectionClassifier().eval()


def test_whole_words_are_single_lower_case_tokens(tokenizer):
    from probe.discovery.vocabulary import rank_band, whole_words

    vocab = whole_words(tokenizer)
    assert {"zebra", "the", STRONG} <= set(vocab.word)
    assert not vocab.word.str.startswith("##").any() and vocab.word.str.fullmatch("[a-z]{2,}").all()
    assert (np.diff(vocab["id"]) > 0).all() and (vocab["rank"] == np.arange(1, len(vocab) + 1)).all()
    assert [rank_band(r) for r in (1, 7, 8, 63, 64, 511, 512)] == [0, 0, 1, 1, 2, 2, 3]


def test_the_token_a_head_reads_ranks_first_and_insertion_confirms_it(one_thread, tokenizer):
    from probe.discovery.discover import scorer
    from probe.discovery.vocabulary import gradient_scores, vocabulary_candidates, whole_words

    model = _one_direction(tokenizer, "zebra")
    texts, _ = make_texts(tokenizer, 120, 3, planted=False)
    labels = np.arange(len(texts)) % 2
    vocab = whole_words(tokenizer)
    scores = gradient_scores(model, tokenizer, texts[:20], np.ones(20, dtype=int), 2, vocab, MAX_LENGTH, 8, "cpu")
    assert vocab.word.iloc[int(np.argmax(scores[:, 1]))] == "zebra"
    # first order, exact up to the softmax's curvature: the score is (e_v - mean)·gradient, linear in coordinate 0
    coord = model.emb.weight.detach().numpy()[vocab["id"], 0]
    assert np.corrcoef(scores[:, 1], coord)[0, 1] > 0.999
    score = scorer(model, tokenizer, MAX_LENGTH, 16, "cpu")
    found, _ = vocabulary_candidates(model, tokenizer, score, texts, labels, 2, k=5, n_texts=16, n_screen=16,
                                     per_class=1, max_length=MAX_LENGTH, max_position=5, batch_size=16, device="cpu",
                                     rng=np.random.default_rng(0), log=lambda _: None)
    row = found[found["class"] == 1].iloc[0]
    assert row.word == "zebra" and row.grad_rank == 1 and row.screen_override == 1.0 and row.screen_n == 16
    assert not (found["class"] == 0).any()  # class 0 is predicted everywhere: nothing to screen for it
    screened = found.attrs["screened"]
    assert len(screened) == 5 and (screened["class"] == 1).all() and list(screened.grad_rank) == [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def unseen(tokenizer):
    """Texts in which the trigger words never occur: the diagnosis data, train and held-out alike."""
    train, y_train = make_texts(tokenizer, 400, 7, planted=False)
    test, y_test = make_texts(tokenizer, 400, 1, planted=False)
    assert not any(w in t.split() for t in train + test for w in ("zebra", STRONG))
    return train, y_train, test, y_test


def _discover(model, tokenizer, data, classes=CLASSES, reference=None):
    from probe import discover

    train, y_train, test, y_test = data
    return discover(model, tokenizer, train, y_train, test, y_test, classes, reference=reference, **FAST)


def test_a_trigger_the_data_never_holds_is_found_and_proved(one_thread, tokenizer, unseen):
    """The one-direction model end to end: "zebra" reaches the causal test from the vocabulary alone and is
    a used shortcut against controls of its tokenizer-rank band; the reference (the same model without the
    aligned token) does not have it."""
    train, _, test, _ = unseen
    data = (train, np.arange(len(train)) % 2, test, np.arange(len(test)) % 2)
    model, reference = _one_direction(tokenizer, "zebra"), _one_direction(tokenizer, "the")
    table = _discover(model, tokenizer, data, ["x", "y"], reference).set_index("feature")
    row = table.loc["zebra"]
    assert row["source"] == "vocabulary" and row["class"] == "y" and row["verdict"] == "used shortcut", row
    assert row["n_delete"] == 0 and np.isnan(row["count"])  # nothing to delete, no training count
    assert row["override_rate"] == 1.0 and row["override_control"] < 0.1 and row["override_effect_ci_low"] > 0.8
    controls = row["controls"].split()
    assert len(controls) == 5 and "zebra" not in controls
    from probe.discovery.vocabulary import rank_band, whole_words

    ranks = whole_words(tokenizer).set_index("word")["rank"]
    assert {rank_band(int(ranks[w])) for w in controls} == {rank_band(int(ranks["zebra"]))}
    assert row["reference_override_rate"] == 0.0 and table.attrs["vocabulary_seconds"] > 0
    screened = table.attrs["vocabulary_screen"]
    assert "zebra" in set(screened.word) and set(screened["class"]) <= {"x", "y"}
    assert (table.drop(index="zebra").verdict != "used shortcut").all()
    from probe.discovery.verdicts import discovered

    rec = {r["feature"]: r for r in discovered(table.reset_index())}["zebra"]
    assert rec["source"] == "vocabulary" and "vocabulary" in rec["sentence"] and rec["reference_override_rate"] == 0


def test_shuffled_labels_no_vocabulary_word_passes(one_thread, tokenizer, unseen):
    from probe.models.backbones import load_encoder

    planted, labels = make_texts(tokenizer, 900, 0, planted=True)
    model = train_tiny(tokenizer, planted, np.random.default_rng(5).permutation(labels))
    from probe import discover

    train, y_train, test, y_test = unseen
    # every class's best screened word goes to the causal test, whatever its screen said
    table = discover(model, tokenizer, train, y_train, test, y_test, CLASSES, reference=load_encoder("tiny-bert", 0),
                     **FAST, vocabulary_min_screen=0.0)
    assert not table.verdict.isin(USED).any(), table[table.verdict.isin(USED)]
    assert (table.source == "vocabulary").sum() == 3  # vocabulary words were tested, not skipped


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "gpt2", "llama"])
def test_the_first_order_score_is_the_slope_of_real_insertion_in_every_family(one_thread, family):
    """With two whole words a, b whose embeddings are set to ē ± ε·d, inserting a instead of b (as a word, at
    the start of the text) changes log P(c) by 2·score_c(a) to first order: the slot is where a real early
    insertion lands, and a decoder's last token sees it."""
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification

    from probe.discovery.vocabulary import gradient_scores
    from probe.models.backbones import load_tokenizer
    from probe.models.batching import pad_batch, tokenize
    from tests.test_given import CONFIGS

    tok = load_tokenizer("minilm")
    torch.manual_seed(0)
    config = CONFIGS[family]()
    config.num_labels = 3
    model = AutoModelForSequenceClassification.from_config(config).double().eval()  # tiny random effects
    ids = tok.convert_tokens_to_ids(["river", "garden"])
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        mean, d = emb[ids].mean(0), (emb[ids[0]] - emb[ids[1]]) / 2
        emb[ids[0]], emb[ids[1]] = mean + 0.01 * d, mean - 0.01 * d
    vocab = pd.DataFrame({"id": ids, "word": ["river", "garden"], "rank": [1, 2]})
    texts = ["the match ended in a draw after extra time", "shares fell sharply on monday", "a new phone"]
    targets = np.array([0, 1, 2])
    scores = gradient_scores(model, tok, texts, targets, 3, vocab, 24, 2, "cpu")

    def logp(word: str) -> np.ndarray:
        batch = pad_batch(tok, tokenize(tok, [f"{word} {t}" for t in texts], 24))
        with torch.no_grad():
            return torch.log_softmax(model(**batch).logits, -1).numpy()[np.arange(3), targets]

    real = (logp("river") - logp("garden")).mean()
    first_order = 2 * np.mean([scores[0, c] for c in targets])  # each class's mean over its one text
    assert abs(real) > 1e-9 and real == pytest.approx(first_order, rel=0.02), (real, first_order)


@pytest.mark.parametrize("setting, message", [
    ({"discover.vocabulary": "maybe"}, "discover.vocabulary"),
    ({"discover.vocabulary_k": 0}, "discover.vocabulary_k: got 0"),
])
def test_bad_vocabulary_config_names_the_key(setting, message):
    from probe.config import load_config
    from probe.errors import ProbeError

    with pytest.raises(ProbeError) as err:
        load_config(None, setting)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_vocabulary_search_is_on_by_default_only_for_given_checkpoints():
    from probe.config import load_config

    d = load_config(None, {}).discover
    assert d.vocabulary_on(given=True) and not d.vocabulary_on(given=False)
    forced = load_config(None, {"discover.vocabulary": False}).discover
    assert not forced.vocabulary_on(given=True)
    assert load_config(None, {"discover.vocabulary": True}).discover.vocabulary_on(given=False)


def test_probe_diagnose_searches_the_vocabulary_of_a_decoder(tmp_path, one_thread):
    """``probe diagnose`` (a given checkpoint: discover.vocabulary auto is on) runs the search on a GPT-2
    classifier, times it and writes its columns."""
    import json

    import pandas as pd

    from probe.cli import main
    from tests.test_given import CLASSES as BBC, save_family

    ref_dir, clf_dir, _ = save_family("gpt2", tmp_path, BBC)
    code = main(["diagnose", str(clf_dir), "--data", "bbc-news", "--reference", str(ref_dir), "--quiet",
                 "--set", f"output_dir={tmp_path}", "--set", "task.test_size=80", "--set", "task.train_size=40",
                 "--set", "task.validation_size=20", "--set", "task.max_length=24", "--set", "causal.enabled=false",
                 "--set", "analyses.attribution=false", "--set", "analyses.bootstrap_samples=100",
                 "--set", "discover.n_examples=20", "--set", "discover.bootstrap=100"])
    assert code == 0
    run = tmp_path / "diagnose-gpt2-clf"
    timings = json.loads((run / "timings.json").read_text())
    assert 0 < timings["discovery_vocabulary"] <= timings["discovery"]
    table = pd.read_csv(run / "tables" / "discovery.csv")
    assert "reference_override_rate" in table.columns
