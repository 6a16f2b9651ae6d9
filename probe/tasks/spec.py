"""The light facts of a task kind: what configuration checks, the command line and checkpoint reading
need to know about a kind without importing its (torch-heavy) implementation.

Each kind package (``probe/tasks/<kind>/__init__.py``) defines one :class:`KindSpec` as ``SPEC``; the
registry (:mod:`probe.tasks`) collects them. The kind's :class:`~probe.tasks.base.TaskKind` holds the
same spec and answers everything else (data, objective, representations, analyses).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindSpec:
    """One task kind's facts (docs/architecture.md, "Task kinds").

    ``name``: the ``task.type`` value. ``implementation``: ``"module:Class"`` of its
    :class:`~probe.tasks.base.TaskKind`, imported on first use. ``auto_class``: the ``transformers`` auto
    class of its fine-tuned model; ``architecture_suffix``: how that model's class name (and a checkpoint's
    ``config.json`` ``architectures``) ends; ``peft_task_type``: the ``peft`` task type of its LoRA
    adapters. ``datasets``: the built-in datasets (:data:`probe.data.sources.BUILTIN_DATASETS`) made
    for it. ``decoder_refusal``: why a causal decoder cannot be this kind's model (None: it can).
    ``augmentation_refusals``: ``(finetune.augmentation field, why this kind cannot use it)`` pairs.
    ``pair_input``: its examples are two texts (``task.text_pair_column`` names the second).
    ``prompt_fields``: the ``task.prompt`` fields its examples fill (``text``, and ``text_pair`` for pairs)
    when a causal LM answers with label words (``model.head: label-words``); empty: it cannot.
    ``default_prompt``: the template used when ``task.prompt`` is not set.
    """

    name: str
    implementation: str
    description: str
    model_noun: str
    auto_class: str
    architecture_suffix: str
    peft_task_type: str
    examples_noun: str = "examples"
    datasets: tuple[str, ...] = ()
    decoder_refusal: str | None = None
    augmentation_refusals: tuple[tuple[str, str], ...] = ()
    pair_input: bool = False
    prompt_fields: tuple[str, ...] = ()
    default_prompt: str | None = None

    def augmentation_refusal(self, field: str) -> str | None:
        """Why this kind cannot use augmentation ``field``, or None."""
        return dict(self.augmentation_refusals).get(field)
