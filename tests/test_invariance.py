"""Invariance tests and counterfactual removal: change rates that must come out where they should."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from probe.analyses.invariance import (
    MENTION, NEUTRAL_SENTENCE, PERTURBATIONS, URL, add_mention, add_url, append_sentence, fit_to_length,
    invariance_metrics, lowercase, remove_token, remove_token_all, removal_flip_metrics,
)
from probe.config import FinetuneConfig
from probe.data.planted import insert_token
from probe.models.backbones import load_tokenizer
from probe.models.backbones import build_classifier
from probe.tasks.sequence.objective import finetune_classifier as finetune

WORDS = ("Time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business").split()


class _KeywordModel(nn.Module):
    """Predicts class 1 iff ``token_id`` occurs among the real tokens: a model with a known shortcut."""

    def __init__(self, token_id: int) -> None:
        super().__init__()
        self.token_id = token_id
        self.anchor = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(num_labels=2)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        hit = ((input_ids == self.token_id) & (attention_mask.bool())).any(1).float()
        return SimpleNamespace(logits=torch.stack([1 - hit, hit], 1) + 0 * self.anchor)


def _texts(n: int, seed: int, token: str | None = None) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 30))))
        if token is not None and rng.random() < 0.5:
            t = insert_token(t, token, int(rng.integers(0, 4)))
        out.append(t)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-bert")


def test_perturbations_do_what_they_say():
    assert lowercase("The BBC said") == "the bbc said"
    assert add_url("hello") == f"{URL} hello"
    assert add_mention("hello") == f"{MENTION} hello"
    assert append_sentence("hello") == f"hello {NEUTRAL_SENTENCE}"
    assert set(PERTURBATIONS) == {"lowercase", "add_url", "add_mention", "append_neutral_sentence"}


def test_remove_token():
    assert remove_token("a Zebra, ran zebra home", "zebra") == "a ran home"
    assert remove_token("zebras are not zebra-like", "zebra") == "zebras are not zebra-like"
    texts, had = remove_token_all(["zebra x", "y z"], "zebra")
    assert texts == ["x", "y z"] and had.tolist() == [True, False]


def test_fit_to_length_leaves_room_for_the_addition(tokenizer):
    texts = _texts(30, 0)
    cut = fit_to_length(tokenizer, texts, 16, reserve=10)
    for orig, c in zip(texts, cut):
        assert orig.startswith(c)
        assert len(tokenizer(c)["input_ids"]) <= 6
        appended = tokenizer(append_sentence(c), truncation=True, max_length=16)["input_ids"]
        assert tokenizer.decode(appended, skip_special_tokens=True).endswith("the weather was mild that day.")


def test_change_rates_find_the_shortcut_and_only_it(tokenizer):
    model = _KeywordModel(tokenizer.convert_tokens_to_ids("@"))
    texts = _texts(80, 1)
    with pytest.warns(UserWarning, match="lowercase"):  # uncased tokenizer: lower-casing changes nothing
        rows = invariance_metrics(model, tokenizer, texts, max_length=24, n_boot=200, seed=0,
                                  labels=np.zeros(80, dtype=int))
    change = rows[rows.metric == "change_rate"].set_index("property")
    assert change.loc["add_mention", "value"] == 1.0
    assert change.loc[["add_url", "append_neutral_sentence", "lowercase"], "value"].tolist() == [0.0, 0.0, 0.0]
    assert change.loc["lowercase", "identical_inputs"] == 1.0
    assert change.loc["add_url", "identical_inputs"] == 0.0
    drop = rows[rows.metric == "accuracy_drop"].set_index("property")
    assert drop.loc["add_mention", "value"] == 1.0
    assert list(rows.columns[:4]) == ["model", "layer", "property", "metric"]
    assert (rows.ci_low <= rows.value).all() and (rows.value <= rows.ci_high).all()


def test_appended_sentence_is_not_hidden_by_truncation(tokenizer):
    # a model keyed on a word of the neutral sentence must flip on every long text
    model = _KeywordModel(tokenizer.convert_tokens_to_ids("weather"))
    texts = [" ".join(WORDS) for _ in range(5)]  # far longer than max_length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = invariance_metrics(model, tokenizer, texts, max_length=20, n_boot=50)
    change = rows[rows.metric == "change_rate"].set_index("property")
    assert change.loc["append_neutral_sentence", "value"] == 1.0


@pytest.fixture(scope="module")
def zebra_model(tokenizer):
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for _ in range(400):
        words = list(rng.choice(WORDS, size=int(rng.integers(5, 30))))
        y = int(rng.random() < 0.5)
        t = " ".join(words)
        texts.append(insert_token(t, "zebra", int(rng.integers(0, len(words) + 1))) if y else t)
        labels.append(y)
    labels = np.array(labels)
    model = build_classifier("tiny-bert", ["absent", "present"], 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        log = finetune(model, tokenizer, texts[:320], labels[:320], texts[320:], labels[320:],
                       FinetuneConfig(epochs=4, learning_rate=3e-3, batch_size=16), 32, 0, torch.device("cpu"),
                       progress=False)
    assert log.epochs[-1]["validation_accuracy"] >= 0.95
    return model.eval()


def test_removal_flips_a_model_trained_on_the_token(tokenizer, zebra_model):
    texts = [insert_token(t, "zebra", 1) for t in _texts(30, 2)]
    rows = removal_flip_metrics(zebra_model, tokenizer, texts + ["no token here"], "zebra", max_length=32, n_boot=200)
    row = rows.iloc[0]
    assert row.metric == "removal_flip_rate" and row.n == 30
    assert row.value > 0.9
    # a model keyed on another token does not flip
    other = _KeywordModel(tokenizer.convert_tokens_to_ids("water"))
    assert removal_flip_metrics(other, tokenizer, texts, "zebra", max_length=32, n_boot=50).iloc[0].value == 0.0


def test_natural_perturbations_barely_move_a_token_rule_model(tokenizer, zebra_model):
    texts = _texts(60, 3, token="zebra")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = invariance_metrics(zebra_model, tokenizer, texts, max_length=32, n_boot=200)
    change = rows[rows.metric == "change_rate"].set_index("property")
    assert (change["value"] < 0.2).all(), change["value"]
