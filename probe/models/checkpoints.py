"""Given fine-tuned checkpoints: what a folder or hub name holds, and loading it for the analyses.

A run with ``model.finetuned`` skips fine-tuning and diagnoses that model against its *reference*,
the pretrained model it descends from (docs/design.md §8). Three kinds of checkpoint:

- ``probe``: a folder probe wrote (``strategy.json``: strategy, task type, label names, base);
- ``peft``: an adapter folder (``adapter_config.json``), loaded on its base and merged;
- ``full``: any ``transformers`` classifier or tagger folder or hub name (``config.json``).

Everything that can be refused is refused here from the configs alone, before any weight is read:
a folder that is not a model, a model without a classification head, a truncated or damaged
``*.safetensors`` file (its header), an adapter whose base is missing, a checkpoint of the other task
type, labels that do not match the dataset's, a head of another size, a reference of another depth,
or of another architecture when layer swaps are on, and a tokenizer whose vocabulary differs from the
reference's. Loading then refuses weights the checkpoint lacks (transformers' missing keys).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe.errors import ProbeError
from probe.tasks import DEFAULT_KIND, TASK_KINDS, kind_of_architecture, kind_of_peft_task, kinds_of_architecture

STRATEGY_FILE = "strategy.json"


@dataclass
class Checkpoint:
    """What a given checkpoint is, read from its configs only."""

    source: str
    kind: str  # "probe", "peft" or "full"
    base: str | None  # the pretrained model it records (adapter base, probe's base, config _name_or_path)
    task_type: str | None  # the task.type of its kind (probe.tasks) when the checkpoint says
    labels: list[str] | None  # its outputs' names in id order, when known
    strategy: str | None = None  # probe checkpoints: the fine-tuning strategy
    n_outputs: int | None = None  # the head's size, when its config says
    classifier_head: bool = False  # its configs name a classification head of some kind (kinds may share one)

    @property
    def folder(self) -> Path | None:
        path = Path(self.source)
        return path if path.is_dir() else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbeError(f"model.finetuned: {str(path)!r} is not readable JSON ({type(e).__name__})") from None


def _task_of(config: dict) -> str | None:
    """The kind whose head a ``config.json``'s ``architectures`` name (:func:`probe.tasks.kind_of_architecture`)."""
    kind = kind_of_architecture(config.get("architectures") or [])
    return kind.name if kind is not None else None


def _labels_of(config: dict) -> list[str] | None:
    id2label = config.get("id2label") or {}
    if not id2label:
        return None
    return [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))]


def _has_head(config: dict) -> bool:
    """Whether a ``config.json``'s ``architectures`` name the head of some kind (kinds may share one)."""
    return bool(kinds_of_architecture(config.get("architectures") or []))


def _outputs_of(config: dict) -> int | None:
    """The head's size a classifier's config records (transformers' default of 2 when it records none)."""
    if not _has_head(config):
        return None
    return len(config.get("id2label") or {}) or int(config.get("num_labels") or 2)


def _full(source: str, config: dict, head: str = "classifier") -> Checkpoint:
    """A transformers checkpoint; one whose architectures are all without a classification head (a bare
    ``AutoModel``, a masked LM) is refused: its head would be initialised at random. With ``head``
    ``label-words`` a causal LM is what is asked for (its own LM head answers)."""
    arch = [str(a) for a in config.get("architectures") or []]
    causal_lm = head == "label-words" and any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in arch)
    if arch and not _has_head(config) and not causal_lm:
        heads = " or ".join(sorted({f"*{s.architecture_suffix}" for s in TASK_KINDS.values()}))
        raise ProbeError(f"model.finetuned: {source!r} is a {', '.join(arch)}, a model without a classification head "
                         f"(a classifier built from it would get a random one); allowed: a fine-tuned {heads} "
                         "checkpoint")
    return Checkpoint(source, "full", config.get("_name_or_path") or None, _task_of(config), _labels_of(config),
                      n_outputs=_outputs_of(config), classifier_head=_has_head(config))


def _check_weight_files(path: Path) -> None:
    """Refuse a truncated or damaged ``*.safetensors`` file from its header (cheap: no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    for f in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(f), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise ProbeError(f"model.finetuned: {str(f)!r} is not a readable safetensors file ({e}); it may be "
                             "truncated or damaged: save or download the checkpoint again") from None


def inspect_checkpoint(source: str, adapter_base: str | None = None, head: str = "classifier") -> Checkpoint:
    """Read what ``source`` (a local folder or a hub name) holds without loading weights. ``head``: the
    run's ``model.head``; with ``label-words`` a causal LM (no classification head) is what is expected."""
    path = Path(source)
    if path.is_dir():
        _check_weight_files(path)
        if (path / STRATEGY_FILE).is_file() and ((path / "config.json").is_file()
                                                 or (path / "adapter_config.json").is_file()):
            info = _read_json(path / STRATEGY_FILE)
            labels = info.get("labels") or None
            return Checkpoint(source, "probe", info.get("base"), info.get("task_type", DEFAULT_KIND),
                              labels, info.get("strategy", "full"), len(labels) if labels else None)
        if (path / "adapter_config.json").is_file():
            adapter = _read_json(path / "adapter_config.json")
            base = adapter_base or adapter.get("base_model_name_or_path") or None
            kind = kind_of_peft_task(adapter.get("task_type"))
            has_head = any(s.peft_task_type == adapter.get("task_type") for s in TASK_KINDS.values())
            return Checkpoint(source, "peft", base, kind.name if kind is not None else None, None,
                              classifier_head=has_head)
        if (path / "config.json").is_file():
            return _full(source, _read_json(path / "config.json"), head)
        raise ProbeError(f"model.finetuned: {source!r} is not a model folder (it has neither config.json nor "
                         "adapter_config.json); allowed: a transformers classifier folder, a peft adapter folder, "
                         "or a hub name")
    if path.exists():
        raise ProbeError(f"model.finetuned: {source!r} is a file; give the model's folder")
    return _inspect_hub(source, adapter_base, head)


def _inspect_hub(source: str, adapter_base: str | None, head: str = "classifier") -> Checkpoint:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source).to_dict()
    except (OSError, ValueError) as e:
        try:  # a peft adapter on the hub
            from peft import PeftConfig

            adapter = PeftConfig.from_pretrained(source)
        except Exception:  # noqa: BLE001 - every failure here means "not found" to the user
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ProbeError(f"model.finetuned: cannot find {source!r} ({first}); allowed: a local model folder, a "
                             "peft adapter folder, or a hub name (needs a network)") from None
        return Checkpoint(source, "peft", adapter_base or adapter.base_model_name_or_path, None, None)
    return _full(source, config, head)


def resolve_reference(ckpt: Checkpoint, backbone: str | None) -> str:
    """The pretrained reference: ``model.backbone`` when given, else the base the checkpoint records."""
    if backbone is not None:
        return backbone
    if ckpt.base and ckpt.base != ckpt.source:
        return ckpt.base
    raise ProbeError(f"model.backbone: {ckpt.source!r} does not record the pretrained model it was fine-tuned from; "
                     "give it as model.backbone (or --reference), e.g. the hub name or folder of the base model")


def label_order(ckpt_labels: list[str] | None, dataset_labels: list[str], source: str) -> list[int] | None:
    """For each dataset label (in the dataset's order), the checkpoint output that predicts it; None when
    the checkpoint's outputs are already in the dataset's order. A mismatch is a one-line error."""
    if ckpt_labels is None or list(ckpt_labels) == list(dataset_labels):
        return None
    if sorted(ckpt_labels) != sorted(dataset_labels):
        raise ProbeError(f"model.labels: the checkpoint {source!r} predicts {list(ckpt_labels)} but the dataset's "
                         f"labels are {list(dataset_labels)}; give model.labels (the checkpoint's output names in id "
                         "order, using the dataset's names) or choose the dataset and label column it was trained on")
    index = {name: i for i, name in enumerate(ckpt_labels)}
    return [index[name] for name in dataset_labels]


def check_head(ckpt: Checkpoint, dataset_labels: list[str]) -> None:
    """Before any heavy work: the checkpoint's head must have one output per dataset label, named as
    the dataset's labels (:func:`label_order`) when its names are known."""
    label_order(ckpt.labels, dataset_labels, ckpt.source)
    n = len(dataset_labels)
    if ckpt.n_outputs is not None and ckpt.n_outputs != n:
        raise ProbeError(_head_size(ckpt.source, ckpt.n_outputs, dataset_labels))


def _head_size(source: str, outputs: int, labels: list[str]) -> str:
    return (f"model.finetuned: the classification head of {source!r} has {outputs} outputs but the dataset has "
            f"{len(labels)} labels ({', '.join(labels)}); choose the dataset (and label column) it was trained on")


def load_checkpoint(ckpt: Checkpoint, auto_class, reference: str, labels: list[str], seed: int, dtype=None,
                    device_map: str | None = None):
    """The given model as a plain classifier or tagger in eval mode, its outputs in the order of
    ``labels`` (the dataset's; the head's rows are permuted to match) and ``id2label`` set to them."""
    import torch
    from safetensors import SafetensorError

    from probe.models.backbones import quiet_transformers
    from probe.models.strategies import for_analysis

    quiet_transformers()
    n = len(labels)
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32, "device_map": device_map}
    try:
        if ckpt.kind == "probe":
            from probe.config import FinetuneConfig
            from probe.models.strategies import load_trained

            order = ckpt.labels or labels
            model = load_trained(ckpt.source, reference, list(order), FinetuneConfig(strategy=ckpt.strategy),
                                 seed=seed, task_type=ckpt.task_type or DEFAULT_KIND, auto=auto_class)
        elif ckpt.kind == "peft":
            model = _load_adapter(ckpt, auto_class, n, kwargs)
        else:
            model, info = auto_class.from_pretrained(ckpt.source, output_loading_info=True, **kwargs)
            _refuse_missing(ckpt.source, info)
    except (OSError, ValueError, RuntimeError, SafetensorError, pickle.UnpicklingError, EOFError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ProbeError(f"model.finetuned: cannot load {ckpt.source!r} as a {auto_class.__name__[12:]} ({first})") \
            from None
    if auto_class.__name__ == "AutoModelForCausalLM":  # a label-word LM: no head to check or reorder
        return for_analysis(model)
    if model.config.num_labels != n:
        raise ProbeError(_head_size(ckpt.source, model.config.num_labels, labels))
    return for_analysis(align_head(model, ckpt.labels, labels, ckpt.source))


def _refuse_missing(source: str, info: dict) -> None:
    """Weights the model needs but the checkpoint lacks (transformers' ``missing_keys``, which it would
    initialise at random; typically the head of a bare ``AutoModel``) are refused in one line."""
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ProbeError(f"model.finetuned: {source!r} has no weights for {shown}; transformers would initialise them "
                         "at random (a checkpoint without its classification head?); allowed: a fine-tuned classifier "
                         "or tagger saved with its head")


def _load_adapter(ckpt: Checkpoint, auto_class, n: int, kwargs: dict):
    import warnings

    from peft import PeftModel

    if not ckpt.base:
        raise ProbeError(f"model.adapter_base: the adapter {ckpt.source!r} names no base model; give model.adapter_base")
    base, info = auto_class.from_pretrained(ckpt.base, num_labels=n, output_loading_info=True, **kwargs)
    _refuse_missing(ckpt.source, {"missing_keys": _not_in_adapter(info.get("missing_keys") or [], ckpt.source)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(base, ckpt.source)
        return model.merge_and_unload()


def _not_in_adapter(missing: list[str], source: str) -> list[str]:
    """The base model's missing weights (its new head) that the adapter does not bring either (peft saves
    a trained head under its module name, e.g. ``...classifier.modules_to_save...``); none when the
    adapter's weights are not a safetensors file."""
    from safetensors import safe_open

    files = sorted(Path(source).glob("adapter_model*.safetensors")) if Path(source).is_dir() else []
    if not missing or not files:
        return []
    keys: list[str] = []
    for f in files:
        with safe_open(str(f), "pt") as fh:
            keys += list(fh.keys())
    return [m for m in missing if not any(f".{m.split('.')[0]}." in f".{k}" for k in keys)]


def align_head(model, ckpt_labels: list[str] | None, labels: list[str], source: str):
    """``model`` with its head's outputs reordered to ``labels`` and ``id2label`` / ``label2id`` set."""
    import torch

    from probe.models.adapter import ModelAdapter

    order = label_order(ckpt_labels, labels, source)
    if order is not None:
        head = ModelAdapter(model).head_output()
        with torch.no_grad():
            head.weight.copy_(head.weight[order].clone())
            if head.bias is not None:
                head.bias.copy_(head.bias[order].clone())
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {c: i for i, c in enumerate(labels)}
    return model


def tokenizer_source(ckpt: Checkpoint, reference: str) -> str:
    """Where the tokenizer comes from: the checkpoint's folder when it has tokenizer files, else the reference."""
    folder = ckpt.folder
    if folder is not None and any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                                                    "vocab.txt")):
        return str(folder)
    return ckpt.source if folder is None and ckpt.kind == "full" else reference
