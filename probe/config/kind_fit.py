"""The checks of a config against its task kind's facts (:class:`probe.tasks.spec.KindSpec`), across config
sections: a second text column only for a kind that reads pairs; ``model.head: label-words`` (docs/design.md
§10: ``task.prompt``, ``task.label_words`` and ``task.label_word_synonyms`` belong to it, and it needs a kind
with prompt fields and a strategy that does not train a separate head); clm pretraining only for a kind a
causal decoder can serve."""

from __future__ import annotations

from probe.data.prompts import check_prompt
from probe.tasks import TASK_KINDS


def check_kind_fit(config) -> None:
    """Raise ``ValueError`` (reported as a config error) for settings the task kind cannot take."""
    spec = TASK_KINDS[config.task.type]
    if config.task.text_pair_column is not None and not spec.pair_input:
        pairs = [s.name for s in TASK_KINDS.values() if s.pair_input]
        raise ValueError(f"task.text_pair_column names a second text, but {config.task.type} reads one text per "
                         f"example; allowed: task.type {' or '.join(pairs)}, or no task.text_pair_column")
    check_head(config)
    if config.pretrain.enabled and config.pretrain.objective == "clm" and spec.decoder_refusal is not None:
        raise ValueError(f"pretrain.objective clm builds a causal decoder, and {config.task.type} with a decoder "
                         f"is not supported ({spec.decoder_refusal}); allowed: mlm")


def check_head(config) -> None:
    """Raise ``ValueError`` (reported as a config error) for a head setting that cannot work; fill in the
    kind's default prompt for label words."""
    spec, t = TASK_KINDS[config.task.type], config.task
    if config.model.head != "label-words":
        for key in ("prompt", "label_words", "label_word_synonyms"):
            if getattr(t, key) is not None:
                raise ValueError(f"task.{key} applies to model.head label-words; set it, or remove task.{key}")
        return
    if not spec.prompt_fields:
        raise ValueError(f"model.head label-words: {config.task.type} has no prompt to answer with a label word; "
                         "allowed: classifier")
    if config.finetune.strategy in ("linear_probe", "lp_ft"):
        raise ValueError(f"finetune.strategy {config.finetune.strategy} trains a head on a frozen encoder, and "
                         "label words are read through the language model's own output layer; allowed: full, "
                         "lora, bitfit")
    if t.prompt is None:
        t.prompt = spec.default_prompt
    try:
        check_prompt(t.prompt, "text_pair" in spec.prompt_fields)
    except Exception as e:  # ProbeError: reported as this field's error
        raise ValueError(str(e)) from None
    if t.label_words is not None and not t.label_words:
        raise ValueError("task.label_words: got an empty list; allowed: one word per class, or leave it out")
