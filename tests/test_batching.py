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


class _Counting:
    """A tokenizer wrapper that counts the texts it is asked to encode."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts, self.truncation_side = tokenizer, 0, tokenizer.truncation_side

    def __call__(self, texts, **kw):
        self.texts += len(texts)
        return self.tokenizer(texts, **kw)


def test_inside_an_encoding_cache_each_text_is_tokenised_once_with_the_same_ids():
    import probe.models.batching as batching

    base = load_tokenizer("minilm")
    texts = _load_bbc_news().text.tolist()[:40] + ODD
    plain = tokenize(base, texts, 32)
    tok = _Counting(base)
    with batching.encoding_cache():
        first = tokenize(tok, texts, 32)
        once = tok.texts
        assert once >= len(texts)
        first[0].append(-1)  # a caller that edits its ids does not edit the cache
        again = tokenize(tok, texts[::-1] + texts[:3], 32)
        assert tok.texts == once  # nothing tokenised again
        other_length = tokenize(tok, texts[:5], 16)
        assert tok.texts == once + 5  # a new max_length is a new entry
    assert first[1:] == plain[1:] and again == plain[::-1] + plain[:3]
    assert other_length == tokenize(base, texts[:5], 16)
    tokenize(tok, texts[:5], 32)  # outside the block nothing is kept
    assert tok.texts == once + 10


def test_the_encoding_cache_stops_growing_at_its_cap(monkeypatch):
    import probe.models.batching as batching

    monkeypatch.setattr(batching, "MAX_CACHED_TEXTS", 10)
    tok = _Counting(load_tokenizer("minilm"))
    texts = [f"text number {i}" for i in range(15)]
    with batching.encoding_cache():
        assert tokenize(tok, texts[:8], 16) == tokenize(tok.tokenizer, texts[:8], 16)
        assert tokenize(tok, texts, 16) == tokenize(tok.tokenizer, texts, 16)  # over the cap: not kept
        assert tok.texts == 8 + 7
        tokenize(tok, texts, 16)
        assert tok.texts == 8 + 7 + 7  # the 7 beyond the cap are tokenised again; the first 8 are not
