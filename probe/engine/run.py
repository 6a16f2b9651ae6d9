"""A run is a sequence of stages over a :class:`~probe.engine.context.RunContext`, the same for every
task kind (docs/architecture.md):

    data -> pretraining (optional) -> fine-tuning -> representations -> analyses -> tables -> summary -> report

What differs per task kind (how data loads, the model head, the objective, what a representation
is, which tables and summary keys it writes) is the kind's business (:mod:`probe.tasks`). With
``seeds``, fine-tuning, representations and analyses repeat per seed (the pretrained model's
representations are shared) and the tables gain across-seed rows. Under ``accelerate launch``
pretraining, fine-tuning and extraction run data-parallel on every process; the analyses, the
report and every write to the run folder happen on the main process only. ``summary.json`` says
``"status": "complete"`` only once everything else is written.
"""

from __future__ import annotations

import json
import platform
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from probe.config import Config, dump_config, stable_hash
from probe.data.planted import check_planted_tokens
from probe.engine.context import RunContext, Timer, log
from probe.engine.folder import drop_aside, keep_aside, put_back
from probe.engine.guard import error_warnings
from probe.engine.lifecycle import error_text, stop_on_sigterm, take_folder
from probe.engine.stages import finetune_stage, pretrain_stage
from probe.models.heads import head_key
from probe.errors import ProbeError
from probe.rundir import Run, atomic_write_json, running_marker, write_output, write_table


def execute(config: Config, progress: bool = True, shared_dir: Path | None = None) -> Run:
    """Run every stage of a validated config. ``shared_dir`` holds artifacts shared with the other
    runs of a sweep (the pretrained model's activations)."""
    from probe.distributed import current
    from probe.engine.given import load_tokenizer_for, prepare_given
    from probe.models.heads import check_backbone, reading_tokenizer
    from probe.tasks import task_kind

    kind = task_kind(config.task.type)
    with take_folder(config.run_dir, config.overwrite):
        timer = Timer()
        t_start = time.perf_counter()
        with timer.stage("data"):
            config, given = prepare_given(config)
            kind.check_model(config)
            data = kind.load_data(config)
            check_backbone(config)
            tokenizer = load_tokenizer_for(config, given)
            check_planted_tokens(config, tokenizer)
            tokenizer = reading_tokenizer(config, tokenizer, kind.labels(data))
            if given is not None:
                from probe.models.checkpoints import check_head

                check_head(given, kind.labels(data))  # a mismatch is refused before any heavy work
            check_requirements(config)
            device = run_device(config)
        log(kind.describe(config, data))
        for note in getattr(data, "notes", []):
            log(f"warning: {note}")
        ctx = RunContext(config=config, kind=kind, data=data, tokenizer=tokenizer, device=device,
                         run_dir=config.run_dir, timer=timer, progress=progress and current().is_main,
                         shared_dir=shared_dir, given=given)
        return run_lifecycle(config, timer, t_start, lambda run_dir: _stages(ctx))


def check_requirements(config: Config) -> None:
    """What the run needs besides its data and model, checked before the folder is touched: the
    augmentation's masked LM and translation models, and tensorboard for ``tracking: tensorboard``."""
    from probe.models.augmenters import check_sources as check_augmentation_sources

    check_augmentation_sources(config)
    if config.tracking == "tensorboard":
        from probe.tracking import require_tensorboard

        require_tensorboard()


def run_device(config: Config):
    """The device of this process: ``config.device``, or this process's device under ``accelerate launch``."""
    from probe.distributed import current
    from probe.models.compute import resolve_device

    dist = current()
    return dist.accelerator.device if dist.enabled else resolve_device(config.device)


def _mark(run_dir: Path, status: str, **extra: Any) -> None:
    atomic_write_json(run_dir / "summary.json", {"status": status, **extra})


def _create(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ProbeError(f"output_dir: cannot create the run folder {str(run_dir)!r} ({e.strerror}); "
                         "allowed: a writable folder path") from None


def _start(run_dir: Path, config: Config) -> None:
    """Keep aside what a previous run in the folder wrote (:func:`probe.engine.folder.keep_aside`: a
    report shows only what this run computes), then mark the run ``running`` with this process's id and host."""
    keep_aside(run_dir)
    _mark(run_dir, "running", config_hash=config.hash(), **running_marker())


def run_lifecycle(config: Config, timer: Timer, t_start: float, stages: Callable[[Path], dict | None]) -> Run:
    """Run ``stages(run_dir)`` inside the run folder's life cycle: ``summary.json`` says ``running``
    first (with the process id and host), ``interrupted`` on Ctrl-C or SIGTERM, ``failed`` (with the
    error) if anything else raises, and ``complete`` only after the stages' summary, ``timings.json``
    and the report are written. The previous run's outputs are kept aside meanwhile: dropped when
    the run completes, put back when it does not (a finished run put back keeps its own summary).
    ``stages`` returns the summary, or None on a helper process of a data-parallel run (only the
    main process writes)."""
    from probe.distributed import current

    dist = current()
    run_dir = config.run_dir
    with stop_on_sigterm():
        if dist.is_main:
            _create(run_dir)
        try:
            if dist.is_main:
                _start(run_dir, config)
            dist.barrier()
            summary = stages(run_dir)
        except BaseException as e:  # mark failed (or interrupted) and re-raise: nothing may look complete
            if dist.is_main:
                status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                if put_back(run_dir):
                    log(f"{status}; the finished run that was in {run_dir} is kept as it was")
                else:
                    _mark(run_dir, status, config_hash=config.hash(), error=error_text(e))
            raise
        if summary is None:  # a helper process of a data-parallel run: the main process writes
            dist.barrier()
            return Run(run_dir)
        timer.seconds["total"] = round(time.perf_counter() - t_start, 3)
        write_output(run_dir, "timings.json", json.dumps(timer.seconds, indent=2) + "\n")
        summary["timings"] = timer.seconds
        summary["status"] = "complete"
        atomic_write_json(run_dir / "summary.json", summary)
        drop_aside(run_dir)
    log(f"done in {timer.seconds['total']:.0f} s: {run_dir / 'index.html'}")
    dist.barrier()
    return Run(run_dir)


def _begin(ctx: RunContext) -> None:
    """Seed, write ``config.yaml`` (main process) and run the optional pretraining stage."""
    seed = ctx.config.seed
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)
    if ctx.dist.is_main:
        write_output(ctx.run_dir, "config.yaml", dump_config(ctx.config))
    if ctx.config.pretrain.enabled:
        with ctx.timer.stage("pretrain"):
            pretrain_stage(ctx)
    else:
        pretrain_stage(ctx)
    if head_key(ctx.config):  # what the model reads and answers with keys its activations and fine-tuning
        ctx.backbone_key = stable_hash([ctx.backbone_key, *head_key(ctx.config)])


def _stages(ctx: RunContext) -> dict | None:
    """Every stage after data, with inference batches under ``analyses.max_batch_tokens`` and each text
    tokenised once (:func:`probe.models.batching.encoding_cache`); returns the summary, or None on a
    helper process of a data-parallel run."""
    from probe.models.batching import encoding_cache, token_budget

    with token_budget(ctx.config.analyses.max_batch_tokens), encoding_cache():
        return _stage_sequence(ctx)


def _stage_sequence(ctx: RunContext) -> dict | None:
    from probe.report.render import render_report

    kind, dist = ctx.kind, ctx.dist
    _begin(ctx)
    pre = kind.pretrained_representations(ctx)
    per_seed: dict[str, list[pd.DataFrame]] = {}
    predictions: list[pd.DataFrame] = []
    train_logs: dict[int, dict] = {}
    seeds = ctx.config.run_seeds
    for seed in seeds:
        suffix = "" if len(seeds) == 1 else f"-seed{seed}"
        if ctx.given is not None:
            from probe.engine.given import given_model_stage

            with ctx.timer.stage("load"):
                model, train_logs[seed], ft_key = given_model_stage(ctx, seed)
        else:
            with ctx.timer.stage("finetune"):
                model, train_logs[seed], ft_key = finetune_stage(ctx, seed, suffix)
        fine = kind.finetuned_representations(ctx, model, ft_key, suffix)
        if not dist.is_main:
            continue  # analyses run on the main process only
        tables, seed_predictions = kind.seed_tables(ctx, seed, model, pre, fine, train_logs[seed])
        predictions.append(seed_predictions)
        for name, df in tables.items():
            df.insert(0, "seed", seed)
            per_seed.setdefault(name, []).append(df)
    if not dist.is_main:
        return None
    with ctx.timer.stage("analyses"):
        tables = write_seed_tables(ctx.run_dir, per_seed, predictions)
    summary = _summary(ctx, tables, train_logs)
    if ctx.config.tracking == "tensorboard":
        from probe.tracking import write_tensorboard

        write_tensorboard(ctx.run_dir, summary, train_logs)
    with ctx.timer.stage("report"):
        render_report(ctx.run_dir, summary_override={**summary, "status": "complete", "timings": ctx.timer.seconds})
    return summary


def write_seed_tables(run_dir: Path, per_seed: dict[str, list[pd.DataFrame]],
                      predictions: list[pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each table's per-seed rows plus the across-seed rows (``aggregate_seeds``), and the per-example
    predictions, written to ``tables/``; returns the aggregated tables."""
    from probe.analyses.aggregate import aggregate_seeds

    tables = {name: aggregate_seeds(pd.concat(dfs, ignore_index=True)) for name, dfs in per_seed.items()}
    for name, df in tables.items():
        write_table(run_dir, name, df)
    write_table(run_dir, "predictions", pd.concat(predictions, ignore_index=True))
    return tables


def _versions() -> dict[str, str]:
    import sklearn
    import torch
    import transformers

    from probe import __version__

    return {"probe": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def _first_int(train_logs: dict, key: str) -> int | None:
    values = [t[key] for t in train_logs.values() if t.get(key) is not None]
    return int(values[0]) if values else None


def _summary(ctx: RunContext, tables: dict[str, pd.DataFrame], train_logs: dict) -> dict:
    """``summary.json``: the task kind's part (verdicts, task quality, per-seed rows, its task block)
    inside what every run records (config hash, throughput, training cost, reuse, device, versions)."""
    from probe.analyses.aggregate import pooled_rows
    from probe.analyses.verdict import headline_verdict

    config = ctx.config
    part = ctx.kind.summary(ctx, tables, train_logs)
    features = part.pop("features")
    first = features[0] if features else {}
    headline = {k: first.get(k) for k in ("aligned_accuracy", "conflicting_accuracy", "s_only_error", "flip_rate",
                                          "reliance_gap")}
    train_speed = [t["tokens_per_second"] for t in train_logs.values() if t.get("tokens_per_second")]
    found = None
    if "discovery" in tables:
        from probe.discovery.verdicts import discovered

        found = discovered(pooled_rows(tables["discovery"]))
    if "discovery_prompt" in tables:  # a label-word prompt's template elements that move predictions
        from probe.discovery.verdicts import discovered_templates

        found = (found or []) + discovered_templates(pooled_rows(tables["discovery_prompt"]))
    summary = {
        "status": "running", "name": config.name, "config_hash": config.hash(),
        "verdict": headline_verdict(features, part.pop("nothing_planted"), found),
        "task_metric": part.pop("task_metric"), "task_accuracy": part.pop("task_accuracy"), **headline,
        "features": features, "seeds": config.run_seeds, "per_seed": part.pop("per_seed"),
        "probe_family": config.analyses.probe_family, **part,
        "model": {"backbone": config.model.backbone, **({"finetuned": config.model.finetuned}
                                                         if config.model.finetuned else {})},
        "throughput": {"train_tokens_per_second": float(np.mean(train_speed)) if train_speed else None,
                       "extract_tokens_per_second": ctx.speeds},
        "training": {"strategy": config.finetune.strategy if ctx.given is None else "given",
                     "trainable_parameters": _first_int(train_logs, "trainable_parameters"),
                     "total_parameters": _first_int(train_logs, "total_parameters"),
                     "seconds": float(sum(t.get("seconds", 0.0) for t in train_logs.values()))},
        "warnings": list(getattr(ctx.data, "notes", [])) + error_warnings(ctx.analysis_errors),
        **({"analysis_errors": ctx.analysis_errors} if ctx.analysis_errors else {}),
        "reused_stages": ctx.reused, "device": str(ctx.device), "seed": config.seed, "versions": _versions(),
    }
    if found is not None:
        summary["discovered"] = found
    if ctx.pretraining is not None:
        summary["pretraining"] = ctx.pretraining
    if ctx.dist.enabled:
        summary["processes"] = ctx.dist.world
    return summary
