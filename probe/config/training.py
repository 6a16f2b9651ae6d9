"""The config sections of the model stages: pretraining, compute, and fine-tuning with its strategies,
regularisers, adversarial training and augmentation."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from probe.config.base import Section, single_word
from probe.tasks import kind_spec


class PretrainArtifact(Section):
    """A token planted into the *pretraining* corpus only (issue 7): into texts of ``target_class``
    (corpus ``task``) or into texts containing any of ``words``; ``count`` times per chosen text, at
    random word positions, in a fraction ``rate`` of them. The fine-tuning data stay clean."""

    token: str = "zebra"
    target_class: Optional[str] = None
    words: list[str] = Field(default_factory=list)
    rate: float = Field(1.0, ge=0.0, le=1.0)
    count: int = Field(1, ge=1, le=64)

    @field_validator("token")
    @classmethod
    def _one_word(cls, v: str) -> str:
        return single_word(v)

    @model_validator(mode="after")
    def _one_selector(self) -> "PretrainArtifact":
        if (self.target_class is None) == (not self.words):
            raise ValueError("pretrain.artifact needs exactly one of target_class (a task class; corpus 'task') "
                             "or words (a list of words whose texts get the token)")
        return self


class ScratchSize(Section):
    """The BERT built when ``pretrain.init`` is ``scratch`` (the backbone's tokenizer is kept)."""

    layers: int = Field(4, ge=1, le=48)
    hidden: int = Field(256, ge=8, le=8192)
    heads: int = Field(4, ge=1, le=128)
    intermediate: int = Field(1024, ge=8, le=32768)

    @model_validator(mode="after")
    def _divisible(self) -> "ScratchSize":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


class PretrainConfig(Section):
    """Optional pretraining stage before fine-tuning; its checkpoint is the "pretrained" model of every
    later analysis. ``objective: mlm``: masked-language modelling (Devlin et al. 2019): 15 % of the
    tokens are chosen, 80 % of those become [MASK], 10 % a random token, 10 % stay. ``clm``: causal
    language modelling (next-token prediction, Radford et al. 2019), which makes a GPT-2-style decoder."""

    enabled: bool = False
    objective: Literal["mlm", "clm"] = Field(
        "mlm", description="'mlm': masked-language modelling (a BERT-style encoder); 'clm': next-token prediction "
        "(a GPT-2-style decoder)")
    init: Literal["continue", "scratch"] = Field(
        "continue", description="'continue': start from model.backbone's weights; 'scratch': a new model of "
        "pretrain.size (BERT for mlm, GPT-2 for clm) with the backbone's tokenizer")
    size: ScratchSize = ScratchSize()
    corpus: list[str] = Field(
        default_factory=lambda: ["task"], description="'task' (the task's texts outside the test split, "
        "unlabeled), text files (one text per line), JSONL / CSV files (text_column), saved datasets folders "
        "or 'hf:<name>[:<config>]'")
    text_column: str = "text"
    max_texts: Optional[int] = Field(None, ge=1, description="use at most this many corpus texts")
    steps: int = Field(500, ge=1, le=10_000_000)
    batch_size: int = Field(32, ge=1, le=65536)
    learning_rate: float = Field(5e-4, gt=0.0, lt=1.0)
    warmup_ratio: float = Field(0.06, ge=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0, lt=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    max_length: int = Field(128, ge=8, le=4096)
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    packing: bool = Field(True, description="concatenate texts and cut blocks of max_length (no padding); "
                          "false: one text per row, length-grouped batches")
    artifact: Optional[PretrainArtifact] = None


class ComputeConfig(Section):
    """How pretraining and fine-tuning use the hardware (results do not depend on it beyond float noise)."""

    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="'auto': bf16 autocast on CUDA, fp32 on the CPU")
    compile: bool = Field(False, description="torch.compile the model for training")
    dataloader_workers: int = Field(0, ge=0, le=64, description="worker processes feeding batches (pinned "
                                    "memory on CUDA)")


class LoraSection(Section):
    """LoRA adapters (Hu et al. 2022, via ``peft``): W + (alpha / rank) * B A on ``target_modules``."""

    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: Optional[list[str]] = Field(
        None, description="names (or name suffixes) of the linear layers that get adapters, e.g. query, key, value, "
        "dense; default: the architecture's attention query and value projections (query/value for BERT-style "
        "encoders, q_lin/v_lin for DistilBERT, c_attn for GPT-2, q_proj/v_proj for Llama, Qwen2, Mistral)")

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not isinstance(m, str) or not m.strip() for m in v)):
            raise ValueError(f"must be a non-empty list of module names such as ['query', 'value'], got {v}")
        return v


class AdversarialSection(Section):
    """Adversarial training on the word-embedding output: FGM (Miyato et al. 2017) or PGD (Madry et al. 2018).

    ``epsilon`` is the L2 radius per example; PGD takes ``steps`` ascent steps of size ``alpha``.
    """

    method: Literal["none", "fgm", "pgd"] = "none"
    epsilon: float = Field(1.0, gt=0.0, le=1000.0)
    steps: int = Field(3, ge=1, le=100)
    alpha: float = Field(0.3, gt=0.0, le=1000.0)


class SynonymReplacement(Section):
    """EDA's synonym replacement (Wei & Zou 2019) with a thesaurus taken from the backbone's own input
    embeddings (no download): a share ``rate`` of the words is replaced by one of each word's
    ``neighbours`` nearest whole-word vocabulary entries (cosine); EDA's random ``insertion`` (of a
    neighbour of a random word) and random ``swap`` of two words, as that many operations per word."""

    rate: float = Field(0.1, ge=0.0, lt=1.0, description="share of the words replaced by a neighbour")
    insertion: float = Field(0.0, ge=0.0, lt=1.0, description="neighbours inserted, per word of the text")
    swap: float = Field(0.0, ge=0.0, lt=1.0, description="swaps of two words, per word of the text")
    neighbours: int = Field(5, ge=1, le=100, description="nearest whole-word entries a replacement is drawn from")
    seed: int = Field(0, ge=0)


class ContextualReplacement(Section):
    """Contextual augmentation (Kobayashi 2018): a share ``rate`` of the words the classifier reads is
    masked and each is replaced by a word drawn from the masked language model's ``top_k`` predictions."""

    rate: float = Field(0.15, gt=0.0, lt=1.0, description="share of the words masked and refilled")
    mlm: str = Field("auto", description="'auto': the pretraining stage's checkpoint (pretrain.enabled), else "
                     "model.backbone if it has an MLM head; or an MLM folder or hub name")
    top_k: int = Field(5, ge=1, le=1000, description="predictions a replacement is drawn from (by probability)")
    seed: int = Field(0, ge=0)

    @field_validator("mlm")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be 'auto', an MLM folder or a hub name")
        return v


class BackTranslation(Section):
    """Back-translation (Sennrich et al. 2016; as augmentation for classification, Xie et al. 2020): a
    fraction ``rate`` of the training texts is replaced by its round trip through ``forward`` and
    ``backward`` translation models (hub names or folders); each text is translated once and cached."""

    rate: float = Field(0.5, gt=0.0, le=1.0, description="fraction of the training texts replaced")
    forward: str = "Helsinki-NLP/opus-mt-en-de"
    backward: str = "Helsinki-NLP/opus-mt-de-en"
    num_beams: int = Field(1, ge=1, le=16)
    max_length: int = Field(256, ge=8, le=4096, description="tokens of a text translated (the rest is dropped)")
    batch_size: int = Field(16, ge=1, le=1024)
    seed: int = Field(0, ge=0)


class AugmentationSection(Section):
    """Training-data augmentation, drawn afresh every epoch, applied to the training split only, labels
    unchanged (see ``probe.data.augment`` and ``probe.models.augmenters``)."""

    word_deletion: float = Field(0.0, ge=0.0, lt=1.0, description="per-word deletion probability")
    counterfactual_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of other-class training examples that get each planted "
        "token inserted, labels unchanged (Kaushik et al. 2020)")
    synonym_replacement: Optional[SynonymReplacement] = None
    contextual_replacement: Optional[ContextualReplacement] = None
    back_translation: Optional[BackTranslation] = None

    @property
    def uses_models(self) -> bool:
        """Whether an augmentation needs a model or a thesaurus (``probe.models.augmenters.Augmenter``)."""
        return any(x is not None for x in (self.synonym_replacement, self.contextual_replacement,
                                          self.back_translation))

    @property
    def active(self) -> bool:
        """Whether any augmentation is on (the fine-tuning loop then redraws the training data every epoch)."""
        return self.word_deletion > 0 or self.counterfactual_rate > 0 or self.uses_models

    def refusal(self, task_type: str) -> Optional[str]:
        """Why this augmentation cannot run for ``task_type``, or None."""
        spec = kind_spec(task_type)
        fields = ("synonym_replacement", "contextual_replacement", "back_translation", "word_deletion",
                  "counterfactual_rate")
        for field in fields:
            why = spec.augmentation_refusal(field)
            if why is not None and getattr(self, field) not in (None, 0, 0.0):
                allowed = [f for f in fields if spec.augmentation_refusal(f) is None]
                return (f"finetune.augmentation.{field}: {why}; allowed for {task_type}: {', '.join(allowed)}")
        return None


class FinetuneConfig(Section):
    """Fine-tuning for sequence classification with AdamW and linear warmup/decay.

    ``strategy``: ``full`` (every weight), ``linear_probe`` (frozen encoder, only the head:
    classifier and pooler), ``lp_ft`` (Kumar et al. 2022: ``lp_epochs`` of linear probing, then
    ``epochs`` of full fine-tuning from that head), ``lora`` (adapters plus the head) or
    ``bitfit`` (Ben Zaken et al. 2022: bias terms plus the head). Regularisers (``weight_decay``,
    ``l2_sp``, ``dropout``, ``early_stopping_patience``), ``adversarial`` training and
    ``augmentation`` combine with any strategy.
    """

    epochs: int = Field(3, ge=1, le=1000)
    learning_rate: float = Field(5e-5, gt=0.0, lt=1.0)
    batch_size: int = Field(16, ge=1, le=4096)
    weight_decay: float = Field(0.01, ge=0.0, lt=1.0)
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    strategy: Literal["full", "linear_probe", "lp_ft", "lora", "bitfit"] = "full"
    lp_epochs: int = Field(1, ge=1, le=1000, description="lp_ft: epochs of the linear-probing phase")
    lp_learning_rate: float = Field(
        1e-3, gt=0.0, lt=1.0, description="learning rate whenever only the head trains: linear_probe, and "
        "the first phase of lp_ft")
    lora: LoraSection = LoraSection()
    l2_sp: float = Field(
        0.0, ge=0.0, le=1e6, description="L2-SP strength alpha (Li et al. 2018): alpha/2 * sum ||theta - "
        "theta_pretrained||^2 over the trainable encoder weights, added to the loss")
    dropout: Optional[float] = Field(None, ge=0.0, lt=1.0, description="overrides the hidden and attention "
                                     "dropout probabilities of the backbone (None keeps its own)")
    early_stopping_patience: Optional[int] = Field(
        None, ge=1, le=1000, description="stop once validation accuracy has not improved for this many "
        "epochs and restore the best epoch's weights (None trains every epoch)")
    adversarial: AdversarialSection = AdversarialSection()
    augmentation: AugmentationSection = AugmentationSection()
