"""Fine-tuning strategies: which weights train, LoRA wrapping, and saving / loading the result.

Strategies (``finetune.strategy``):

- ``full``: every weight trains.
- ``linear_probe``: the encoder is frozen; only the head (the classifier and the pooler) trains.
- ``lp_ft`` (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
  Out-of-Distribution"): linear probing first, then full fine-tuning from that head. The model
  is prepared in its first-phase state (head only); the fine-tuning loop
  (:func:`probe.models.finetune.finetune_objective`) unfreezes it for the second phase.
- ``lora`` (Hu et al. 2022): ``peft`` LoRA adapters on ``finetune.lora.target_modules`` (default: the
  architecture's query and value projections, :class:`probe.models.adapter.ModelAdapter`); the
  head trains too (peft ``modules_to_save``). The base weights stay bit-identical.
- ``bitfit`` (Ben Zaken et al. 2022): only the bias terms of the encoder, plus the head.

Every strategy works for the model of every task kind (a sequence classifier, a tagger: the kind's
``auto_class``, :func:`probe.models.backbones.build_with_head`): the head is
whatever lies outside the base encoder (``classifier``), plus the pooler where there is one.
The trained model of any strategy becomes a plain model of its kind's auto class
for the analyses with :func:`for_analysis` (LoRA: adapters merged into the base weights), and
:func:`save_trained` / :func:`load_trained` store and restore it (LoRA: the adapter only).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

from probe.config import FinetuneConfig
from probe.errors import ProbeError
from probe.tasks import DEFAULT_KIND, TASK_KINDS, kind_spec, kinds_of_model
from probe.tasks.spec import KindSpec

STRATEGY_FILE = "strategy.json"
_MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", STRATEGY_FILE)


def is_peft(model) -> bool:
    """Whether ``model`` is a ``peft`` wrapper (a LoRA model before :func:`for_analysis`)."""
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def model_kind(model) -> KindSpec:
    """A task kind ``model`` (or the model a peft wrapper holds) serves, from its head's class name
    (:func:`probe.tasks.kinds_of_model`): the first registered, or the default kind when none claims it.
    Kinds sharing a head share its peft task type too."""
    return (kinds_of_model(model) or [kind_spec(DEFAULT_KIND)])[0]


def is_head_parameter(model, name: str) -> bool:
    """Whether parameter ``name`` belongs to the head: the classifier (anything outside the base
    encoder) or the encoder's pooler. In a peft model, the head is what ``modules_to_save`` holds."""
    if is_peft(model):
        return ".modules_to_save." in name
    prefix = getattr(model, "base_model_prefix", "")
    return not (prefix and name.startswith(prefix + ".")) or ".pooler." in name


def set_trainable(model, which: str) -> None:
    """Set ``requires_grad`` for a phase: ``all``, ``head`` (classifier + pooler) or ``bias``
    (bias terms + head). A peft model keeps peft's own choice (adapters + head)."""
    if is_peft(model):
        return
    for name, p in model.named_parameters():
        if which == "all":
            flag = True
        elif which == "head":
            flag = is_head_parameter(model, name)
        elif which == "bias":
            flag = is_head_parameter(model, name) or name.endswith("bias")
        else:
            raise ValueError(f"unknown trainable set {which!r}; allowed: all, head, bias")
        p.requires_grad_(flag)


def phases(cfg: FinetuneConfig) -> list[tuple[str, str, float, int]]:
    """The training phases of a strategy: ``(name, trainable set, learning rate, epochs)``.

    ``name`` is ``lp`` (only the head trains, encoder in eval mode) or ``ft``.
    """
    if cfg.strategy == "linear_probe":
        return [("lp", "head", cfg.lp_learning_rate, cfg.epochs)]
    if cfg.strategy == "lp_ft":
        return [("lp", "head", cfg.lp_learning_rate, cfg.lp_epochs), ("ft", "all", cfg.learning_rate, cfg.epochs)]
    if cfg.strategy == "bitfit":
        return [("ft", "bias", cfg.learning_rate, cfg.epochs)]
    if cfg.strategy == "lora":
        return [("ft", "lora", cfg.learning_rate, cfg.epochs)]
    return [("ft", "all", cfg.learning_rate, cfg.epochs)]


def _set_dropout(model, p: float) -> None:
    """Every dropout of the model to ``p``: the config's hidden and attention probabilities and the
    ``nn.Dropout`` modules already built from them (BERT's attention reads ``self.dropout.p``)."""
    import torch

    config = model.config
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "hidden_dropout", "attention_dropout",
                "dropout"):
        if isinstance(getattr(config, key, None), float):
            setattr(config, key, p)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def prepare_model(model, cfg: FinetuneConfig):
    """``model`` (a plain sequence classifier from ``build_classifier`` or a tagger from ``build_tagger``)
    made ready for ``cfg.strategy``.

    Applies the ``dropout`` override and freezes what the strategy's first phase does not
    train. For ``lora`` it returns a new ``peft`` wrapper (the base model's linear layers get
    adapters in place), so always use the returned object. Calling it again on its own result
    changes nothing.
    """
    if is_peft(model):
        if cfg.strategy != "lora":
            raise ProbeError(f"finetune.strategy: got {cfg.strategy!r} for a LoRA (peft) model; "
                             f"use 'lora' or start from a plain classifier")
        return model
    if cfg.dropout is not None:
        _set_dropout(model, cfg.dropout)
    if cfg.strategy != "lora":
        set_trainable(model, phases(cfg)[0][1])
        return model
    from peft import LoraConfig, get_peft_model

    from probe.models.adapter import ModelAdapter
    from probe.models.label_words import is_causal_lm

    causal_lm = is_causal_lm(model)  # a label-word LM: its output layer is the (tied) word embeddings, not a head
    head = [] if causal_lm else [n for n, m in model.named_children()
                                 if n != getattr(model, "base_model_prefix", None) and any(True for _ in m.parameters())]
    if getattr(model.base_model, "pooler", None) is not None and not causal_lm:
        head.append("pooler")

    targets = list(cfg.lora.target_modules) if cfg.lora.target_modules else ModelAdapter(model).lora_targets
    lora = LoraConfig(
        r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=targets, modules_to_save=head or None,
        task_type="CAUSAL_LM" if causal_lm else model_kind(model).peft_task_type,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return get_peft_model(model, lora)
        except ValueError as e:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                             if type(m).__name__ in ("Linear", "Conv1D")})
            first = (str(e).strip().splitlines() or ["error"])[0][:160]
            raise ProbeError(f"finetune.lora.target_modules: got {targets}: {first}; "
                             f"linear layers of this model: {', '.join(linear)}") from None


def trainable_parameter_count(model) -> int:
    """Number of parameters with ``requires_grad`` (LoRA: adapters and the head's trainable copy)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def total_parameter_count(model) -> int:
    """Number of parameters of the model being trained: the classifier, plus the adapters for LoRA
    (peft's frozen copies of the head, ``original_module``, are not counted)."""
    return sum(p.numel() for n, p in model.named_parameters() if ".original_module." not in n)


def for_analysis(model):
    """The trained model as a plain sequence classifier (or tagger) in eval mode, every weight with
    ``requires_grad``.

    LoRA: the adapters are merged into the base weights (``merge_and_unload``), which consumes
    the peft wrapper, so call :func:`save_trained` first. Other strategies: the same object,
    unfrozen.
    """
    if is_peft(model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def _base_checksum(peft_model) -> str:
    """sha256 of the frozen base weights of a LoRA model (adapters and head copies left out)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(peft_model.state_dict().items()):
        if "lora_" in name or ".modules_to_save." in name or ".original_module." in name:
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def save_trained(model, directory: str | Path, cfg: FinetuneConfig, base: str | None = None,
                 task_type: str | None = None, head: dict | None = None) -> None:
    """Write the trained model to ``directory`` (created if missing) as safetensors.

    LoRA (a peft model, before :func:`for_analysis`): the adapter and the head with peft's
    ``save_pretrained`` (``adapter_config.json``, ``adapter_model.safetensors``) plus a checksum of
    the base weights. Other strategies: the full model with ``save_pretrained``. Both also write
    ``strategy.json``: the strategy, the task type (``task_type``, default: :func:`model_kind`; left out
    for the default kind), the head's label names in id order and ``base``,
    the pretrained model it was fine-tuned from (so that ``model.finetuned`` finds its reference), and
    ``head``'s entries (a label-word head: ``head``, ``prompt``, ``label_words``; :func:`probe.models.heads.saved_head`).
    Model files already in ``directory`` are replaced (sharded checkpoints aside);
    the tokenizer, the training log and any key files are the caller's.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in _MODEL_FILES:  # a model of another strategy saved here before must not be loaded with this one
        (directory / stale).unlink(missing_ok=True)
    info = {"strategy": cfg.strategy}
    kind = task_type or model_kind(model).name
    if kind != DEFAULT_KIND:  # a folder without task_type holds a model of the default kind
        info["task_type"] = kind
    id2label = getattr(model.config, "id2label", None) or {}
    info["labels"] = [id2label[i] for i in range(len(id2label))]
    if base is not None:
        info["base"] = base
    info.update(head or {})
    if cfg.strategy == "lora":
        if not is_peft(model):
            raise ProbeError("save_trained: strategy 'lora' saves the adapter of the peft model returned by "
                             "prepare_model; call it before for_analysis (which merges the adapter away)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.save_pretrained(directory, safe_serialization=True)
        info["base_checksum"] = _base_checksum(model)
    else:
        model.save_pretrained(directory, safe_serialization=True)
    (directory / STRATEGY_FILE).write_text(json.dumps(info, indent=1))


def load_trained(directory: str | Path, backbone: str, classes: list[str], cfg: FinetuneConfig, seed: int = 0,
                 task_type: str = DEFAULT_KIND, auto=None):
    """The model :func:`save_trained` wrote, as a plain model of its task kind (a sequence classifier, a
    tagger, ...) in eval mode.

    ``task_type``: the ``task.type`` of the model asked for (default: the default kind; for a tagger
    ``classes`` are its tags); a directory holding another kind is refused.
    LoRA: the kind's head on ``backbone`` (:func:`probe.models.backbones.build_with_head`; ``seed``
    matters for randomly initialised built-ins such as ``tiny-bert``: pass the one used for training) plus the
    adapter, merged with ``merge_and_unload``; a base model whose weights differ from the
    training base is refused. Other strategies: the kind's auto class (``KindSpec.auto_class``; ``auto``
    when given, e.g. a causal LM for a label-word head) ``.from_pretrained(directory)``.
    """
    if task_type not in TASK_KINDS:
        raise ProbeError(f"load_trained: task_type {task_type!r} is unknown; allowed: {', '.join(TASK_KINDS)}")
    import transformers

    auto = auto or getattr(transformers, kind_spec(task_type).auto_class)
    directory = Path(directory)
    info_file = directory / STRATEGY_FILE
    info = json.loads(info_file.read_text()) if info_file.is_file() else {"strategy": "full"}
    saved_lora = info.get("strategy") == "lora"
    if saved_lora != (cfg.strategy == "lora"):
        raise ProbeError(f"load_trained: {directory} holds a {info.get('strategy')!r} model, "
                         f"but finetune.strategy is {cfg.strategy!r}")
    saved_type = info.get("task_type", DEFAULT_KIND)
    if saved_type != task_type:
        raise ProbeError(f"load_trained: {directory} holds a {saved_type} model, but a {task_type} model was asked for")
    if not saved_lora:
        from probe.models.backbones import quiet_transformers

        quiet_transformers()
        return for_analysis(auto.from_pretrained(directory))
    from peft import PeftModel

    from probe.models.backbones import build_with_head

    base = build_with_head(auto, backbone, classes, seed)
    if cfg.dropout is not None:
        _set_dropout(base, cfg.dropout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = PeftModel.from_pretrained(base, directory)
    if info.get("base_checksum") and _base_checksum(model) != info["base_checksum"]:
        raise ProbeError(f"load_trained: the LoRA adapter in {directory} was trained on other base weights "
                         f"than {backbone!r} with seed {seed}")
    return for_analysis(model)
