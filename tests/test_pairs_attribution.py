"""Attribution, invariance and erasure inputs for pairs of texts: words of both sides in one input with the
model's segment ids, the attribution mass split by side (known answers), perturbations on one side, and a
planted token's pieces taken on its side only."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from probe.analyses.attribution import WordAttributions, word_attributions
from probe.analyses.invariance import fit_pairs_to_length, invariance_metrics
from probe.models.backbones import load_encoder, load_tokenizer
from probe.models.batching import tokenize
from probe.models.pair_tokens import encode_pair_words, encode_pairs
from probe.models.probe_head import fit_probe_head_on_features
from probe.tasks.pairs.attribution import pair_attribution_metrics, side_shares

PAIRS = [("the cat sat on the mat today", "a zebra ran far away"),
         ("short one", "another quite long text with many words in it to be cut")]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-bert")


class SecondOnly(torch.nn.Module):
    """A pair classifier that reads only the second text (segment id 1): its logits are a linear map of the
    summed embeddings there, so nothing on the first text can carry attribution."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, 8)
        self.out = torch.nn.Linear(8, 2)
        self.config = SimpleNamespace(num_labels=2)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
        w = (token_type_ids * attention_mask).float().unsqueeze(-1)
        return SimpleNamespace(logits=self.out((self.emb(input_ids) * w).sum(1)))


def test_pair_words_are_the_ids_the_model_sees_numbered_first_then_second(tok):
    enc, covered = encode_pair_words(tok, [(a.split(), b.split()) for a, b in PAIRS], 12)
    assert enc.input_ids == encode_pairs(tok, PAIRS, 12)
    assert covered == [(5, 4), (2, 7)]  # longest-first truncation: the longer side loses words
    assert enc.word_ids[0] == [None, 0, 1, 2, 3, 4, None, 5, 6, 7, 8, None]
    assert enc.word_ids[1] == [None, 0, 1, None, 2, 3, 4, 5, 6, 7, 8, None]


def test_side_shares_and_the_token_counted_on_its_side_only():
    a = WordAttributions(["zebra", "a", "zebra", "b"], np.array([1.0, -1.0, 2.0, 0.0]), 0, "saliency", n_first=2)
    assert side_shares(a) == (0.5, 0.5)
    rows = pair_attribution_metrics([a], model_name="m", n_boot=10, token="zebra", side="second", feature="f")
    value = dict(zip(rows.metric, rows.value))
    assert value["token_side_share"] == 0.5 and value["token_side_input_share"] == 0.5
    assert value["spurious_attribution_share"] == 0.5  # 2 of 4; the first text's zebra (1) is not counted
    assert value["spurious_top1_rate"] == 1.0 and value["spurious_input_share"] == 0.25
    with pytest.raises(ValueError, match="allowed: first, second"):
        pair_attribution_metrics([a], model_name="m", token="zebra", side="middle")


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "input_x_gradient", "occlusion"])
def test_a_second_text_only_model_puts_no_attribution_on_the_first_text(tok, method):
    model = SecondOnly(tok.vocab_size)
    attrs = word_attributions(model, tok, PAIRS, method, max_length=12, n_steps=16)
    for a in attrs:
        assert np.all(a.scores[: a.n_first] == 0) and np.abs(a.scores[a.n_first:]).sum() > 0
    rows = pair_attribution_metrics(attrs, model_name="m", n_boot=20)
    assert dict(zip(rows.metric, rows.value)) == {"first_side_share": 0.0, "second_side_share": 1.0}


@pytest.fixture(scope="module")
def binary_probe_head():
    """The pretrained tiny-bert explained as the run explains it: through a two-class probe head."""
    encoder = load_encoder("tiny-bert", 0).eval()
    feats = np.random.default_rng(0).normal(size=(40, encoder.config.hidden_size))
    return fit_probe_head_on_features(encoder, feats, np.arange(40) % 2, device="cpu")


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "input_x_gradient", "occlusion"])
def test_a_binary_probe_head_explains_either_class_of_every_input(tok, binary_probe_head, method):
    """Both logits of a two-class probe head depend on the input: explaining class 0 is not all zeros (a
    constant class-0 logit once made every pretrained attribution of a class-0 prediction 0, and the side
    shares dropped those examples), for pairs and single texts alike."""
    for texts in ([a for a, _ in PAIRS], PAIRS):
        for cls in (0, 1):
            attrs = word_attributions(binary_probe_head, tok, texts, method, max_length=12, n_steps=8,
                                      target=[cls] * len(texts), delta_warn=np.inf)
            assert all(np.abs(a.scores).sum() > 0 for a in attrs), (texts, cls)
    rows = pair_attribution_metrics(attrs, model_name="pretrained", n_boot=20)  # every pair counted
    assert list(rows.n) == [len(PAIRS)] * 2


def test_invariance_perturbs_one_side_and_leaves_room_for_it(tok):
    pairs = [(" ".join(["word"] * 30), " ".join(["other"] * 30))] * 4
    url = "https://www.example.com/page"
    fitted = fit_pairs_to_length(tok, pairs, 32, reserve=len(tok(url, add_special_tokens=False)["input_ids"]))
    for a, b in fitted:
        assert 0 < len(a.split()) < 30 and 0 < len(b.split()) < 30
        assert len(tokenize(tok, [(a, f"{b} {url}")], 10_000)[0]) <= 32  # the addition is not truncated away
    model = SecondOnly(tok.vocab_size)
    rows = invariance_metrics(model, tok, PAIRS * 3, max_length=24, n_boot=20, side=0)
    assert (rows[rows.metric == "change_rate"].value == 0).all()  # the model never reads the first text
    second = invariance_metrics(model, tok, PAIRS * 3, max_length=24, n_boot=20, side=1)
    url = second[(second.property == "add_url") & (second.metric == "change_rate")].iloc[0]
    assert url.identical_inputs == 0.0 and url.value > 0  # the text it reads changed: predictions move


def test_erasure_marks_the_planted_token_on_its_side_only(tok):
    from transformers import BertConfig, BertForSequenceClassification

    from probe.causal.token_activations import token_activations

    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16))
    pairs = [("zebra sat here", "a zebra ran"), ("no token", "none here"), ("zebra", "other words")]
    acts = token_activations(model, tok, pairs, [1], 16, 8, "cpu", token="zebra", side="second")
    zebra = tok("zebra", add_special_tokens=False)["input_ids"]
    sep = tok.sep_token_id
    ids = tokenize(tok, pairs, 16)
    marked = [(int(d), int(p)) for d, p in zip(acts.doc_index[acts.has_token], acts.position[acts.has_token])]
    assert marked == [(0, ids[0].index(sep) + 2)] and ids[0][marked[0][1]] == zebra[0]
    assert acts.doc_has_token.tolist() == [True, False, False]


@pytest.mark.parametrize("style", ["bert", "roberta", "gpt2", "llama"])
def test_pair_words_on_every_tokenizer_family(style):
    from tests.test_pairs_tokens import PAIRS as LONG, _tokenizer

    tok = _tokenizer(style)
    split = [(a.split(), b.split()) for a, b in LONG]
    enc, covered = encode_pair_words(tok, split, 24)
    assert enc.input_ids == encode_pairs(tok, [(" ".join(a), " ".join(b)) for a, b in split], 24)
    for (a, b), (ca, cb), ids, wids in zip(split, covered, enc.input_ids, enc.word_ids):
        assert 0 < ca <= len(a) and 0 < cb <= len(b)
        words = [w for w in wids if w is not None]
        assert words == sorted(words) and set(words) == set(range(ca + cb))  # every kept word, in order
        for side, (lo, hi), text in ((0, (0, ca), a), (1, (ca, ca + cb), b)):  # each word's pieces decode to it
            for w in range(lo, hi):
                pieces = [t for t, x in zip(ids, wids) if x == w]
                assert tok.decode(pieces).strip() in text[w - lo]


def test_erasure_marks_the_token_in_texts_with_newlines_on_a_byte_level_tokenizer():
    """Offsets into the original texts: a newline (its own byte-level piece) does not break the marking."""
    from tests.test_pairs_tokens import _tokenizer

    from probe.causal.token_activations import _pair_piece_mask

    tok = _tokenizer("roberta")
    pairs = [("the cat\nsat", "the  markets\nfell the"), ("the plan", "cut the costs")]
    ids = tokenize(tok, pairs, 64)
    mask = _pair_piece_mask(tok, pairs, ids, 64, "the", "second", False)
    rows = np.split(mask, np.cumsum([len(r) for r in ids])[:-1])
    for row, marked, (_, second) in zip(ids, rows, pairs):
        assert tok.decode([t for t, m in zip(row, marked) if m]).replace(" ", "") == "the" * second.split().count("the")
