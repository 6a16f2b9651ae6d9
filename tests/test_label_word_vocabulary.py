"""Vocabulary search on a causal LM answering with label words (issue 30, item 2).

The class score is the label word's log-probability after the prompt; the search's slot goes at the start
of the prompt's *text* field (after the template's prefix, where an inserted word lands), not before the
prefix. Known answers: the first-order score is the slope of a real insertion into the text on a tiny random
GPT-2; an LM whose answer reads one embedding direction ranks the token aligned with it first, insertion
confirms it, and discovery proves it against controls (the label-word twin of tests/test_vocabulary.py's
one-direction classifier).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.discovery_synthetic import MAX_LENGTH, make_texts
from tests.test_label_words import PROMPT
from tests.tiny_lms import CONFIGS

WORDS = ["business", "sport"]


@pytest.fixture(scope="module")
def tok():
    from probe.models.backbones import load_tokenizer

    return load_tokenizer("minilm")


def _reader(tok):
    from probe.models.label_words import PromptTokenizer, label_words

    return PromptTokenizer(tok, label_words(tok, PROMPT, WORDS, WORDS))


def test_the_slot_is_the_first_token_of_the_text_field(tok):
    from probe.discovery.vocabulary import slot_position
    from probe.models.batching import tokenize

    reader = _reader(tok)
    text = "shares fell sharply on monday"
    ids = tokenize(reader, [text], 24)[0]
    slot = slot_position(reader, text, ids, 24)
    assert tok.convert_ids_to_tokens(ids[:slot]) == ["[CLS]", "text", ":"]  # the template's prefix stays before it
    assert tok.convert_ids_to_tokens(ids[slot]) == "shares"
    assert slot_position(tok, text, tokenize(tok, [text], 24)[0], 24) == 1  # a plain text: after [CLS]


def test_the_first_order_score_is_the_slope_of_insertion_into_the_prompt_text(one_thread, tok):
    """A tiny random GPT-2 read through label words: with two whole words a, b at ē ± ε·d, inserting a instead
    of b as the text's first word changes the label word's log-probability margin by 2·score to first order
    (the LM's log-softmax runs in float32: ε = 0.1 keeps the differences well above its rounding)."""
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM

    from probe.discovery.vocabulary import gradient_scores
    from probe.models.batching import pad_batch, tokenize
    from probe.models.label_words import LabelWordModel

    reader = _reader(tok)
    torch.manual_seed(0)
    model = LabelWordModel(AutoModelForCausalLM.from_config(CONFIGS["gpt2"]()).double(), reader.words, WORDS).eval()
    ids = tok.convert_tokens_to_ids(["river", "garden"])
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        mean, d = emb[ids].mean(0), (emb[ids[0]] - emb[ids[1]]) / 2
        emb[ids[0]], emb[ids[1]] = mean + 0.1 * d, mean - 0.1 * d
    vocab = pd.DataFrame({"id": ids, "word": ["river", "garden"], "rank": [1, 2]})
    texts = ["the match ended in a draw after extra time", "shares fell sharply on monday"]
    targets = np.array([1, 0])
    scores = gradient_scores(model, reader, texts, targets, 2, vocab, 24, 2, "cpu")

    def logp(word: str) -> np.ndarray:
        batch = pad_batch(reader, tokenize(reader, [f"{word} {t}" for t in texts], 24))
        with torch.no_grad():
            return torch.log_softmax(model(**batch).logits, -1).numpy()[np.arange(2), targets]

    real = logp("river") - logp("garden")
    first_order = 2 * np.array([scores[0, c] for c in targets])
    # within 0.4 %; a slot before the template's prefix ("[CLS] [slot] text : ...") misses by 2.5-3.5 %
    assert np.abs(real).min() > 1e-9 and real == pytest.approx(first_order, rel=0.01), (real, first_order)


def _one_direction_lm(tok, trigger: str, dim: int = 8, seed: int = 0):
    """A causal "LM" whose hidden state at position t is the mean of the embeddings up to t, and whose next-token
    logits are 20·h[0] − 1 for "business", 0 for every other token: "business" wins where the prompt's mean
    coordinate 0 exceeds 0.05. Every token has a small coordinate 0 except ``trigger``, whose is 5."""
    import torch
    from torch import nn

    from probe.models.label_words import LabelWordModel

    class CumulativeMean(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.emb = nn.Embedding(len(tok), dim)
            with torch.no_grad():
                self.emb.weight.copy_(torch.randn(len(tok), dim, generator=g) * 0.01)
                self.emb.weight[tok.convert_tokens_to_ids(trigger), 0] = 5.0
            self.config = SimpleNamespace(model_type="gpt2")

        def get_input_embeddings(self):
            return self.emb

        def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, **_):
            x = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
            m = attention_mask.unsqueeze(-1).to(x.dtype)
            h = (x * m).cumsum(1) / m.cumsum(1).clamp_min(1)
            return SimpleNamespace(last_hidden_state=h, hidden_states=(x, h))

    class OneDirectionLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base_model = CumulativeMean()
            self.head = nn.Linear(dim, len(tok))
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.zero_()
                business = tok.convert_tokens_to_ids("business")
                self.head.weight[business, 0], self.head.bias[business] = 20.0, -1.0

        def get_output_embeddings(self):
            return self.head

    return LabelWordModel(OneDirectionLM(), _reader(tok).words, WORDS).eval()


def test_the_token_a_label_word_reads_ranks_first_and_discovery_proves_it(one_thread, tok):
    from probe import discover
    from probe.discovery.vocabulary import gradient_scores, whole_words

    reader = _reader(tok)
    model = _one_direction_lm(tok, "zebra")
    vocab = whole_words(reader)
    texts, _ = make_texts(tok, 400, 3, planted=False)
    assert not any("zebra" in t.split() for t in texts)
    scores = gradient_scores(model, reader, texts[:20], np.zeros(20, dtype=int), 2, vocab, MAX_LENGTH, 8, "cpu")
    assert vocab.word.iloc[int(np.argmax(scores[:, 0]))] == "zebra"
    coord = model.get_input_embeddings().weight.detach().numpy()[vocab["id"], 0]
    assert np.corrcoef(scores[:, 0], coord)[0, 1] > 0.999  # first order: linear in coordinate 0
    labels = np.arange(len(texts)) % 2
    train, test = texts[:200], texts[200:]
    table = discover(model, reader, train, labels[:200], test, labels[200:], WORDS,
                     reference=_one_direction_lm(tok, "the"), max_length=MAX_LENGTH, n_examples=100, controls=5,
                     max_candidates=4, bootstrap=300, properties=False, templates=False, vocabulary=True,
                     vocabulary_k=5, vocabulary_texts=16, vocabulary_screen=16).set_index("feature")
    row = table.loc["zebra"]
    assert row["source"] == "vocabulary" and row["class"] == "business" and row["verdict"] == "used shortcut", row
    assert row["override_rate"] == 1.0 and row["override_control"] < 0.1 and row["n_delete"] == 0
    assert row["reference_override_rate"] == 0.0  # the reference's aligned token is "the", not "zebra"
    screened = table.attrs["vocabulary_screen"]
    first = screened[screened["class"] == "business"].iloc[0]
    assert first.word == "zebra" and first.grad_rank == 1 and first.screen_override == 1.0
    assert (table.drop(index="zebra").verdict != "used shortcut").all()


def test_the_search_runs_on_a_tiny_random_gpt2_with_label_words(one_thread, tok):
    """Gradient ranking, screen and tests run end to end through a real causal LM's label words (no known
    answer: a random LM; the table says what was screened and tested)."""
    import torch
    from transformers import AutoModelForCausalLM

    from probe import discover
    from probe.models.label_words import LabelWordModel

    reader = _reader(tok)
    torch.manual_seed(0)
    model = LabelWordModel(AutoModelForCausalLM.from_config(CONFIGS["gpt2"]()), reader.words, WORDS).eval()
    texts, _ = make_texts(tok, 120, 5, planted=False)
    labels = np.arange(len(texts)) % 2
    table = discover(model, reader, texts[:60], labels[:60], texts[60:], labels[60:], WORDS, reference=model,
                     max_length=MAX_LENGTH, n_examples=30, controls=2, max_candidates=2, bootstrap=100,
                     properties=False, templates=False, vocabulary=True, vocabulary_k=3, vocabulary_texts=4,
                     vocabulary_screen=4, vocabulary_min_screen=0.0)
    screened = table.attrs["vocabulary_screen"]
    assert len(screened) and set(screened["class"]) <= set(WORDS) and (screened.screen_n >= 1).all()
    assert (table.source == "vocabulary").any() and table.attrs["vocabulary_seconds"] > 0
