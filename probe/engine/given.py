"""Runs that diagnose a given checkpoint (``model.finetuned``) instead of fine-tuning one.

Before any heavy work the checkpoint is inspected (:mod:`probe.models.checkpoints`), its reference
resolved into ``model.backbone`` (so ``config.yaml`` records it), and everything that can be refused
is refused: another task type, a model without a classification head, a truncated weight file, an
adapter whose base is missing, a reference of another depth (or architecture, with layer swaps on),
a tokenizer of another vocabulary, labels that do not match the dataset's or a head of another size. The model stage then
loads the checkpoint where a trained run would fine-tune (:func:`given_model_stage`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from probe.config import Config, stable_hash
from probe.engine.context import RunContext, log
from probe.errors import ProbeError
from probe.models.checkpoints import Checkpoint, inspect_checkpoint, resolve_reference


def prepare_given(config: Config) -> tuple[Config, Checkpoint | None]:
    """``config`` with ``model.backbone`` resolved to the checkpoint's reference, and the checkpoint
    (None when the run fine-tunes its own model)."""
    m = config.model
    if m.finetuned is None:
        return config, None
    ckpt = inspect_checkpoint(m.finetuned, m.adapter_base, m.head)
    if m.head == "label-words" and ckpt.kind in ("full", "peft") and ckpt.classifier_head:
        raise ProbeError(f"model.head: {m.finetuned!r} is a model with a classification head, and "
                         "label-words reads a causal LM's own next-token logits; allowed: head classifier for it, or "
                         "a causal-LM checkpoint (or a peft adapter on one)")
    if ckpt.task_type is not None and ckpt.task_type != config.task.type:
        raise ProbeError(f"task.type: {m.finetuned!r} is a {ckpt.task_type} model but task.type is "
                         f"{config.task.type!r}; allowed: task.type {ckpt.task_type}")
    if m.labels is not None:
        ckpt.labels = list(m.labels)
    reference = resolve_reference(ckpt, m.backbone)
    config = config.model_copy(update={"model": m.model_copy(update={"backbone": reference})})
    config = _recorded_head(config, ckpt)
    _check_architectures(config, ckpt)
    return config, ckpt


def _recorded_head(config: Config, ckpt: Checkpoint) -> Config:
    """A folder probe saved with a label-word head (``strategy.json``: ``head``, ``prompt``, ``label_words``)
    is read with that head, prompt and label words unless the config sets its own."""
    import json

    info_file = ckpt.folder / "strategy.json" if ckpt.kind == "probe" and ckpt.folder else None
    info = json.loads(info_file.read_text()) if info_file is not None and info_file.is_file() else {}
    if info.get("head") != "label-words" or config.model.head == "label-words" and config.task.prompt is not None:
        return config
    task = config.task.model_copy(update={k: getattr(config.task, k) or info.get(k) for k in ("prompt", "label_words")})
    model = config.model.model_copy(update={"head": "label-words"})
    return config.model_copy(update={"model": model, "task": task})


def _model_config(name: str):
    """The ``transformers`` config of a backbone, hub name or folder (None when it cannot be read)."""
    from transformers import AutoConfig

    from probe.models.backbones import BUILTIN_BACKBONES, quiet_transformers

    quiet_transformers()
    builtin = BUILTIN_BACKBONES.get(name)
    if builtin is not None:
        return builtin.make_config() if builtin.weights_path is None else AutoConfig.from_pretrained(
            str(builtin.weights_path()))
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return None


def _check_architectures(config: Config, ckpt: Checkpoint) -> None:
    """An adapter's base must be readable, the reference must have as many layers as the checkpoint
    (layer-by-layer comparisons), and the same architecture when layer swaps are on; checked on the configs."""
    ref = _model_config(config.model.backbone)
    if ref is None:
        raise ProbeError(f"model.backbone: cannot read the config of the reference {config.model.backbone!r}; allowed: "
                         "a built-in, a local model folder, or a hub name (needs a network)")
    if ckpt.kind == "peft" and not ckpt.base:
        raise ProbeError(f"model.adapter_base: the adapter {ckpt.source!r} names no base model; give model.adapter_base")
    fine = _model_config(ckpt.source) if ckpt.kind == "full" else _model_config(ckpt.base or config.model.backbone)
    if fine is None and ckpt.kind == "peft":
        raise ProbeError(f"model.adapter_base: cannot read the config of {ckpt.base!r}, the base model of the adapter "
                         f"{ckpt.source!r}; allowed: a built-in, a local model folder, or a hub name (needs a network), "
                         "given as model.adapter_base")
    if fine is None:
        return
    depth = (getattr(ref, "num_hidden_layers", None), getattr(fine, "num_hidden_layers", None))
    if depth[0] != depth[1]:
        raise ProbeError(f"model.backbone: the reference {config.model.backbone!r} has {depth[0]} layers but "
                         f"{ckpt.source!r} has {depth[1]}; the layer-by-layer comparisons need the pretrained model "
                         "it was fine-tuned from")
    same = (ref.model_type, getattr(ref, "hidden_size", None)) == (fine.model_type, getattr(fine, "hidden_size", None))
    if config.causal.enabled and config.causal.layer_swap and not same:
        raise ProbeError(f"causal.layer_swap: swapping blocks needs the reference to have the fine-tuned model's "
                         f"architecture, but {config.model.backbone!r} is a {ref.model_type} of width "
                         f"{getattr(ref, 'hidden_size', '?')} and {ckpt.source!r} a {fine.model_type} of width "
                         f"{getattr(fine, 'hidden_size', '?')}; set causal.layer_swap: false or give the base model")


PROBE_SENTENCE = "The quick brown fox jumps over 13 lazy dogs in Zürich; @someone said: it's fine!"


def load_tokenizer_for(config: Config, ckpt: Checkpoint | None):
    """The run's tokenizer: ``model.tokenizer`` when given; else a given checkpoint's own when it ships
    one (checked against the reference's: the same vocabulary and the same ids for a test sentence),
    else the backbone's. With a pad token either way (decoders often have none)."""
    from probe.models.adapter import ensure_pad_token
    from probe.models.backbones import load_tokenizer
    from probe.models.checkpoints import tokenizer_source

    if config.model.tokenizer is not None:
        return ensure_pad_token(load_tokenizer(config.model.tokenizer))
    reference = load_tokenizer(config.model.backbone)
    tokenizer = reference
    if ckpt is not None:
        source = tokenizer_source(ckpt, config.model.backbone)
        if source != config.model.backbone:
            tokenizer = load_tokenizer(source)
            same = (tokenizer.get_vocab() == reference.get_vocab()
                    and tokenizer(PROBE_SENTENCE)["input_ids"] == reference(PROBE_SENTENCE)["input_ids"])
            if not same:
                raise ProbeError(f"model.backbone: the tokenizer of {ckpt.source!r} ({len(tokenizer)} tokens) has another "
                                 f"vocabulary or tokenises differently than the reference {config.model.backbone!r} "
                                 f"({len(reference)} tokens); give the base model it was fine-tuned from as "
                                 "model.backbone, or name the tokenizer both use as model.tokenizer")
    return ensure_pad_token(tokenizer)


def _fingerprint(ckpt: Checkpoint) -> str:
    """What identifies the checkpoint's weights: its config files and the size and time of its weight files."""
    folder = ckpt.folder
    if folder is None:
        return ckpt.source
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file():
            stat = f.stat()
            h.update(f.name.encode())
            h.update(f.read_bytes() if f.suffix == ".json" else f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def given_model_stage(ctx: RunContext, seed: int):
    """The given checkpoint, loaded as the task kind's model with its outputs in the dataset's label
    order, scored on the validation split; returns the model, a training log without epochs and the
    key that identifies it (for cached representations)."""
    from probe.models.adapter import ensure_pad_token
    from probe.models.checkpoints import load_checkpoint
    from probe.models.compute import load_dtype
    from probe.models.heads import as_predictor, auto_class, model_noun

    ckpt, kind, config = ctx.given, ctx.kind, ctx.config
    log(f"load: {ckpt.kind} checkpoint {ckpt.source} ({model_noun(config, kind)}), reference {config.model.backbone}")
    model = load_checkpoint(ckpt, auto_class(config, kind), ctx.backbone, kind.labels(ctx.data), seed,
                            load_dtype(config.compute.precision, ctx.device), config.model.device_map)
    model = as_predictor(model, ctx.tokenizer, kind.labels(ctx.data))
    ensure_pad_token(ctx.tokenizer, model)
    if config.model.device_map is None:
        model.to(ctx.device)
    scores = kind.objective(ctx).validate(model, ctx.device)
    log(f"load: validation {', '.join(f'{k} {v:.3f}' for k, v in scores.items())}")
    train_log = {"epochs": [], "given": ckpt.source, "kind": ckpt.kind, "validation": scores, "seconds": 0.0,
                 "tokens": 0, "tokens_per_second": None, "strategy": ckpt.strategy or "given",
                 "trainable_parameters": None, "total_parameters": sum(p.numel() for p in model.parameters())}
    from probe.models.heads import head_key

    key = stable_hash(["given", str(Path(ckpt.source).resolve()) if ckpt.folder else ckpt.source,
                       _fingerprint(ckpt), kind.labels(ctx.data), *head_key(config)])
    return model, train_log, key
