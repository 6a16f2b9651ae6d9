"""Validated experiment config: YAML loading, ``--set`` overrides and one-line errors.

Everything a run does is decided here, once, at the edge. Internal code trusts a
:class:`Config`; every refusal names the field, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from probe.errors import ProbeError

DEFAULT_CONFIG_NAME = "default.yaml"


def _single_word(v: str) -> str:
    if not v or len(v.split()) != 1:
        raise ValueError(f"must be a single word without spaces, got {v!r}")
    return v


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(_Section):
    """What to fine-tune on. Split sizes are counts (int >= 1) or fractions (0 < x < 1).

    ``type: token-classification`` tags every word (NER): the dataset is ``wnut16``, a CoNLL file
    (``conll_columns`` picks the word and tag columns) or a ``datasets`` source / JSONL file with
    ``token_column`` (a list of words) and ``tag_column`` (a list of tag names or class ids);
    split sizes then count sentences.
    """

    type: Literal["text-classification", "token-classification"] = "text-classification"
    dataset: str = "bbc-news"
    text_column: str = "text"
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


class PlantedFeature(_Section):
    """A token inserted with a controlled correlation to one class (DESIGN.md §2).

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

    @field_validator("token")
    @classmethod
    def _one_word(cls, v: str) -> str:
        return _single_word(v)

    @property
    def label(self) -> str:
        """The feature's display name: ``name`` or ``token:<token>``."""
        return self.name or f"token:{self.token}"


SpuriousFeature = Annotated[Union[PlantedFeature], Field(discriminator="kind")]


class PretrainArtifact(_Section):
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
        return _single_word(v)

    @model_validator(mode="after")
    def _one_selector(self) -> "PretrainArtifact":
        if (self.target_class is None) == (not self.words):
            raise ValueError("pretrain.artifact needs exactly one of target_class (a task class; corpus 'task') "
                             "or words (a list of words whose texts get the token)")
        return self


class ScratchSize(_Section):
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


class PretrainConfig(_Section):
    """Optional masked-language-model stage before fine-tuning (Devlin et al. 2019): 15 % of the
    tokens are chosen, 80 % of those become [MASK], 10 % a random token, 10 % stay. Its checkpoint
    is the "pretrained" model of every later analysis."""

    enabled: bool = False
    init: Literal["continue", "scratch"] = Field(
        "continue", description="'continue': start from model.backbone's weights; 'scratch': a new BERT of "
        "pretrain.size with the backbone's tokenizer")
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


class ComputeConfig(_Section):
    """How pretraining and fine-tuning use the hardware (results do not depend on it beyond float noise)."""

    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="'auto': bf16 autocast on CUDA, fp32 on the CPU")
    compile: bool = Field(False, description="torch.compile the model for training")
    dataloader_workers: int = Field(0, ge=0, le=64, description="worker processes feeding batches (pinned "
                                    "memory on CUDA)")


class ModelConfig(_Section):
    """The backbone: a built-in name (``probe models``), a hub name, or a local path."""

    backbone: str = "minilm"


class LoraSection(_Section):
    """LoRA adapters (Hu et al. 2022, via ``peft``): W + (alpha / rank) * B A on ``target_modules``."""

    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"],
        description="names (or name suffixes) of the linear layers that get adapters, e.g. query, key, value, dense")

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        if not v or any(not isinstance(m, str) or not m.strip() for m in v):
            raise ValueError(f"must be a non-empty list of module names such as ['query', 'value'], got {v}")
        return v


class AdversarialSection(_Section):
    """Adversarial training on the word-embedding output: FGM (Miyato et al. 2017) or PGD (Madry et al. 2018).

    ``epsilon`` is the L2 radius per example; PGD takes ``steps`` ascent steps of size ``alpha``.
    """

    method: Literal["none", "fgm", "pgd"] = "none"
    epsilon: float = Field(1.0, gt=0.0, le=1000.0)
    steps: int = Field(3, ge=1, le=100)
    alpha: float = Field(0.3, gt=0.0, le=1000.0)


class AugmentationSection(_Section):
    """Training-data augmentation, drawn afresh every epoch (see ``probe.data.augment``)."""

    word_deletion: float = Field(0.0, ge=0.0, lt=1.0, description="per-word deletion probability")
    counterfactual_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of other-class training examples that get each planted "
        "token inserted, labels unchanged (Kaushik et al. 2020)")


class FinetuneConfig(_Section):
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


class AnalysesConfig(_Section):
    """Which comparisons to run and how to put intervals on them."""

    probing: bool = True
    similarity: bool = True
    behaviour: bool = True
    properties: Union[Literal["auto"], list[str]] = Field(
        "auto", description="natural properties to probe: 'auto' (all registered ones that vary on the "
        "data) or a list of names (`probe properties`)")
    probe_family: Literal["logistic", "mlp"] = "logistic"
    probe_C: Union[Literal["cv"], float] = Field(
        "cv", description="L2 strength of the probes, or 'cv' to choose it by cross-validation on the "
        "probe's training split")
    probe_max_iter: int = Field(2000, ge=10)
    control_tasks: bool = True
    mdl: bool = True
    cka_debiased: bool = True
    attribution: bool = True
    attribution_methods: list[Literal["integrated_gradients", "saliency", "input_x_gradient", "occlusion"]] = Field(
        default_factory=lambda: ["integrated_gradients", "saliency", "input_x_gradient", "occlusion"])
    faithfulness_methods: list[Literal["integrated_gradients", "saliency", "input_x_gradient", "occlusion"]] = Field(
        default_factory=lambda: ["integrated_gradients", "saliency", "input_x_gradient", "occlusion"],
        description="methods whose ERASER comprehensiveness / sufficiency is measured (each costs 20 forward "
        "passes per example)")
    attribution_examples: int = Field(12, ge=2, le=10000, description="examples per partition (conflicting, "
                                      "aligned, clean) that are attributed, for each model")
    ig_steps: int = Field(32, ge=2, le=2000, description="integration steps of Layer Integrated Gradients")
    invariance: bool = True
    invariance_examples: int = Field(200, ge=2, le=100000)
    bootstrap_samples: int = Field(1000, ge=100, le=100000)
    reliance_threshold: float = Field(
        0.05, ge=0.0, le=1.0,
        description="smallest reliance gap that matters; a verdict of reliance needs the "
        "gap's whole 95% interval above it",
    )
    batch_size: int = Field(64, ge=1, le=4096, description="batch size for activation extraction")
    word_pooling: Literal["first", "mean"] = Field(
        "first", description="token classification: a word's vector is its first subword's or the mean of its "
        "subwords'")
    max_probe_words: int = Field(4000, ge=100, le=10_000_000, description="token classification: words the "
                                 "word-level probes use at most (whole sentences, drawn at random)")

    @field_validator("probe_C")
    @classmethod
    def _positive_c(cls, v: str | float) -> str | float:
        if not isinstance(v, str) and v <= 0:
            raise ValueError(f"must be 'cv' or a number > 0, got {v}")
        return v

    @field_validator("properties")
    @classmethod
    def _known_properties(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            from probe.data.properties import available_properties

            known = available_properties()
            unknown = [p for p in v if p not in known]
            if unknown:
                raise ValueError(f"unknown properties {unknown}; allowed: 'auto' or a list of {', '.join(known)}")
        return v


class CausalConfig(_Section):
    """Interventions inside the fine-tuned model (issue 5): concept erasure with a random-direction
    control, layer swaps / re-initialisation and attention-head ablation. Needs planted features."""

    enabled: bool = True
    layers: Union[Literal["all"], list[int]] = Field(
        "all", description="hidden-state layers to intervene on: 0 = embeddings, l = output of block l")
    methods: list[Literal["leace", "inlp"]] = Field(
        default_factory=lambda: ["leace"], description="erasure methods: 'leace' (Belrose et al. 2023) and/or "
        "'inlp' (Ravfogel et al. 2020); each adds one forward pass per layer, concept and control")
    concepts: list[Literal["position", "document"]] = Field(
        default_factory=lambda: ["position", "document"], description="'position': does this token "
        "position hold the planted token; 'document': does the text contain it, copied to every position")
    random_control: bool = Field(True, description="erase as many random directions at the same layer "
                                 "(amnesic control, Elazar et al. 2021)")
    inlp_max_iterations: int = Field(10, ge=1, le=200, description="INLP: most nullspace projections")
    inlp_tolerance: float = Field(
        0.02, ge=0.0, le=0.5, description="INLP stops once a fresh probe's held-out accuracy is within this "
        "of the majority rate")
    layer_swap: bool = Field(True, description="swap each fine-tuned block for the pretrained one, and "
                             "re-initialise it; also the fine-tuned head on the pretrained encoder")
    head_ablation: bool = True
    top_heads: int = Field(5, ge=1, le=1000, description="heads listed (largest drop in s-only error)")


class Variant(_Section):
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


class Config(_Section):
    """One experiment."""

    name: str = "default"
    seed: int = Field(0, ge=0, description="seeds the data split and planting (and everything else unless seeds is set)")
    seeds: Optional[list[int]] = Field(
        None, description="repeat fine-tuning and analyses once per seed; tables keep per-seed rows plus "
        "the mean across seeds with its interval")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str = "reports"
    task: TaskConfig = TaskConfig()
    spurious: list[SpuriousFeature] = Field(default_factory=list)
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    compute: ComputeConfig = ComputeConfig()
    analyses: AnalysesConfig = AnalysesConfig()
    causal: CausalConfig = CausalConfig()
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
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """Hash of the resolved config; ``output_dir`` does not change results and is left out."""
        d = self.to_dict()
        d.pop("output_dir", None)
        return stable_hash(d)


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hash of a JSON-serialisable object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def default_config_text() -> str:
    """The YAML of the built-in default (the same file as ``examples/default.yaml``)."""
    return resources.files("probe.configs").joinpath(DEFAULT_CONFIG_NAME).read_text()


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ProbeError(f"config file {str(path)!r} does not exist")
    if path.is_dir():
        raise ProbeError(f"config path {str(path)!r} is a folder; give a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProbeError(f"config file {str(path)!r} is not valid YAML{where}") from None
    if data is None:
        raise ProbeError(f"config file {str(path)!r} is empty; give at least task and spurious sections")
    if not isinstance(data, dict):
        raise ProbeError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=c`` -> (``a.b``, parsed YAML scalar ``c``)."""
    if "=" not in item:
        raise ProbeError(f"override {item!r} must look like section.key=value, e.g. finetune.epochs=1")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise ProbeError(f"override {item!r} has no key before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``finetune.epochs``, ``spurious.0.token``) in a nested dict copy."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.replace("__", ".").split(".")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ProbeError(
                        f"override {dotted!r}: {part!r} is not an index of {'.'.join(parts[:i])} "
                        f"(it has {len(node)} entries: 0..{len(node) - 1})"
                    )
                part = int(part)
                if last:
                    node[part] = value
                else:
                    node = node[part]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ProbeError(
                    f"override {dotted!r}: {'.'.join(parts[:i])} is a value, not a section"
                )
    return data


def _format_validation_error(err: ValidationError, source: str) -> str:
    """One line per refusal, naming field, value and what is allowed; joined with '; '."""
    messages = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-after"))
        loc = loc.replace(".planted", "")
        if e["type"] == "extra_forbidden":
            parent = _model_at(tuple(x for x in e["loc"][:-1] if x != "planted"))
            allowed = ", ".join(parent.model_fields) if parent else "see README"
            messages.append(f"{loc}: unknown key; allowed keys here: {allowed}")
            continue
        value = e.get("input")
        shown = repr(value)
        if isinstance(value, dict) or len(shown) > 80:
            shown = type(value).__name__
        msg = e["msg"].removeprefix("Value error, ")
        if loc:
            messages.append(f"{loc}: got {shown}: {msg}")
        else:
            messages.append(msg)
    return f"invalid config ({source}): " + "; ".join(messages)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        ann = field.annotation
        if part == "spurious":
            model = PlantedFeature
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def load_config(
    source: str | Path | Mapping[str, Any] | Config | None = None,
    overrides: Mapping[str, Any] | list[str] | None = None,
) -> Config:
    """Build a validated :class:`Config` from a YAML path, a dict, or the built-in default.

    ``overrides`` is either ``{"finetune.epochs": 1}`` or CLI strings ``["finetune.epochs=1"]``.
    Raises :class:`ProbeError` with a one-line message on any refusal.
    """
    if isinstance(source, Config):
        data, label = source.to_dict(), "given Config"
    elif source is None:
        data, label = yaml.safe_load(default_config_text()), "built-in default"
    elif isinstance(source, Mapping):
        data, label = dict(source), "given mapping"
    else:
        data, label = _read_yaml(Path(source)), str(source)
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    if overrides:
        data = apply_overrides(data, overrides)
        label += " with overrides"
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ProbeError(_format_validation_error(e, label)) from None


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML (what ``config.yaml`` in a run directory holds)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def variant_configs(config: Config) -> list[Config]:
    """The validated config of every variant of a sweep (``compare:``), all checked before any work.

    Each is the base config without ``compare``, with the variant's overrides applied, named after
    the variant and written under ``output_dir/name/``.
    """
    base = config.to_dict()
    base.pop("compare", None)
    out = []
    for v in config.compare or []:
        data = apply_overrides(base, v.set)
        data["name"], data["output_dir"] = v.name, str(Path(config.output_dir) / config.name)
        try:
            out.append(Config.model_validate(data))
        except ValidationError as e:
            raise ProbeError(_format_validation_error(e, f"compare variant {v.name!r}")) from None
    return out

