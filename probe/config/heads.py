"""The checks of ``model.head`` across config sections (docs/design.md §10): ``task.prompt``,
``task.label_words`` and ``task.label_word_synonyms`` belong to ``model.head: label-words``, which needs a
task kind with prompt fields and a strategy that does not train a separate head."""

from __future__ import annotations

from probe.data.prompts import check_prompt
from probe.tasks import TASK_KINDS


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
