"""Token classification: a tag per word, e.g. named entities.

``kind.py`` the :class:`~probe.tasks.base.TaskKind`; ``tagging.py`` tagged sentences (BIO) and their
loading; ``data.py`` the splits, planted markers and span pairs; ``objective.py`` the tagging objective;
``extract.py`` word vectors; ``properties.py`` word properties; ``analyses.py``, ``probing.py``,
``attribution.py``, ``behaviour.py``, ``entities.py`` the analyses; ``markers.py`` discovery of marker
words, ``vocabulary.py`` vocabulary triggers before an entity, ``reference.py`` the pretrained encoder as a tagger. This module holds only the kind's light facts (:class:`probe.tasks.spec.KindSpec`), read without
torch.
"""

from probe.tasks.spec import KindSpec

SPEC = KindSpec(
    name="token-classification",
    implementation="probe.tasks.tokens.kind:TokenClassification",
    description="a tag per word (named entities)",
    model_noun="tagger",
    auto_class="AutoModelForTokenClassification",
    architecture_suffix="ForTokenClassification",
    peft_task_type="TOKEN_CLS",
    examples_noun="entity spans",
    datasets=("wnut16",),
    decoder_refusal="a word's tag would not see the words after it",
    augmentation_refusals=(("back_translation", "a translation does not keep the words of a tagged sentence "
                                                "aligned with their tags"),),
)
