"""The augmentations that need a model: synonym replacement (a thesaurus from the backbone's input
embeddings, :mod:`probe.models.thesaurus`), contextual replacement (a masked LM) and back-translation
(two translation models), with the models they need and where those come from.

:class:`Augmenter` applies them to the training data of one fine-tuning run, every epoch, through the
pure functions of :mod:`probe.data.augment`, each from its own random stream (the epoch's generator,
the augmentation and its ``seed``), and counts the texts each changed. Word-level augmentations
(synonyms, contextual) act on the words the classifier reads, the first ``task.max_length`` tokens:
``rate`` is a share of those words, and the rest of a text is kept as it is.

Where the models come from, and refusals: the masked LM is the pretraining stage's checkpoint
(``mlm: auto`` with ``pretrain.enabled``), else ``model.backbone`` if it has a trained MLM head, or
the folder or hub name given; one without a trained head (``minilm`` ships without one) is refused.
Translation models are hub names or folders. :func:`check_sources` loads what can be loaded before
pretraining, so that a missing model is refused before any heavy work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from probe.config import AugmentationSection, BackTranslation, Config
from probe.data.augment import (back_translate, contextual_replace, count_changed, insert_synonyms, replace_synonyms,
                                split_word, substream, swap_words)
from probe.errors import ProbeError
from probe.models.thesaurus import embedding_thesaurus, whole_word_vocabulary

SYNONYM_STREAM, CONTEXTUAL_STREAM, BACK_TRANSLATION_STREAM = 1, 2, 3
_FIELD = "finetune.augmentation"
_MODELS: dict[tuple, Any] = {}  # loaded (model, tokenizer) pairs, kept for the process: seeds and variants share them


def _stamp(source: str) -> int | None:
    """The newest modification time in a model folder (None for hub names and built-ins)."""
    path = Path(source)
    if not path.is_dir():
        return None
    return max((p.stat().st_mtime_ns for p in path.iterdir() if p.is_file()), default=0)


def _first_line(e: Exception) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:200]


def mlm_source(config: Config, backbone: str | None = None) -> str | None:
    """Where contextual replacement's masked LM comes from: ``mlm``, or for ``auto`` the pretraining
    stage's checkpoint ``backbone`` (None before that stage ran) or ``model.backbone``."""
    mlm = config.finetune.augmentation.contextual_replacement.mlm
    if mlm != "auto":
        return mlm
    return backbone if config.pretrain.enabled else config.model.backbone


def load_mlm(source: str, seed: int = 0):
    """``(model, tokenizer)`` of a masked LM in eval mode; refuses a model without a trained MLM head.
    ``tiny-bert`` is a random one (from ``seed``), for tests."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from probe.models.backbones import BUILTIN_BACKBONES, load_tokenizer, quiet_transformers

    key = ("mlm", source, _stamp(source), seed)
    if key in _MODELS:
        return _MODELS[key]
    quiet_transformers()
    field, builtin = f"{_FIELD}.contextual_replacement.mlm", BUILTIN_BACKBONES.get(source)
    allowed = ("allowed: 'auto' with pretrain.enabled (the pretraining stage's checkpoint), or an MLM folder or hub "
               "name (needs a network)")
    if builtin is not None and builtin.weights_path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForMaskedLM.from_config(builtin.make_config())
        tokenizer = load_tokenizer(source)
    else:
        path = str(builtin.weights_path()) if builtin else source
        try:
            model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
            tokenizer = load_tokenizer(source) if builtin else AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, ImportError) as e:
            raise ProbeError(f"{field}: cannot load {source!r} as a masked language model ({_first_line(e)}); "
                             f"{allowed}") from None
        missing = [k for k in info["missing_keys"] if not k.endswith("position_ids")]
        if missing:
            raise ProbeError(f"{field}: {source!r} has no trained masked-LM head (missing {missing[0]}; minilm ships "
                             f"without one); {allowed}")
    if tokenizer.mask_token_id is None:
        raise ProbeError(f"{field}: the tokenizer of {source!r} has no mask token; {allowed}")
    _MODELS[key] = (model.eval(), tokenizer)
    return _MODELS[key]


def load_seq2seq(source: str, which: str):
    """``(model, tokenizer)`` of a translation model (``AutoModelForSeq2SeqLM``) in eval mode."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from probe.models.backbones import quiet_transformers

    key = ("seq2seq", source, _stamp(source))
    if key not in _MODELS:
        quiet_transformers()
        try:
            _MODELS[key] = (AutoModelForSeq2SeqLM.from_pretrained(source).eval(), AutoTokenizer.from_pretrained(source))
        except (OSError, ValueError, ImportError) as e:
            raise ProbeError(f"{_FIELD}.back_translation.{which}: cannot load translation model {source!r} "
                             f"({_first_line(e)}); allowed: a hub name such as Helsinki-NLP/opus-mt-en-de (needs a "
                             "network) or a folder with a sequence-to-sequence model and its tokenizer") from None
    return _MODELS[key]


def check_sources(config: Config) -> None:
    """Load the masked LM and translation models a config's augmentation names (cached for the
    fine-tuning stage), so that a missing one is refused before pretraining or fine-tuning.
    The pretraining stage's checkpoint (``mlm: auto`` with ``pretrain.enabled``) does not exist yet
    and is not checked."""
    aug = config.finetune.augmentation
    if aug.contextual_replacement is not None:
        source = mlm_source(config)
        if source is not None:
            load_mlm(source, config.seed)
    if aug.back_translation is not None:
        load_seq2seq(aug.back_translation.forward, "forward")
        load_seq2seq(aug.back_translation.backward, "backward")


class MaskedFiller:
    """A masked LM's predictions at masked words, for :func:`probe.data.augment.contextual_replace`.

    Each chosen word's letters become one mask token (its punctuation stays), all chosen words of a
    text at once; the candidates at a mask are the whole-word entries of the LM's vocabulary
    (:func:`probe.models.thesaurus.whole_word_vocabulary`: no stop-words, no pieces of words), best
    first, with their probability under the LM, ``width`` of them."""

    def __init__(self, model, tokenizer, device, max_length: int, width: int):
        import torch

        self.model, self.tokenizer, self.device = model.to(device), tokenizer, device
        self.max_length, self.width = max_length, width
        ids, words = whole_word_vocabulary(tokenizer)
        size = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else len(
            tokenizer)
        self.allowed = torch.full((size,), float("-inf"))
        self.allowed[torch.as_tensor(ids[ids < size])] = 0.0
        self.spelling = dict(zip(ids.tolist(), words))
        self.head = next((n for n in ("cls", "lm_head") if isinstance(getattr(model, n, None), torch.nn.Module)), None)

    def _inputs(self, items: list[tuple[list[str], list[int]]]) -> tuple[list[list[int]], list[dict[int, int]]]:
        """Token ids with each chosen word's core as one mask token, and per row: word -> mask position."""
        rows, marks = [], []
        for words, positions in items:
            chosen, pieces, mark = set(positions), [], {}
            for i, w in enumerate(words):
                parts = split_word(w) if i in chosen else None
                if parts is None:
                    pieces.append(w)
                    continue
                prefix, core, suffix = parts
                pieces.extend([prefix] if prefix else [])
                mark[len(pieces)] = i
                pieces.append(core)
                pieces.extend([suffix] if suffix else [])
            rows.append(pieces)
            marks.append(mark)
        enc = self.tokenizer(rows, is_split_into_words=True, truncation=True, max_length=self.max_length)
        out_ids, where = [], []
        for r, mark in enumerate(marks):
            ids, at, previous = [], {}, None
            for token, piece in zip(enc["input_ids"][r], enc.word_ids(r)):
                if piece is not None and piece in mark:
                    if piece != previous:
                        at[mark[piece]] = len(ids)
                        ids.append(self.tokenizer.mask_token_id)
                else:
                    ids.append(token)
                previous = piece
            out_ids.append(ids)
            where.append(at)
        return out_ids, where

    def __call__(self, items: list[tuple[list[str], list[int]]]) -> list[list[list[tuple[str, float]]]]:
        import torch

        from probe.models.batching import length_sorted_batches, pad_batch

        ids, where = self._inputs(items)
        out: list[list[list[tuple[str, float]]]] = [[[] for _ in positions] for _, positions in items]
        with torch.inference_mode():
            for idx in length_sorted_batches(ids, 32):
                batch = pad_batch(self.tokenizer, [ids[i] for i in idx]).to(self.device)
                found = [(b, where[i][word], i, slot) for b, i in enumerate(idx)
                         for slot, word in enumerate(items[i][1]) if word in where[i]]
                if not found:
                    continue
                rows, cols = [f[0] for f in found], [f[1] for f in found]
                slots = [(f[2], f[3]) for f in found]
                if self.head is None:
                    logits = self.model(**batch).logits[rows, cols]
                else:
                    hidden = self.model.base_model(**batch)[0][rows, cols]
                    logits = getattr(self.model, self.head)(hidden)
                logp = torch.log_softmax(logits.float(), dim=-1).cpu() + self.allowed
                top = logp.topk(min(self.width, int(torch.isfinite(self.allowed).sum())), dim=-1)
                for (i, slot), lp, tok in zip(slots, top.values.exp().tolist(), top.indices.tolist()):
                    out[i][slot] = [(self.spelling[t], p) for t, p in zip(tok, lp)]
        return out


class BackTranslator:
    """Round trips through two translation models, each text translated once and cached (in memory,
    and in ``cache_path`` as JSON when given, so reruns and the other seeds and variants of a sweep
    reuse them). Greedy or beam search (``num_beams``): one translation per text, no sampling."""

    def __init__(self, forward, backward, cfg: BackTranslation, device, cache_path: Path | None = None):
        import json

        self.forward, self.backward, self.cfg, self.device, self.cache_path = forward, backward, cfg, device, cache_path
        self.cache: dict[str, str] = {}
        if cache_path is not None and cache_path.exists():
            self.cache = json.loads(cache_path.read_text())
        self.translated = 0  # texts sent through the models (not served from the cache)

    def _run(self, model, tokenizer, texts: list[str]) -> list[str]:
        import torch

        out = [""] * len(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        model.to(self.device)
        with torch.inference_mode():
            for start in range(0, len(order), self.cfg.batch_size):
                idx = order[start: start + self.cfg.batch_size]
                enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=self.cfg.max_length,
                                padding=True, return_tensors="pt").to(self.device)
                generated = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                           num_beams=self.cfg.num_beams, do_sample=False,
                                           max_new_tokens=self.cfg.max_length)
                for i, text in zip(idx, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                    out[i] = " ".join(text.split())
        return out

    def __call__(self, texts: list[str]) -> list[str]:
        todo = sorted(set(texts) - set(self.cache))
        if todo:
            back = self._run(*self.backward, self._run(*self.forward, todo))
            self.cache.update(zip(todo, back))
            self.translated += len(todo)
            self._save()
        return [self.cache[t] for t in texts]

    def _save(self) -> None:
        from probe.distributed import current
        from probe.rundir import atomic_write_json

        if self.cache_path is not None and current().is_main:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.cache_path, self.cache)


@dataclass
class Augmenter:
    """The model-backed augmentations of one fine-tuning run (``finetune.augmentation``), applied in
    this order: back-translation (of whole texts), synonym replacement (EDA: replacement, then random
    insertion, then random swap), contextual replacement. ``keep``: the planted tokens, never changed.
    ``tokenizer`` and ``max_length`` say which words the classifier reads."""

    cfg: AugmentationSection
    tokenizer: Any
    max_length: int
    keep: tuple[str, ...] = ()
    thesaurus: Any = None
    filler: Any = None
    translator: Any = None

    def _heads(self, sentences: Sequence[Sequence[str]]) -> list[int]:
        """Per word list, how many leading words the classifier reads whole (a word cut by truncation is out)."""
        from probe.models.words import encode_words

        enc = encode_words(self.tokenizer, sentences, self.max_length)
        out = []
        for words, word_ids in zip(sentences, enc.word_ids):
            seen = [w for w in word_ids if w is not None]
            last = max(seen) + 1 if seen else 0
            out.append(len(words) if last >= len(words) else max(last - 1, 0))
        return out

    def _words(self, sentences: list[list[str]], tags: list[list[str]] | None, rng: np.random.Generator,
               counts: dict[str, int]) -> tuple[list[list[str]], list[list[str]] | None]:
        """The word-level augmentations on the read part of every word list; the rest is kept."""
        cut = self._heads(sentences)
        heads = [w[:n] for w, n in zip(sentences, cut)]
        head_tags = [t[:n] for t, n in zip(tags, cut)] if tags is not None else None
        syn, ctx = self.cfg.synonym_replacement, self.cfg.contextual_replacement
        if syn is not None:
            g = substream(rng, SYNONYM_STREAM, syn.seed)
            if hasattr(self.thesaurus, "prefetch"):  # an EmbeddingThesaurus: every look-up of this draw at once
                self.thesaurus.prefetch(p[1] for w in heads for p in map(split_word, w) if p)
            new = replace_synonyms(heads, self.thesaurus, syn.rate, g, keep=self.keep, tags=head_tags)
            new, new_tags = insert_synonyms(new, self.thesaurus, syn.insertion, g, keep=self.keep, tags=head_tags)
            new = swap_words(new, syn.swap, g, keep=self.keep, tags=new_tags)
            counts["synonym_replacement"] = count_changed(heads, new)
            heads, head_tags = new, new_tags
        if ctx is not None:
            new = contextual_replace(heads, ctx.rate, substream(rng, CONTEXTUAL_STREAM, ctx.seed), self.filler,
                                     top_k=ctx.top_k, keep=self.keep, tags=head_tags)
            counts["contextual_replacement"] = count_changed(heads, new)
            heads = new
        words = [h + list(w[n:]) for h, w, n in zip(heads, sentences, cut)]
        new_tags = [h + list(t[n:]) for h, t, n in zip(head_tags, tags, cut)] if tags is not None else None
        return words, new_tags

    def texts(self, texts: list[str], rng: np.random.Generator) -> tuple[list[str], dict[str, int]]:
        """Augmented training texts and, per augmentation, how many texts it changed."""
        counts: dict[str, int] = {}
        bt = self.cfg.back_translation
        if bt is not None:
            new = back_translate(texts, bt.rate, substream(rng, BACK_TRANSLATION_STREAM, bt.seed), self.translator)
            counts["back_translation"] = count_changed(texts, new)
            texts = new
        if self.cfg.synonym_replacement is not None or self.cfg.contextual_replacement is not None:
            before = [t.split() for t in texts]
            after, _ = self._words(before, None, rng, counts)
            texts = [t if a == b else " ".join(a) for t, a, b in zip(texts, after, before)]
        return texts, counts

    def sentences(self, sentences: Sequence, rng: np.random.Generator) -> tuple[list, dict[str, int]]:
        """Augmented tagged sentences (dataclasses with ``words`` and ``tags``, such as
        :class:`probe.tasks.tokens.tagging.Sentence`; only ``O`` words change,
        tags stay aligned) and, per augmentation, how many sentences it changed."""
        counts: dict[str, int] = {}
        words, tags = self._words([list(s.words) for s in sentences], [list(s.tags) for s in sentences], rng, counts)
        out = [s if w == list(s.words) else replace(s, words=w, tags=t) for s, w, t in zip(sentences, words, tags)]
        return out, counts


def build_augmenter(config: Config, *, backbone: str, tokenizer, device,
                    cache_dir: Path | None = None) -> Augmenter | None:
    """The :class:`Augmenter` of ``config.finetune.augmentation`` (None when no augmentation needs a
    model). ``backbone``: where the pretrained weights are (the pretraining stage's checkpoint, or
    ``model.backbone``), whose input embeddings make the thesaurus and which ``mlm: auto`` uses after
    pretraining; ``cache_dir``: where back-translations are kept (``cache/`` under it)."""
    from probe.config import stable_hash

    aug = config.finetune.augmentation
    if not aug.uses_models:
        return None
    keep = tuple(dict.fromkeys(f.token for f in config.spurious))
    out = Augmenter(aug, tokenizer, config.task.max_length, keep)
    if aug.synonym_replacement is not None:
        out.thesaurus = embedding_thesaurus(backbone, config.model.backbone, _stamp(backbone), config.seed,
                                            aug.synonym_replacement.neighbours, keep)
    if aug.contextual_replacement is not None:
        model, mlm_tokenizer = load_mlm(mlm_source(config, backbone), config.seed)
        out.filler = MaskedFiller(model, mlm_tokenizer, device, config.task.max_length,
                                  aug.contextual_replacement.top_k + 16)
    bt = aug.back_translation
    if bt is not None:
        key = stable_hash([bt.forward, bt.backward, _stamp(bt.forward), _stamp(bt.backward), bt.num_beams,
                           bt.max_length, "bt-v1"])
        path = cache_dir / "cache" / f"back-translation-{key}.json" if cache_dir is not None else None
        out.translator = BackTranslator(load_seq2seq(bt.forward, "forward"), load_seq2seq(bt.backward, "backward"),
                                        bt, device, path)
    return out
