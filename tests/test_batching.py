"""Tokenising with a word budget first (probe.models.batching.tokenize) gives the same token ids as
tokenising whole texts with truncation, for WordPiece, byte-level BPE and SentencePiece-style tokenizers."""

import pytest

from probe.data.sources import _load_bbc_news
from probe.models.backbones import load_tokenizer
from probe.models.batching import tokenize, truncate_words

ODD = ["word " * 300, "  many   spaces\n\nand\tnewlines " * 80, "\u200b " * 400 + "late words here " * 10,
       "x" * 5000, "", "short text", "café naïve résumé " * 100, "ÅÅÅ " * 200 + "end",
       "a-b,c.d!e?f " * 200, "\u0301 " * 300 + "after combining marks " * 30]


def _trained(kind: str, texts: list[str]):
    """A small tokenizer of the given kind trained here (offline) and wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "byte-level-bpe":  # GPT-2 style
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:  # SentencePiece style (Llama): metaspace, unigram
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   unk_token="<unk>" if kind != "byte-level-bpe" else None)


@pytest.mark.parametrize("kind", ["minilm", "byte-level-bpe", "metaspace-unigram"])
@pytest.mark.parametrize("max_length", [8, 64])
def test_word_budget_keeps_the_token_ids_of_whole_texts(kind, max_length):
    texts = _load_bbc_news().text.tolist()[:150] + ODD
    tokenizer = load_tokenizer("minilm") if kind == "minilm" else _trained(kind, texts[:150])
    whole = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    assert tokenize(tokenizer, texts, max_length) == whole
    cut = truncate_words(texts, max_length)
    assert sum(len(c) < len(t) for c, t in zip(cut, texts)) > 100  # the budget really cuts the articles
    assert all(t.startswith(c) for c, t in zip(cut, texts))  # a prefix: offsets stay valid for the text


def test_a_tokenizer_that_truncates_on_the_left_keeps_the_end_of_each_text():
    tokenizer = load_tokenizer("minilm")
    tokenizer.truncation_side = "left"
    texts = _load_bbc_news().text.tolist()[:20]
    whole = tokenizer(texts, truncation=True, max_length=16)["input_ids"]
    assert tokenize(tokenizer, texts, 16) == whole
