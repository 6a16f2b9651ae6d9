"""The sections of an experiment config (pydantic models): every field, its default and what is allowed
(the model stages' sections are :mod:`probe.config.training`).

Validation happens once, at the edge (:func:`probe.config.load_config`); internal code trusts a
:class:`Config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from probe.config.base import Section, single_word, stable_hash
from probe.config.kind_fit import check_kind_fit
from probe.config.measurement import AnalysesConfig, CausalConfig, DiscoverConfig
from probe.config.training import ComputeConfig, FinetuneConfig, PretrainConfig
from probe.tasks import DEFAULT_KIND, TASK_KINDS


class TaskConfig(Section):
    """What to fine-tune on. Split sizes are counts (int >= 1) or fractions (0 < x < 1).

    ``type`` is a task kind of :data:`probe.tasks.TASK_KINDS`. A tagging kind (a tag per word, NER) reads
    ``wnut16``, a CoNLL file (``conll_columns`` picks the word and tag columns) or a ``datasets`` source /
    JSONL file with ``token_column`` (a list of words) and ``tag_column`` (a list of tag names or class
    ids); split sizes then count sentences.
    """

    type: str = Field(DEFAULT_KIND, description="the task kind: a key of probe.tasks.TASK_KINDS")
    dataset: str = "bbc-news"
    text_column: str = "text"
    text_pair_column: Optional[str] = Field(
        None, description="kinds that read two texts per example (e.g. premise and hypothesis): the second "
        "text's column; task.text_column is the first")
    pair_negatives: Literal["random", "same-topic"] = Field(
        "random", description="bbc-news-pairs: where an 'unrelated' second sentence comes from: any other "
        "article ('random', mostly another topic, as BERT's next-sentence task) or one of the same topic")
    label_column: str = "label"
    token_column: str = Field("tokens", description="token classification: column holding each sentence's words")
    tag_column: str = Field("ner_tags", description="token classification: column holding each word's tag")
    conll_columns: tuple[int, int] = Field(
        (0, -1), description="token classification, CoNLL files: the word column and the tag column "
        "(0-based; negative counts from the end)")
    max_length: int = Field(64, ge=8, le=4096)
    train_size: Union[int, float] = 800
    validation_size: Union[int, float] = 200
    test_size: Union[int, float] = 400
    prompt: Optional[str] = Field(
        None, description="model.head label-words: the prompt template, with {text} (and {text_pair} for pair "
        "tasks); default: the task kind's ('Text: {text}\\nLabel:')")
    label_words: Optional[list[str]] = Field(
        None, description="model.head label-words: one word or short phrase per class, in class order, scored "
        "after the prompt (each after one space); default: the class names")
    label_word_synonyms: Optional[list[str]] = Field(
        None, description="model.head label-words: another word per class, in class order, read as one more "
        "format variant of the prompt (analyses.prompt_format)")
    max_dropped_share: float = Field(
        0.1, ge=0.0, le=1.0, description="most of the dataset's rows (sentences) that may be dropped for a "
        "missing or empty text (or word list) before the data are refused")

    @field_validator("type")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in TASK_KINDS:
            raise ValueError(f"unknown task type; allowed: {', '.join(TASK_KINDS)}")
        return v

    @field_validator("train_size", "validation_size", "test_size")
    @classmethod
    def _size(cls, v: int | float) -> int | float:
        if isinstance(v, bool):
            raise ValueError("must be a count (integer >= 1) or a fraction in (0, 1)")
        if isinstance(v, float) and not v.is_integer() and not 0 < v < 1:
            raise ValueError(f"must be a count (integer >= 1) or a fraction in (0, 1), got {v}")
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, int) and v < 1:
            raise ValueError(f"must be a count (integer >= 1) or a fraction in (0, 1), got {v}")
        return v


class PlantedFeature(Section):
    """A token inserted with a controlled correlation to one class (docs/design.md §2).

    ``rate_in_class`` = P(token | y = target_class) and ``rate_outside`` = P(token | y != c)
    in the fine-tuning data (train and validation). Equal rates are the control condition.
    """

    kind: Literal["planted"] = "planted"
    name: str | None = None
    token: str = "zebra"
    target_class: str
    rate_in_class: float = Field(1.0, ge=0.0, le=1.0)
    rate_outside: float = Field(0.0, ge=0.0, le=1.0)
    max_position: int = Field(5, ge=0, le=64)
    side: Literal["first", "second"] = Field(
        "second", description="kinds that read two texts: the text the token is inserted into")

    @field_validator("token")
    @classmethod
    def _one_word(cls, v: str) -> str:
        return single_word(v)

    @property
    def label(self) -> str:
        """The feature's display name: ``name`` or ``token:<token>``."""
        return self.name or f"token:{self.token}"


SpuriousFeature = Annotated[Union[PlantedFeature], Field(discriminator="kind")]


class ModelConfig(Section):
    """The models: the pretrained backbone (a built-in name, ``probe models``, a hub name or a local
    folder) and, to diagnose a model fine-tuned elsewhere, that checkpoint (docs/design.md §8)."""

    backbone: Optional[str] = Field(
        None, description="the pretrained model (fine-tuned here, or the reference a given checkpoint is compared "
        "with); default: minilm, or with `finetuned` the base its adapter config or model config records")
    finetuned: Optional[str] = Field(
        None, description="a fine-tuned classifier or tagger to diagnose instead of fine-tuning: a local folder, a "
        "hub name or a peft adapter folder")
    adapter_base: Optional[str] = Field(
        None, description="a peft adapter's base model (default: base_model_name_or_path of its adapter config)")
    tokenizer: Optional[str] = Field(
        None, description="the tokenizer (a built-in, folder or hub name); default: the given checkpoint's own, "
        "else the backbone's")
    labels: Optional[list[str]] = Field(
        None, description="the given checkpoint's output names in id order, when its config's id2label does not "
        "name the dataset's labels")
    head: Literal["classifier", "label-words"] = Field(
        "classifier", description="how the model answers: 'classifier' (a classification head on the backbone) or "
        "'label-words' (a causal LM's next-token log-probabilities of task.label_words after task.prompt)")
    device_map: Optional[Literal["auto"]] = Field(
        None, description="'auto': let accelerate place a large given model's layers across the available devices")

    @field_validator("backbone", "finetuned", "adapter_base", "tokenizer")
    @classmethod
    def _non_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must be a model name or path, not empty")
        return v


class Variant(Section):
    """One recipe of a sweep: a name and dotted overrides of the base config (``finetune.strategy: lora``)."""

    name: str
    set: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v) or v in ("shared", "comparison"):
            raise ValueError(f"must be 1-100 letters, digits, '.', '_' or '-' and not 'shared' or 'comparison' "
                             f"(it names a folder), got {v!r}")
        return v

    @field_validator("set")
    @classmethod
    def _no_run_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if k.split(".")[0] in ("compare", "name", "output_dir")]
        if bad:
            raise ValueError(f"a variant cannot override {bad}; the sweep names and places its runs")
        return v


class Config(Section):
    """One experiment."""

    name: str = "default"
    seed: int = Field(0, ge=0, description="seeds the data split and planting (and everything else unless seeds is set)")
    seeds: Optional[list[int]] = Field(
        None, description="repeat fine-tuning and analyses once per seed; tables keep per-seed rows plus "
        "the mean across seeds with its interval")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str = "reports"
    overwrite: bool = Field(False, description="write into a non-empty folder that is not a probe run folder "
                            "(probe's files in it are replaced)")
    tracking: Literal["none", "tensorboard"] = Field(
        "none", description="tensorboard: also write the training curves and headline numbers as TensorBoard "
        "event files under output_dir/name/tensorboard/ (needs the tensorboard package)")
    task: TaskConfig = TaskConfig()
    spurious: list[SpuriousFeature] = Field(default_factory=list)
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    compute: ComputeConfig = ComputeConfig()
    analyses: AnalysesConfig = AnalysesConfig()
    causal: CausalConfig = CausalConfig()
    discover: DiscoverConfig = DiscoverConfig()
    compare: Optional[list[Variant]] = Field(
        None, description="a sweep: run the base config once per variant (its overrides applied) into "
        "output_dir/name/<variant>, then write the comparison report there")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError(
                f"must be 1-100 letters, digits, '.', '_' or '-' (it names a folder), got {v!r}"
            )
        return v

    @field_validator("spurious", mode="before")
    @classmethod
    def _default_kind(cls, v: Any) -> Any:
        """``kind: planted`` may be left out (it is the only kind so far)."""
        if isinstance(v, list):
            return [{"kind": "planted", **x} if isinstance(x, dict) and "kind" not in x else x for x in v]
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v) or min(v) < 0):
            raise ValueError(f"must be a non-empty list of distinct integers >= 0, got {v}")
        return v

    @property
    def run_seeds(self) -> list[int]:
        """The fine-tuning seeds of this run: ``seeds`` if given, else ``[seed]``."""
        return list(self.seeds) if self.seeds else [self.seed]

    @model_validator(mode="after")
    def _unique_features(self) -> "Config":
        labels = [f.label for f in self.spurious]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"spurious features must have distinct names; repeated: {dupes}")
        if self.compare is not None:
            names = [v.name for v in self.compare]
            if not names or len(set(names)) != len(names):
                raise ValueError(f"compare: needs at least one variant, with distinct names; got {names}")
        if self.finetune.augmentation.counterfactual_rate > 0 and not self.spurious:
            raise ValueError("finetune.augmentation.counterfactual_rate > 0 plants the spurious tokens into other "
                             "classes, but no spurious features are configured; add a spurious section or set it to 0")
        refusal = self.finetune.augmentation.refusal(self.task.type)
        if refusal:
            raise ValueError(refusal)
        self._check_models()
        return self

    def _check_models(self) -> None:
        """A given checkpoint is diagnosed once, as it is: no pretraining, no seeds to fine-tune with."""
        m = self.model
        if m.finetuned is None:
            if m.backbone is None:
                self.model.backbone = "minilm"
            for key in ("adapter_base", "labels", "device_map"):
                if getattr(m, key) is not None:
                    raise ValueError(f"model.{key} applies to a given checkpoint; set model.finetuned too, or remove it")
        else:
            if self.pretrain.enabled:
                raise ValueError("model.finetuned is diagnosed as it is, so there is no pretraining stage; set "
                                 "pretrain.enabled: false (pretrain the reference separately and give it as "
                                 "model.backbone)")
            if self.finetune.augmentation.active:
                raise ValueError("finetune.augmentation applies to fine-tuning, and model.finetuned is diagnosed as it "
                                 "is; remove the augmentation (or model.finetuned)")
            if self.seeds is not None and len(self.seeds) > 1:
                raise ValueError(f"seeds {self.seeds} repeat fine-tuning, but model.finetuned is one given model; "
                                 "allowed: no seeds (or one)")
        check_kind_fit(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """Hash of the resolved config; ``output_dir``, ``overwrite`` and ``tracking`` do not change results and
        are left out."""
        d = self.to_dict()
        for key in ("output_dir", "overwrite", "tracking"):
            d.pop(key, None)
        return stable_hash(d)

