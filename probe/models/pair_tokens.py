"""Tokenising a pair of texts (premise and hypothesis, question and passage) as one model input.

Encoders with a separator token (BERT's ``[SEP]``, RoBERTa's ``</s>``) get the tokenizer's own pair
template: ``[CLS] first [SEP] second [SEP]`` with segment ids 0 / 1 where the model has them
(``token_type_ids`` among the tokenizer's inputs; RoBERTa has none), ``<s> first </s></s> second
</s>`` for RoBERTa (Devlin et al. 2019; Liu et al. 2019).

Tokenizers without a separator token (decoders: GPT-2, Llama, Qwen2) get one documented layout:
the special tokens the tokenizer puts on a single text (Llama's ``<s>``; none for GPT-2), the first
text, :func:`separator_id` (the end-of-text token, else the tokens of a newline), the second text.
A decoder reads left to right, so the pooled representation and the classifier's prediction are
at the last real token, the end of the second text (:func:`probe.models.adapter.pool`).

Truncation keeps both sides: when a pair is longer than ``max_length``, the longer side is cut at
its end until the pair fits (transformers' ``longest_first``, :func:`longest_first`), so each side
keeps at least half of the room or all of itself; :func:`cut_sides` says which side was cut.

A label-word reader (:class:`probe.models.label_words.PromptTokenizer`, recognised by its ``words``) reads a
pair as its prompt with both fields filled, cut by the same rule inside the room the template leaves;
:func:`encode_pairs`, :func:`cut_sides` and :func:`pair_offsets` ask it.
"""

from __future__ import annotations

from typing import Callable

from probe.errors import ProbeError

Pair = tuple[str, str]

#: text between the two sides for a decoder without an end-of-text token
DECODER_SEPARATOR = "\n"


def has_separator(tokenizer) -> bool:
    """Whether the tokenizer has its own pair template with a separator token (encoders)."""
    return getattr(tokenizer, "sep_token_id", None) is not None


def reads_prompts(tokenizer) -> bool:
    """Whether ``tokenizer`` reads examples as label-word prompts (a ``PromptTokenizer``: it has ``words``)."""
    return getattr(tokenizer, "words", None) is not None


def separator_id(tokenizer) -> list[int]:
    """The ids put between the two sides of a pair for a tokenizer without a separator token: its
    end-of-text token, else the tokens of :data:`DECODER_SEPARATOR`."""
    if getattr(tokenizer, "eos_token_id", None) is not None:
        return [int(tokenizer.eos_token_id)]
    ids = tokenizer(DECODER_SEPARATOR, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ProbeError("model.tokenizer: it has neither a separator nor an end-of-text token and encodes a "
                         "newline as nothing, so two texts cannot be told apart in one input; allowed: a tokenizer "
                         "with a sep_token or an eos_token")
    return list(ids)


def longest_first(n_first: int, n_second: int, room: int) -> tuple[int, int]:
    """Tokens kept of each side so that they fit ``room``: a side shorter than half the room is kept whole
    and the other cut to the rest; when both are longer, each keeps half, the longer one (on a tie the
    second) the odd token (the rule of the ``tokenizers`` library's ``longest_first``)."""
    if n_first + n_second <= room:
        return n_first, n_second
    short, long_ = sorted((n_first, n_second))
    if short <= room // 2:
        keep_short, keep_long = short, room - short
        return (keep_short, keep_long) if n_first <= n_second else (keep_long, keep_short)
    half, odd = room // 2, room % 2
    return (half + odd, half) if n_first > n_second else (half, half + odd)


def encode_pairs(tokenizer, pairs: list[Pair], max_length: int, cut: Callable | None = None) -> list[list[int]]:
    """Token ids of each pair (special tokens included, at most ``max_length``); both sides kept.

    ``cut(texts, max_length, tokenizer)`` shortens long texts to a word budget first
    (:func:`probe.models.batching.truncate_words`); each side is at most ``max_length`` tokens anyway."""
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    if cut is not None:
        firsts, seconds = cut(firsts, max_length, tokenizer), cut(seconds, max_length, tokenizer)
    if reads_prompts(tokenizer):
        return [tokenizer.encode_spans(a, b, max_length)[0] for a, b in zip(firsts, seconds)]
    if has_separator(tokenizer):
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
        if room < 2:
            raise ProbeError(f"task.max_length: {max_length} leaves no room for both texts of a pair; allowed: at "
                             f"least {max_length - room + 2}")
        return tokenizer(firsts, seconds, truncation="longest_first", max_length=max_length)["input_ids"]
    prefix = tokenizer("", add_special_tokens=True)["input_ids"]
    sep = separator_id(tokenizer)
    room = max_length - len(prefix) - len(sep)
    if room < 2:
        raise ProbeError(f"task.max_length: {max_length} leaves no room for both texts of a pair; allowed: at least "
                         f"{max_length - room + 2}")
    a_ids = tokenizer(firsts, add_special_tokens=False)["input_ids"]
    b_ids = tokenizer(seconds, add_special_tokens=False)["input_ids"]
    out = []
    for a, b in zip(a_ids, b_ids):
        ka, kb = longest_first(len(a), len(b), room)
        out.append(list(prefix) + list(a[:ka]) + sep + list(b[:kb]))
    return out


def cut_sides(tokenizer, pairs: list[Pair], max_length: int) -> dict[str, int]:
    """How many pairs lose tokens of their first and of their second text to truncation at ``max_length``."""
    if reads_prompts(tokenizer):
        kept = [tokenizer.fit(a, b, max_length) for a, b in pairs]
        return {"first": sum(k[0] != p[0] for k, p in zip(kept, pairs)),
                "second": sum(k[1] != p[1] for k, p in zip(kept, pairs))}
    a = [len(x) for x in tokenizer([p[0] for p in pairs], add_special_tokens=False)["input_ids"]]
    b = [len(x) for x in tokenizer([p[1] for p in pairs], add_special_tokens=False)["input_ids"]]
    room = _room(tokenizer, max_length)
    kept = [longest_first(x, y, room) for x, y in zip(a, b)]
    return {"first": sum(k[0] < x for k, x in zip(kept, a)), "second": sum(k[1] < y for k, y in zip(kept, b))}


def _room(tokenizer, max_length: int) -> int:
    """Tokens left for the two texts of a pair at ``max_length``."""
    if has_separator(tokenizer):
        return max_length - tokenizer.num_special_tokens_to_add(pair=True)
    return max_length - len(tokenizer("", add_special_tokens=True)["input_ids"]) - len(separator_id(tokenizer))


def segment_ids(tokenizer, ids: list[list[int]]) -> list[list[int]] | None:
    """Segment ids (0 for the first text and its special tokens, 1 for the second) for a model that has
    them, read from the ids: 1 after the first separator token of a sequence with two of them. ``None``
    when the tokenizer has no segment ids or no sequence is a pair (single texts are left as they were)."""
    if not has_separator(tokenizer) or "token_type_ids" not in getattr(tokenizer, "model_input_names", ()):
        return None
    sep = tokenizer.sep_token_id
    out, any_pair = [], False
    for row in ids:
        where = [j for j, t in enumerate(row) if t == sep]
        if len(where) >= 2:
            any_pair = True
            out.append([0] * (where[0] + 1) + [1] * (len(row) - where[0] - 1))
        else:
            out.append([0] * len(row))
    return out if any_pair else None


def pair_offsets(tokenizer, pairs: list[Pair], max_length: int) -> tuple[list[list[int]], list[list[tuple]]]:
    """The ids :func:`encode_pairs` gives, and per token ``(side, start, end)``: its text (0, 1; ``None`` for
    special and separator tokens, and a prompt's template) and its character span in that text, for a
    word-level step on pairs."""
    if reads_prompts(tokenizer):
        rows = [tokenizer.encode_spans(a, b, max_length) for a, b in pairs]
        return [list(ids) for ids, _ in rows], [spans for _, spans in rows]
    ids = encode_pairs(tokenizer, pairs, max_length)
    sides = [tokenizer([p[k] for p in pairs], add_special_tokens=False, return_offsets_mapping=True) for k in (0, 1)]
    room, out = _room(tokenizer, max_length), []
    for i, row in enumerate(ids):
        a, b = sides[0]["input_ids"][i], sides[1]["input_ids"][i]
        ka, kb = longest_first(len(a), len(b), room)
        sa = _start(row, a, ka)
        sb = _start(row, b, kb, after=sa + ka)
        spans: list[tuple] = [(None, 0, 0)] * len(row)
        spans[sa: sa + ka] = [(0, s, e) for s, e in sides[0]["offset_mapping"][i][:ka]]
        spans[sb: sb + kb] = [(1, s, e) for s, e in sides[1]["offset_mapping"][i][:kb]]
        out.append(spans)
    return [list(r) for r in ids], out


def encode_pair_words(tokenizer, pairs: list[tuple[list[str], list[str]]], max_length: int):
    """:func:`probe.models.words.encode_words` for pairs of word lists: the ids :func:`encode_pairs` gives the
    joined words, and each token's word, numbered over the first text's covered words and then the second's.
    Returns ``(EncodedWords, covered words of each side [(first, second)])``; a word cut off by truncation
    is in neither count, so word ``n_first + j`` is the second text's word ``j``."""
    from probe.models.words import EncodedWords, covered_words, word_of_tokens

    ids, offsets = pair_offsets(tokenizer, [(" ".join(a), " ".join(b)) for a, b in pairs], max_length)
    word_ids, covered = [], []
    for pair, spans in zip(pairs, offsets):
        side = [word_of_tokens([(s, e) if k == j else (0, 0) for k, s, e in spans], _spans(pair[j])) for j in (0, 1)]
        n_first = covered_words(side[0])
        word_ids.append([w if k == 0 else (None if v is None else n_first + v)
                         for (k, _, _), w, v in zip(spans, side[0], side[1])])
        covered.append((n_first, covered_words(side[1])))
    return EncodedWords(ids, word_ids), covered


def _spans(words: list[str]) -> list[tuple[int, int]]:
    out, start = [], 0
    for w in words:
        out.append((start, start + len(w)))
        start += len(w) + 1
    return out


def _start(row: list[int], side: list[int], kept: int, after: int = 0) -> int:
    """Where the ``kept`` leading ids of ``side`` begin in ``row`` (at or after ``after``)."""
    for s in range(after, len(row) - kept + 1):
        if list(row[s: s + kept]) == list(side[:kept]):
            return s
    raise ValueError("a side's tokens are not in the pair's ids")

