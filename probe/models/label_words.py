"""The label-words head: a causal language model answering a prompt with a label word (docs/design.md §10).

Instead of a classification head on top of the transformer, the language model itself reads each
text inside a prompt template (``task.prompt``, with ``{text}`` and, for pair tasks, ``{text_pair}``)
and the class scores are the log-probabilities of the classes' label words (``task.label_words``)
right after the prompt, through the model's own LM head (Schick & Schütze 2021, "Exploiting
Cloze Questions"; Brown et al. 2020). A label word of several tokens scores the sum of its tokens'
log-probabilities, each conditioned on the prompt and the word's earlier tokens.

Two objects make every analysis of a classifier work unchanged:

- :class:`PromptTokenizer` wraps the run's tokenizer: a text read by the model (``add_special_tokens``
  true, where special tokens frame a text) becomes its prompt; pieces tokenised without special tokens
  (a planted token, a thesaurus word, a pretraining corpus) stay as they are. A pair ``(first, second)``
  fills ``{text}`` and ``{text_pair}``. The texts are cut so that the whole template fits ``max_length`` (a
  pair's longer text first, as a pair is cut without a prompt); character offsets point into the text
  (template tokens get ``(0, 0)``, as special tokens do), so word-level analyses see only the text's words,
  and :meth:`~PromptTokenizer.encode_spans` says which text each token belongs to.
- :class:`LabelWordModel` wraps the causal LM: ``forward`` returns ``scores`` = the ``[batch, classes]``
  label-word log-probabilities, ``logits`` = their margins over the mean label word (same argmax and
  softmax; what attributions explain) and ``hidden_states`` of the prompt, so the pooled representation is
  the hidden state at the last prompt token (what the adapter's last-token pooling reads), and hooks,
  swaps and head ablation act on the LM's own blocks.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from probe.data.prompts import FIELDS, answer_text, check_prompt
from probe.errors import ProbeError
from probe.models.pair_tokens import longest_first

CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def is_causal_lm(model) -> bool:
    """Whether ``model`` (or the model a peft wrapper holds) is a causal language model with its LM head."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(inner).__name__.endswith(CAUSAL_LM_SUFFIXES)


@dataclass(frozen=True)
class LabelWords:
    """A prompt template and one label word per class, with the token ids each word continues a prompt with."""

    prompt: str
    words: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]  # per class: the label word's tokens after the prompt

    @property
    def pair(self) -> bool:
        return "{text_pair}" in self.prompt

    def format(self, text: str, text_pair: str | None = None) -> str:
        return self.prompt.format(text=text, text_pair="" if text_pair is None else text_pair)

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[classes, longest word]`` token ids (0 where a word is shorter) and their mask."""
        m = max(len(w) for w in self.ids)
        ids = torch.zeros(len(self.ids), m, dtype=torch.long)
        mask = torch.zeros(len(self.ids), m, dtype=torch.long)
        for k, w in enumerate(self.ids):
            ids[k, :len(w)], mask[k, :len(w)] = torch.as_tensor(w), 1
        return ids, mask


def label_words(tokenizer, prompt: str, words: list[str] | None, classes: list[str], pair: bool = False) -> LabelWords:
    """The :class:`LabelWords` of a run: ``words`` (default: the class names) tokenised as continuations of
    the template's end. Refuses a word that tokenises to nothing and two classes with the same word."""
    check_prompt(prompt, pair)
    words = list(classes) if words is None else list(words)
    if len(words) != len(classes):
        raise ProbeError(f"task.label_words: got {len(words)} words for {len(classes)} classes ({', '.join(classes)}); "
                         "allowed: one word or short phrase per class, in the class order")
    tail = prompt.rsplit("}", 1)[-1] or "x"
    base = tokenizer(tail, add_special_tokens=False)["input_ids"]
    ids = []
    for c, w in zip(classes, words):
        if not w.strip():
            raise ProbeError(f"task.label_words: the word of class {c!r} is empty; allowed: a word or short phrase")
        full = tokenizer(tail + answer_text(w), add_special_tokens=False)["input_ids"]
        if full[:len(base)] == base:
            cont = full[len(base):]
        else:  # the word merged with the template's end: its own tokens
            cont = tokenizer(answer_text(w), add_special_tokens=False)["input_ids"]
        cont = [i for i in cont if i not in set(tokenizer.all_special_ids)]
        if not cont:
            raise ProbeError(f"task.label_words: {w!r} (class {c!r}) tokenises to nothing after the prompt; "
                             "allowed: a word the tokenizer spells with at least one ordinary token")
        ids.append(tuple(cont))
    seen: dict[tuple[int, ...], str] = {}
    for c, w in zip(classes, ids):
        if w in seen:
            raise ProbeError(f"task.label_words: classes {seen[w]!r} and {c!r} have the same label word tokens; "
                             "allowed: a different word per class")
        seen[w] = c
    return LabelWords(prompt, tuple(words), tuple(ids))


class PromptTokenizer:
    """The run's tokenizer with texts read as prompts (see the module docstring); every other attribute is
    the wrapped tokenizer's (``inner``)."""

    def __init__(self, tokenizer, words: LabelWords, synonyms: list[str] | None = None) -> None:
        self.inner, self.words, self.synonyms = tokenizer, words, synonyms
        self._special = set(tokenizer.all_special_ids)

    def __getattr__(self, name):
        return getattr(self.__dict__["inner"], name) if "inner" in self.__dict__ else super().__getattribute__(name)

    def __setattr__(self, name, value) -> None:
        if name in ("inner", "words", "synonyms", "_special"):
            object.__setattr__(self, name, value)
        else:  # e.g. the pad token a decoder's tokenizer is given
            setattr(self.inner, name, value)

    def __len__(self) -> int:
        return len(self.inner)

    def __call__(self, text, text_pair=None, *, add_special_tokens: bool = True, truncation: bool = False,
                 max_length: int | None = None, return_offsets_mapping: bool = False, **kwargs):
        if not add_special_tokens:
            return self.inner(text, text_pair, add_special_tokens=False, truncation=truncation, max_length=max_length,
                              return_offsets_mapping=return_offsets_mapping, **kwargs)
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        pairs = [None] * len(texts) if text_pair is None else ([text_pair] if single else list(text_pair))
        rows = [self.encode_prompt(t, p, max_length if truncation else None) for t, p in zip(texts, pairs)]
        out = {"input_ids": [r[0] for r in rows], "attention_mask": [[1] * len(r[0]) for r in rows]}
        if return_offsets_mapping:
            out["offset_mapping"] = [r[1] for r in rows]
        return {k: v[0] for k, v in out.items()} if single else out

    def encode_prompt(self, text: str, text_pair: str | None = None, max_length: int | None = None,
                      strict: bool = False):
        """``(ids, offsets)`` of ``text``'s prompt: the template's leading special tokens (a BOS), none at
        the end; offsets into ``text`` (``(0, 0)`` outside it). With ``max_length`` the texts are cut first
        (:meth:`fit`)."""
        ids, spans = self.encode_spans(text, text_pair, max_length, strict)
        return ids, [(s, e) if side == 0 else (0, 0) for side, s, e in spans]

    def encode_spans(self, text: str, text_pair: str | None = None, max_length: int | None = None,
                     strict: bool = False):
        """``(ids, spans)``: the prompt's ids and per token ``(field, start, end)``, its field (0 ``{text}``, 1
        ``{text_pair}``, None the template and special tokens) and its character span in that field's text
        (what :func:`probe.models.pair_tokens.pair_offsets` gives for a pair)."""
        return self._encode(*self.fit(text, text_pair, max_length, strict))

    def fit(self, text: str, text_pair: str | None = None, max_length: int | None = None,
            strict: bool = False) -> tuple[str, str | None]:
        """The texts as the prompt holds them at ``max_length``: cut at their ends, in whole tokens, until the
        prompt fits; a pair longest first, as a pair of texts is (:func:`probe.models.pair_tokens.longest_first`:
        the longer text is cut, each keeps at least half of the room the template leaves), so comparing the
        result with the texts says which side was cut. The template itself is never cut: one that leaves no
        room for a text is refused with ``strict`` (the run's check before any work), else the prompt keeps the
        whole template with empty texts (an analysis asking for less room than the template, such as
        invariance's length budget)."""
        if max_length is None:
            return text, text_pair
        given = (text, text_pair)
        ids, _ = self._encode(text, text_pair)
        for _ in range(8):  # each round cuts by the overflow; merges at a cut may need another
            over = len(ids) - max_length
            if over <= 0:
                break
            n = (self._count(text), 0 if text_pair is None else self._count(text_pair))
            keep = (max(0, n[0] - over), 0) if text_pair is None else longest_first(n[0], n[1], max(0, sum(n) - over))
            text = self._keep(text, keep[0]) if keep[0] < n[0] else text
            text_pair = self._keep(text_pair, keep[1]) if text_pair is not None and keep[1] < n[1] else text_pair
            ids, _ = self._encode(text, text_pair)
        emptied = any(g is not None and g.strip() and not t.strip() for g, t in zip(given, (text, text_pair)))
        if strict and (len(ids) > max_length or emptied):
            what = "both texts" if text_pair is not None else "the text"
            raise ProbeError(f"task.max_length: {max_length} tokens leave no room for {what} in task.prompt "
                             f"{self.words.prompt!r}; allowed: more than the template's own tokens")
        return text, text_pair

    def _count(self, text: str) -> int:
        return len(self.inner(text, add_special_tokens=False)["input_ids"])

    def _keep(self, text: str, n: int) -> str:
        """``text`` up to the end of its ``n``-th token."""
        enc = self.inner(text, add_special_tokens=False, return_offsets_mapping=True)
        return text[:enc["offset_mapping"][n - 1][1]] if n > 0 else ""

    def _encode(self, text: str, text_pair: str | None):
        values, prompt, starts = {"text": text, "text_pair": text_pair or ""}, "", {}
        for literal, field, _, _ in string.Formatter().parse(self.words.prompt):
            prompt += literal
            if field is not None:
                starts[FIELDS.index(field)] = (len(prompt), len(prompt) + len(values[field]))
                prompt += values[field]
        enc = self.inner(prompt, add_special_tokens=True, return_offsets_mapping=True)
        ids, offs = list(enc["input_ids"]), list(enc["offset_mapping"])
        while len(ids) > 1 and ids[-1] in self._special:  # a [SEP] / EOS after the prompt: the answer goes there
            ids, offs = ids[:-1], offs[:-1]
        spans = []
        for s, e in offs:
            side = next((k for k, (a, b) in starts.items() if a <= s < e <= b), None)
            spans.append((None, 0, 0) if side is None else (side, s - starts[side][0], e - starts[side][0]))
        return ids, spans

    def pad(self, *args, **kwargs):
        return self.inner.pad(*args, **kwargs)


def decoder_of(lm: nn.Module) -> nn.Module:
    """The transformer inside a causal LM (or inside the LM a peft wrapper holds)."""
    inner = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return inner.base_model


@dataclass
class LabelWordOutput(ModelOutput):
    """``scores[b, k]`` = log P(label word k | prompt b); ``logits`` = the scores minus their mean over the
    classes: each label word's log-probability margin over the average label word. Their argmax and
    softmax are the scores', and an attribution of a class's logit is an attribution of that margin (the
    vocabulary's normalisation, common to every label word, cancels)."""

    logits: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class LabelWordModel(nn.Module):
    """A causal LM read as a classifier: ``scores[b, k]`` = log P(label word k | prompt b), ``logits`` their
    margins over the mean label word (:class:`LabelWordOutput`).

    ``lm``: an ``AutoModelForCausalLM`` (or a peft model on one); its config gets ``num_labels`` and
    ``id2label`` of the classes. Inputs are the prompts' ids (either padding side). All label words of
    one token: one pass, the next-token log-softmax at the last prompt token. Longer words: one pass
    over every (prompt, class) row with the class's word appended (position ids continue the prompt's,
    so padding between them changes nothing); ``hidden_states`` are then those of each prompt's first
    row, over the prompt's positions only.
    """

    answers_task = True  # a reference that needs no probe head: the pretrained LM answers the prompt itself

    def __init__(self, lm: nn.Module, words: LabelWords, classes: list[str] | None = None) -> None:
        super().__init__()
        self.lm, self.words = lm, words
        ids, mask = words.padded()
        self.register_buffer("word_ids", ids, persistent=False)
        self.register_buffer("word_mask", mask, persistent=False)
        config = self.config
        if classes is None:  # the names the LM's config already gives its classes, else the label words
            named = getattr(config, "id2label", None) or {}
            classes = [named[i] for i in range(len(named))] if len(named) == len(words.ids) else list(words.words)
        config.num_labels = len(classes)
        config.id2label, config.label2id = dict(enumerate(classes)), {c: i for i, c in enumerate(classes)}

    @property
    def base_model(self) -> nn.Module:
        return decoder_of(self.lm)

    @property
    def config(self):
        return self.base_model.config

    def get_input_embeddings(self) -> nn.Module:
        return self.base_model.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states: bool = False, inputs_embeds=None,
                **_ignored) -> LabelWordOutput:
        ref = input_ids if input_ids is not None else inputs_embeds
        batch, length = ref.shape[:2]
        mask = torch.ones(batch, length, dtype=torch.long, device=ref.device) if attention_mask is None \
            else attention_mask.long()
        words, wmask = self.word_ids.to(ref.device), self.word_mask.to(ref.device)
        k, m = words.shape
        last = (mask * torch.arange(length, device=ref.device)).argmax(1)
        if m == 1:
            hidden = self._run(input_ids, inputs_embeds, mask, output_hidden_states)
            h_last = hidden[-1][torch.arange(batch, device=ref.device), last]  # [batch, d]
            logp = self._log_softmax(h_last)
            scores = logp[:, words[:, 0]]
            states = hidden if output_hidden_states else None
        else:
            scores, states = self._multi_token(input_ids, inputs_embeds, mask, last, words, wmask, output_hidden_states)
        return LabelWordOutput(logits=scores - scores.mean(-1, keepdim=True), scores=scores, hidden_states=states)

    def _log_softmax(self, h: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.lm.get_output_embeddings()(h).float(), dim=-1)

    def _run(self, input_ids, inputs_embeds, mask, output_hidden_states: bool) -> tuple:
        position_ids = (mask.cumsum(1) - 1).clamp_min(0)
        out = self.base_model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask,
                              position_ids=position_ids, output_hidden_states=output_hidden_states)
        return tuple(out.hidden_states) if output_hidden_states else (out.last_hidden_state,)

    def _multi_token(self, input_ids, inputs_embeds, mask, last, words, wmask, output_hidden_states: bool):
        batch, length = mask.shape
        k, m = words.shape
        cont_ids, cont_mask = words[:, :-1].repeat(batch, 1), wmask[:, 1:].repeat(batch, 1)  # [batch*k, m-1]
        full_mask = torch.cat([mask.repeat_interleave(k, 0), cont_mask], 1)
        # the prompt's embeddings come from the embedding module, called once on the prompts as given (hooks on it,
        # such as captum's, see the batch they expect); the label words' are read from its table directly
        table = self.get_input_embeddings()
        prompt = table(input_ids) if inputs_embeds is None else inputs_embeds
        cont = torch.nn.functional.embedding(cont_ids, table.weight).to(prompt.dtype)
        hidden = self._run(None, torch.cat([prompt.repeat_interleave(k, 0), cont], 1), full_mask, output_hidden_states)
        rows = torch.arange(batch * k, device=mask.device)
        first = hidden[-1][rows, last.repeat_interleave(k)]  # predicts each word's first token
        rest = hidden[-1][:, length:]  # [batch*k, m-1, d]: position j predicts token j+1
        h = torch.cat([first.unsqueeze(1), rest], 1)  # [batch*k, m, d]
        logp = self._log_softmax(h)
        target = words.repeat(batch, 1)
        token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * wmask.repeat(batch, 1)
        scores = token_logp.sum(1).view(batch, k)
        states = None
        if output_hidden_states:
            states = tuple(s.view(batch, k, *s.shape[1:])[:, 0, :length] for s in hidden)
        return scores, states
