"""Text classification: one label per text (the default task kind).

``kind.py`` the :class:`~probe.tasks.base.TaskKind`; ``data.py`` the splits, planted tokens and test
partitions; ``objective.py`` the fine-tuning objective; ``analyses.py`` the analyses of one seed. This
module holds only the kind's light facts (:class:`probe.tasks.spec.KindSpec`), read without torch.
"""

from probe.tasks.spec import KindSpec

SPEC = KindSpec(
    name="text-classification",
    implementation="probe.tasks.sequence.kind:SequenceClassification",
    description="one label per text",
    model_noun="classifier",
    auto_class="AutoModelForSequenceClassification",
    architecture_suffix="ForSequenceClassification",
    peft_task_type="SEQ_CLS",
    datasets=("bbc-news",),
    prompt_fields=("text",),
    default_prompt="Text: {text}\nLabel:",
)
