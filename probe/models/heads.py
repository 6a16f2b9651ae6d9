"""What a model answers with: its head (``model.head``), the one place the rest of the code asks.

- ``classifier``: the task kind's head on the backbone (``KindSpec.auto_class``, e.g. a sequence
  classifier); texts are read as they are, and the model's ``logits`` are the head's.
- ``label-words``: a causal LM answering ``task.prompt`` with a class's label word
  (:mod:`probe.models.label_words`); texts are read as prompts (:class:`PromptTokenizer`) and the
  model every analysis sees is a :class:`LabelWordModel`, whose ``logits`` are the label words'
  log-probabilities and whose pooled representation is the hidden state at the last prompt token.

Training, saving and loading handle the plain model (``auto_class``: the LM itself for label words,
so a LoRA adapter is a causal-LM adapter and a saved folder is an ordinary causal-LM checkpoint);
:func:`as_predictor` turns it into what the analyses read.
"""

from __future__ import annotations

from probe.errors import ProbeError

LABEL_WORDS = "label-words"


def uses_label_words(config) -> bool:
    return config.model.head == LABEL_WORDS


def model_noun(config, kind) -> str:
    """What the log calls the model: a label-word LM, or the kind's noun (classifier, tagger)."""
    return "label-word LM" if uses_label_words(config) else kind.model_noun


def auto_class(config, kind):
    """The ``transformers`` auto class of the model fine-tuned or loaded: the kind's, or a causal LM."""
    if uses_label_words(config):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM
    return kind.auto_class()


def head_key(config) -> list:
    """What a label-word head adds to the keys of cached activations and fine-tuned models (nothing for a
    classifier, so their keys stay as they were)."""
    if not uses_label_words(config):
        return []
    return [LABEL_WORDS, config.task.prompt, config.task.label_words]


def reading_tokenizer(config, tokenizer, classes: list[str]):
    """The tokenizer analyses read texts with: ``tokenizer`` itself, or for label words a
    :class:`~probe.models.label_words.PromptTokenizer` over it (label words checked against it)."""
    if not uses_label_words(config):
        return tokenizer
    from probe.models.label_words import PromptTokenizer, label_words
    from probe.tasks import kind_spec

    pair, t = "text_pair" in kind_spec(config.task.type).prompt_fields, config.task
    if t.label_word_synonyms is not None:  # refused now, not skipped later as a variant
        try:
            label_words(tokenizer, t.prompt, t.label_word_synonyms, classes, pair)
        except ProbeError as e:
            raise ProbeError(str(e).replace("task.label_words", "task.label_word_synonyms")) from None
    reader = PromptTokenizer(tokenizer, label_words(tokenizer, t.prompt, t.label_words, classes, pair),
                             t.label_word_synonyms)
    reader.encode_prompt("x", "x" if pair else None, t.max_length, strict=True)  # a template over max_length: refused
    return reader


def raw_tokenizer(tokenizer):
    """The tokenizer under a prompt tokenizer (itself otherwise)."""
    return getattr(tokenizer, "inner", tokenizer)


def as_predictor(model, tokenizer, classes: list[str] | None = None):
    """What the analyses read: ``model`` itself, or for label words (``tokenizer`` a prompt tokenizer) the
    causal LM ``model`` wrapped as a :class:`~probe.models.label_words.LabelWordModel`."""
    words = getattr(tokenizer, "words", None)
    if words is None:
        return model
    from probe.models.label_words import LabelWordModel, is_causal_lm

    if isinstance(model, LabelWordModel):
        return model
    if not is_causal_lm(model):
        raise ProbeError(f"model.head: label-words reads a causal language model's next-token logits, got "
                         f"{type(model).__name__}; allowed: a causal LM (GPT-2, Llama, Qwen2, Mistral) or head: "
                         "classifier")
    return LabelWordModel(model, words, classes).eval()


def saved_head(tokenizer) -> dict | None:
    """What ``strategy.json`` records of a label-word head (``head``, ``prompt``, ``label_words``), so that
    ``probe diagnose`` can read the folder with the same prompt; None for a classifier."""
    words = getattr(tokenizer, "words", None)
    if words is None:
        return None
    return {"head": LABEL_WORDS, "prompt": words.prompt, "label_words": list(words.words)}


def objective(base, tokenizer):
    """The fine-tuning objective: the kind's ``base`` objective, or for label words its examples trained as
    prompt + gold label word (:class:`~probe.models.label_word_training.LabelWordObjective`)."""
    if getattr(tokenizer, "words", None) is None:
        return base
    from probe.models.label_word_training import LabelWordObjective

    return LabelWordObjective(base, tokenizer)


def check_backbone(config) -> None:
    """Refuse, before any heavy work, label words on a model that is not a causal decoder (read from its
    config: an encoder such as BERT has no next-token distribution to read)."""
    if not uses_label_words(config):
        return
    from probe.models.adapter import LAYOUTS
    from probe.models.backbones import model_type

    if config.pretrain.enabled:
        if config.pretrain.objective != "clm":
            raise ProbeError("model.head: label-words needs a causal LM, and pretrain.objective mlm builds a masked "
                             "LM; allowed: pretrain.objective clm, or head: classifier")
        return
    for key in ("finetuned", "backbone"):
        name = getattr(config.model, key)
        if name is None:
            continue
        found = model_type(name)
        if found is not None and not any(lay.causal and found in lay.model_types for lay in LAYOUTS):
            raise ProbeError(f"model.{key}: {name!r} is a {found} model, not a causal decoder, and model.head "
                             "label-words reads a causal LM's next-token logits; allowed: GPT-2, Llama, Qwen2, "
                             "Mistral (or head: classifier)")


def pretrained_label_word_model(ctx, seed: int, dtype=None):
    """The pretrained causal LM (``ctx.backbone``) read through the run's label words: the zero-shot
    reference of a label-word run (no probe head needed)."""
    from transformers import AutoModelForCausalLM

    from probe.models.backbones import build_with_head

    classes = ctx.kind.labels(ctx.data)
    lm = build_with_head(AutoModelForCausalLM, ctx.backbone, classes, seed)
    return as_predictor(lm.to(dtype) if dtype is not None else lm, ctx.tokenizer, classes)
