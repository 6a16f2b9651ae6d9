"""Text pairs: one label per pair of texts (NLI, paraphrase, question–answer relevance, claim–evidence,
next sentence).

``kind.py`` the :class:`~probe.tasks.base.TaskKind` (a sequence classifier whose input is a pair);
``data.py`` pair tables and group splits; ``news.py`` the built-in ``bbc-news-pairs``; ``task.py`` the
splits, planted tokens (on one side) and test partitions; ``analyses.py`` the analyses of one seed;
``partial.py`` partial-input tests; ``relations.py`` and ``edits.py`` relational properties and their
edits; ``effects.py`` and ``discovery.py`` causal tests and discovery on pairs; ``attribution.py`` the
attribution mass per side. Tokenising a pair is
shared (:mod:`probe.models.pair_tokens`). This module holds only the kind's light facts.
"""

from probe.tasks.spec import KindSpec

_AUGMENTATION = "augmentation edits single texts; it is not defined for pairs yet"

SPEC = KindSpec(
    name="text-pair",
    implementation="probe.tasks.pairs.kind:TextPairClassification",
    description="one label per pair of texts (premise and hypothesis, two sentences)",
    model_noun="pair classifier",
    auto_class="AutoModelForSequenceClassification",
    architecture_suffix="ForSequenceClassification",
    peft_task_type="SEQ_CLS",
    examples_noun="pairs",
    datasets=("bbc-news-pairs",),
    augmentation_refusals=tuple((f, _AUGMENTATION) for f in ("synonym_replacement", "contextual_replacement",
                                                             "back_translation", "word_deletion",
                                                             "counterfactual_rate")),
    pair_input=True,
    prompt_fields=("text", "text_pair"),
    default_prompt="First text: {text}\nSecond text: {text_pair}\nLabel:",
)
