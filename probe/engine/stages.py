"""The model stages of a run, the same for every task kind: optional pretraining, then fine-tuning.

Each returns a model folder keyed by a hash of what produced it and reuses it when the key matches
(:mod:`probe.engine.artifacts`); the task kind says what the model's head is, how it is trained
(its objective) and what of the data goes into the key.
"""

from __future__ import annotations

import json

from probe.config import stable_hash
from probe.engine.artifacts import key_matches, write_keyed_folder
from probe.engine.context import RunContext, log
from probe.rundir import atomic_write_json


def pretrain_stage(ctx: RunContext) -> None:
    """The pretraining stage (``pretrain:``): sets ``ctx.backbone`` to the pretrained checkpoint (every
    later stage's "pretrained" model), ``ctx.backbone_key`` to what identifies it and
    ``ctx.pretraining`` to what it did. Without it the backbone is ``model.backbone``.

    The checkpoint sits in ``models/pretrained`` (in a sweep: ``shared/models/pretrained-<key>``, so
    variants with the same pretraining share it) and is reused when its key matches."""
    config = ctx.config
    if not config.pretrain.enabled:
        ctx.backbone = ctx.backbone_key = config.model.backbone
        return
    from probe.data.corpus import load_corpus, plant_artifact
    from probe.models.lm import build_lm
    from probe.models.pretrain import pretrain_lm

    p = config.pretrain
    corpus_texts, corpus_labels = ctx.kind.corpus(ctx.data)
    texts, labels = load_corpus(p.corpus, p.text_column, corpus_texts, corpus_labels, p.max_texts, config.seed)
    artifact = None
    if p.artifact is not None:
        texts, mask = plant_artifact(texts, labels, p.artifact, config.seed)
        artifact = {"token": p.artifact.token, "target_class": p.artifact.target_class, "words": p.artifact.words,
                    "count": p.artifact.count, "texts_with_token": int(mask.sum()), "corpus_texts": len(texts)}
    key = stable_hash([config.model.backbone, p.model_dump(), config.seed, texts, "mlm-v1"])
    model_dir = (ctx.cache_root / "models") / ("pretrained" if ctx.shared_dir is None else f"pretrained-{key}")
    ctx.backbone, ctx.backbone_key = str(model_dir), key
    if key_matches(ctx, model_dir, key):
        ctx.reused.append("pretrain")
        log(f"pretrain: reused checkpoint {model_dir} (key {key})")
        ctx.pretraining = json.loads((model_dir / "pretraining.json").read_text())
        return
    log(f"pretrain: {p.objective.upper()}, {p.init} from {config.model.backbone}, {len(texts)} corpus texts, {p.steps} steps of "
        f"{p.batch_size} x {p.max_length} tokens on {ctx.device.type}"
        + (f", artifact {p.artifact.token!r} in {artifact['texts_with_token']} texts" if artifact else ""))
    model = build_lm(config.model.backbone, p, ctx.tokenizer, config.seed)
    plog = pretrain_lm(model, ctx.tokenizer, texts, p, config.compute, config.seed, ctx.device, ctx.progress)
    info = {**plog.to_dict(), "init": p.init, "corpus": p.corpus, "corpus_texts": len(texts), "artifact": artifact}
    log(f"pretrain: {p.objective} loss {plog.initial_loss:.3f} -> {plog.final_loss:.3f} (held out), "
        f"{plog.tokens_per_second:.0f} tokens/s")
    if ctx.dist.is_main:
        def fill(tmp):
            model.save_pretrained(tmp)
            ctx.tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / "pretraining.json", info)

        write_keyed_folder(model_dir, key, fill)
    ctx.dist.barrier()
    ctx.pretraining = info


def reference_name(ctx: RunContext) -> str:
    """How a saved model names its pretrained model: a built-in or hub name as configured, a folder as
    an absolute path (the pretraining stage's checkpoint, or a local backbone)."""
    from pathlib import Path

    path = Path(ctx.backbone)
    return str(path.resolve()) if path.exists() else ctx.backbone


def finetune_stage(ctx: RunContext, seed: int, suffix: str):
    """The fine-tuned model for ``seed``: from ``models/finetuned<suffix>`` when its key matches, else
    trained (the task kind's head and objective, ``finetune.strategy``) and saved there. Returns the
    model ready for the analyses (LoRA merged), the training log and the key."""
    from probe.models.adapter import ensure_pad_token
    from probe.models.backbones import build_with_head
    from probe.models.finetune import finetune_objective
    from probe.models.heads import as_predictor, auto_class, model_noun, objective, saved_head
    from probe.models.strategies import for_analysis, load_trained, prepare_model, save_trained

    config, kind, data, dist = ctx.config, ctx.kind, ctx.data, ctx.dist
    ft_key = stable_hash([ctx.backbone_key, config.finetune.model_dump(), config.task.max_length, seed,
                          data.fingerprint(), *kind.finetune_key(data)])
    model_dir = ctx.run_dir / "models" / f"finetuned{suffix}"
    labels = kind.labels(data)
    if key_matches(ctx, model_dir, ft_key):
        ctx.reused.append(f"finetune{suffix.replace('-', ':')}")
        log(f"finetune: reused checkpoint {model_dir} (key {ft_key})")
        model = load_trained(model_dir, ctx.backbone, labels, config.finetune, seed=seed, task_type=kind.name,
                             auto=auto_class(config, kind))
        return as_predictor(model, ctx.tokenizer, labels), json.loads((model_dir / "training.json").read_text()), ft_key
    log(f"finetune: {model_noun(config, kind)} on {config.model.backbone}"
        f"{' (pretrained here)' if config.pretrain.enabled else ''}, {config.finetune.strategy}, "
        f"{config.finetune.epochs} epochs on {ctx.device.type}, seed {seed}"
        + (f", {dist.world} processes" if dist.enabled else ""))
    model = build_with_head(auto_class(config, kind), ctx.backbone, labels, seed)
    ensure_pad_token(ctx.tokenizer, model)  # a decoder's head finds each row's last token by the pad id
    model = prepare_model(model, config.finetune)
    train_log = finetune_objective(model, objective(kind.objective(ctx), ctx.tokenizer), config.finetune, seed, ctx.device, ctx.progress,
                                   planted=kind.planted_for_training(data)).to_dict()
    if dist.is_main:
        def fill(tmp):
            save_trained(model, tmp, config.finetune, base=reference_name(ctx), task_type=kind.name,
                         head=saved_head(ctx.tokenizer))
            ctx.tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / "training.json", train_log)

        write_keyed_folder(model_dir, ft_key, fill)
    return as_predictor(for_analysis(model), ctx.tokenizer, labels), train_log, ft_key
