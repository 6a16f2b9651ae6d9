"""Pairs of texts tokenised as one input (probe.models.pair_tokens): BERT-, RoBERTa-, GPT-2- and
Llama-style tokenizers built offline; both sides survive truncation; segment ids where the model has them."""

import numpy as np
import pytest

from probe.models.backbones import load_tokenizer
from probe.models.batching import encoding_cache, pad_batch, tokenize
from probe.models.pair_tokens import cut_sides, encode_pairs, longest_first, segment_ids, separator_id

CORPUS = ["the cat sat on the mat and looked at the markets", "shares fell sharply on monday after the report",
          "the minister said the plan would cut costs", "a late goal won the match for the home side"] * 30


def _built(style: str):
    """A small tokenizer of ``style`` trained here (offline), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if style == "llama":  # SentencePiece style: metaspace unigram, <s> before a text, no separator token
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=200, unk_token="<unk>",
                                                               special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", model_input_names=["input_ids", "attention_mask"])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"] if style == "roberta" else ["<pad>", "<|endoftext|>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if style == "roberta":  # <s> A </s></s> B </s>, no segment ids
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                          ("<s>", tok.token_to_id("<s>")))
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                       sep_token="</s>", cls_token="<s>",
                                       model_input_names=["input_ids", "attention_mask"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|endoftext|>",
                                   model_input_names=["input_ids", "attention_mask"])


def _tokenizer(style: str):
    return load_tokenizer("minilm") if style == "bert" else _built(style)


LONG_A = "the minister said the plan would cut costs " * 6
LONG_B = "a late goal won the match for the home side " * 6
PAIRS = [(LONG_A, LONG_B), ("the cat sat", LONG_B), (LONG_A, "shares fell"), ("the cat sat", "shares fell")]


def _contains(row: list[int], part: list[int]) -> bool:
    return any(row[i: i + len(part)] == part for i in range(len(row) - len(part) + 1))


@pytest.mark.parametrize("style", ["bert", "roberta", "gpt2", "llama"])
def test_both_sides_are_present_after_truncation(style):
    tok = _tokenizer(style)
    ids = encode_pairs(tok, PAIRS, 24)
    for row, (a, b) in zip(ids, PAIRS):
        assert len(row) <= 24
        a_ids = tok(a, add_special_tokens=False)["input_ids"]
        b_ids = tok(b, add_special_tokens=False)["input_ids"]
        first_at = next(i for i in range(len(row)) if row[i: i + 2] == a_ids[:2])
        second_at = max(i for i in range(len(row)) if row[i: i + 2] == b_ids[:2])
        assert first_at < second_at  # the first text's start, then the second text's start
        assert _contains(row, a_ids[:2]) and _contains(row, b_ids[:2])
    short = ids[3]  # a pair that fits is kept whole
    assert _contains(short, tok("the cat sat", add_special_tokens=False)["input_ids"])
    assert _contains(short, tok("shares fell", add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("style", ["bert", "roberta"])
def test_encoders_use_their_own_pair_template(style):
    tok = _tokenizer(style)
    want = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], truncation="longest_first", max_length=24)["input_ids"]
    assert encode_pairs(tok, PAIRS, 24) == want
    if style == "roberta":
        sep, cls = tok.sep_token_id, tok.cls_token_id
        row = encode_pairs(tok, [("the cat sat", "shares fell")], 24)[0]
        assert row[0] == cls and row[-1] == sep and sum(t == sep for t in row) == 3  # <s> A </s></s> B </s>


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_decoders_get_one_separator_between_the_texts(style):
    tok = _tokenizer(style)
    sep = separator_id(tok)
    assert sep == [tok.eos_token_id]
    prefix = tok("", add_special_tokens=True)["input_ids"]
    assert prefix == ([] if style == "gpt2" else [tok.bos_token_id])
    a = tok("the cat sat", add_special_tokens=False)["input_ids"]
    b = tok("shares fell", add_special_tokens=False)["input_ids"]
    assert encode_pairs(tok, [("the cat sat", "shares fell")], 64) == [prefix + a + sep + b]
    row = encode_pairs(tok, [(LONG_A, LONG_B)], 21)[0]
    room = 21 - len(prefix) - 1
    long_a = tok(LONG_A, add_special_tokens=False)["input_ids"]
    long_b = tok(LONG_B, add_special_tokens=False)["input_ids"]
    assert row == prefix + long_a[:room // 2] + sep + long_b[:room - room // 2]  # the end of the pair is the second text


def test_longest_first_is_the_rule_of_the_tokenizers_library():
    tok = load_tokenizer("minilm")
    words = "one two three four five six seven eight nine ten eleven twelve".split()
    for na in range(1, 12):
        for nb in range(1, 12):
            for max_length in (7, 8, 12, 20):
                a, b = " ".join(words[:na]), " ".join(words[:nb])
                enc = tok(a, b, truncation="longest_first", max_length=max_length, return_token_type_ids=True)
                types = np.array(enc["token_type_ids"])
                kept = (int((types == 0).sum()) - 2, int((types == 1).sum()) - 1)
                assert longest_first(na, nb, max_length - 3) == kept, (na, nb, max_length)


def test_cut_sides_says_which_side_lost_tokens():
    tok = load_tokenizer("minilm")
    assert cut_sides(tok, PAIRS, 24) == {"first": 2, "second": 2}
    assert cut_sides(tok, [(LONG_A, "shares fell")], 24) == {"first": 1, "second": 0}
    assert cut_sides(tok, [("the cat sat", "shares fell")], 24) == {"first": 0, "second": 0}


def test_segment_ids_for_bert_pairs_and_nothing_for_single_texts_or_roberta():
    tok = load_tokenizer("minilm")
    ids = tokenize(tok, PAIRS, 24)
    want = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], truncation="longest_first", max_length=24,
               padding=True, return_tensors="pt")
    batch = pad_batch(tok, ids)
    assert batch["token_type_ids"].tolist() == want["token_type_ids"].tolist()
    assert batch["input_ids"].tolist() == want["input_ids"].tolist()
    assert "token_type_ids" not in pad_batch(tok, tokenize(tok, ["the cat sat", "shares fell"], 24))
    assert segment_ids(_built("roberta"), encode_pairs(_built("roberta"), PAIRS, 24)) is None


def test_a_pair_is_tokenised_once_inside_the_encoding_cache():
    base = load_tokenizer("minilm")

    class Counting:
        truncation_side = "right"
        sep_token_id, model_input_names = base.sep_token_id, base.model_input_names

        def __init__(self):
            self.calls = 0

        def num_special_tokens_to_add(self, pair=False):
            return base.num_special_tokens_to_add(pair=pair)

        def __call__(self, *args, **kw):
            self.calls += 1
            return base(*args, **kw)

    tok = Counting()
    plain = tokenize(base, PAIRS, 24)
    with encoding_cache():
        assert tokenize(tok, PAIRS, 24) == plain
        calls = tok.calls
        assert tokenize(tok, PAIRS[::-1], 24) == plain[::-1]
        assert tok.calls == calls
        assert tokenize(tok, ["the cat sat"], 24) == tokenize(base, ["the cat sat"], 24)  # texts and pairs apart
