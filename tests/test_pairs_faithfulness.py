"""ERASER faithfulness on pairs of texts (DeYoung et al. 2020; docs/design.md §9): the perturbed inputs stay
pairs with their separators and segment ids, and a known answer on a model that reads one second-side token."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from probe.analyses.attribution import WordAttributions, word_attributions
from probe.analyses.faithfulness import faithfulness_metrics, faithfulness_scores, top_k_count
from probe.models.backbones import load_tokenizer
from probe.models.batching import pad_batch, tokenize
from tests.test_pairs_tokens import _tokenizer

PERCENTS = (1, 20, 50)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-bert")


class Recorder:
    """A :class:`probe.analyses.faithfulness.TextProbabilities` stand-in that keeps the inputs it is asked about."""

    def __init__(self) -> None:
        self.inputs: list = []

    def __call__(self, inputs):
        self.inputs += list(inputs)
        return np.full((len(inputs), 2), 0.5)


def test_a_perturbed_pair_keeps_its_separators_segment_ids_and_every_unremoved_word(tok):
    first, second = "the cat sat on a mat".split(), "a zebra ran very far".split()
    scores = np.array([0.1, 5.0, 0.2, 0.0, 0.0, 0.3, 0.0, 9.0, 0.0, 0.4, 0.0])  # zebra, then cat, rank first
    a = WordAttributions(first + second, scores, 1, "saliency", n_first=len(first))
    seen = Recorder()
    faithfulness_scores(None, tok, [a], percents=(1, 10, 50), max_length=40, probabilities=seen)
    assert seen.inputs and all(isinstance(x, tuple) and len(x) == 2 for x in seen.inputs)
    assert seen.inputs[0] == (" ".join(first), " ".join(second))
    assert ("the cat sat on a mat", "a ran very far") in seen.inputs  # comprehensiveness@1: zebra gone
    assert ("", "zebra") in seen.inputs and ("cat", "zebra") in seen.inputs  # sufficiency@1 and @10 (2 of 11)
    assert ("the cat sat on a mat", "zebra") in seen.inputs  # the second side alone reduced to its top word
    ids = tokenize(tok, seen.inputs, 40)
    segments = pad_batch(tok, ids)["token_type_ids"]
    for (x, y), row, seg in zip(seen.inputs, ids, segments.tolist()):
        assert all(w in first for w in x.split()) and all(w in second for w in y.split())
        kept_x, kept_y = tok(x, add_special_tokens=False)["input_ids"], tok(y, add_special_tokens=False)["input_ids"]
        assert row == [tok.cls_token_id, *kept_x, tok.sep_token_id, *kept_y, tok.sep_token_id]
        assert seg[: len(row)] == [0] * (len(kept_x) + 2) + [1] * (len(kept_y) + 1)


def test_every_unremoved_word_of_both_sides_stays_in_order():
    words = "a b c d e f g".split()
    a = WordAttributions(words, np.array([7.0, 6, 5, 4, 3, 2, 1]), 0, "saliency", n_first=3)
    seen = Recorder()
    faithfulness_scores(None, None, [a], percents=(50,), probabilities=seen)
    assert top_k_count(7, 50) == 4  # a b c d
    assert seen.inputs[1:3] == [("", "e f g"), ("a b c", "d")]  # without / only the top 4, sides kept apart
    first_side = [x for x in seen.inputs if x[1] == "d e f g" and x[0] != "a b c"]
    assert ("c", "d e f g") in first_side and ("a b", "d e f g") in first_side  # first side: its top 2 of 3


@pytest.mark.parametrize("style", ["bert", "roberta", "gpt2", "llama"])
def test_perturbed_pairs_keep_their_special_and_separator_tokens_for_every_tokenizer_style(style):
    """Encoders' templates and decoders' one separator: every perturbed input, an emptied side included, has the
    full pair's special tokens, and between them exactly the kept words of each side, in order."""
    tok = _tokenizer(style)
    words = "the cat sat on the mat".split() + "shares fell sharply on monday".split()
    a = WordAttributions(words, np.arange(11.0), 0, "saliency", n_first=6)  # the second text ranks first
    seen = Recorder()
    faithfulness_scores(None, tok, [a], percents=(1, 40), max_length=64, probabilities=seen)
    assert ("", "shares fell sharply on monday") in seen.inputs  # sufficiency@40 (5 of 11): the first text emptied
    assert ("the cat sat on the mat", "") in seen.inputs  # and comprehensiveness@40 empties the second
    special = set(tok.all_special_ids)
    ids = tokenize(tok, seen.inputs, 64)
    assert len({sum(t in special for t in row) for row in ids}) == 1 and any(t in special for t in ids[0])
    for (x, y), row in zip(seen.inputs, ids):
        side = [tok(t, add_special_tokens=False)["input_ids"] for t in (x, y)]
        assert [t for t in row if t not in special] == side[0] + side[1]


class ReadsSecondZebra(torch.nn.Module):
    """A pair classifier whose class 1 logit is 6 when ``zebra`` is in the second text (segment id 1), else 0,
    against class 0's 3: the planted second-side token alone decides."""

    def __init__(self, vocab: int, zebra: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 4)  # attribution asks for the input embeddings
        self.zebra = zebra
        self.config = SimpleNamespace(num_labels=2)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
        second = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        hit = ((input_ids == self.zebra) & (second == 1) & attention_mask.bool()).any(1).float()
        return SimpleNamespace(logits=torch.stack([torch.full_like(hit, 3.0), 6.0 * hit], 1)
                               + 0 * self.emb.weight.sum())


PAIRS = [("the cat sat on the mat in the sun", "a zebra ran far away"),
         ("zebra stripes are black and white", "so is a zebra in the wild"),
         ("news of the day", "the zebra was seen near the river bank today")]


def test_removing_the_planted_second_side_token_drops_the_probability_and_keeping_it_keeps_it(tok):
    model = ReadsSecondZebra(tok.vocab_size, tok.convert_tokens_to_ids("zebra"))
    attrs = word_attributions(model, tok, PAIRS, "occlusion", max_length=40)
    assert all(a.prediction == 1 for a in attrs)
    rows = faithfulness_metrics(model, tok, attrs, model_name="m", percents=PERCENTS, max_length=40, n_boot=50)
    v = rows[rows.method == "occlusion"].set_index("metric").value
    p_hit, p_miss = 1 / (1 + np.exp(-3)), 1 / (1 + np.exp(3))
    assert v["comprehensiveness@1"] == pytest.approx(p_hit - p_miss, abs=1e-5)  # zebra (second side) removed
    assert v["sufficiency@1"] == pytest.approx(0.0, abs=1e-5)  # zebra alone, still on the second side
    assert v["comprehensiveness_aopc"] == pytest.approx(p_hit - p_miss, abs=1e-5)
    assert v["second_side_comprehensiveness_aopc"] == pytest.approx(p_hit - p_miss, abs=1e-5)
    assert v["first_side_comprehensiveness_aopc"] == pytest.approx(0.0, abs=1e-5)  # a first-side zebra is no cue
    for side in ("first", "second"):
        assert v[f"{side}_side_sufficiency_aopc"] == pytest.approx(0.0, abs=1e-5)
    r = rows[rows.method == "occlusion-random"].set_index("metric").value
    assert r["comprehensiveness_aopc"] > 0.2  # the ranking beats a random order
    assert np.isfinite(rows.value).all() and (rows.n == len(PAIRS)).all()
