"""The flow of one run (DESIGN.md §3): data -> pretrain (optional MLM stage) -> fine-tune -> extract ->
analyses -> attribution -> causal (erasure, ablation) -> report.

Under ``accelerate launch`` with several processes (:mod:`probe.distributed`), pretraining,
fine-tuning and extraction run data-parallel on every process; the analyses, the report and every
write to the run directory happen on the main process only.

With ``seeds``, fine-tuning, extraction, analyses, attribution and the causal tests repeat per
seed (the pretrained activations are shared), and the tables gain across-seed rows. A config with
``compare:`` is a sweep: one run per variant, then the comparison (:func:`execute_sweep`). Each
expensive artifact (fine-tuned checkpoint, activations) is keyed by a hash of what produced it and
written atomically, so an interrupted or repeated run resumes instead of recomputing.
``summary.json`` says ``"status": "complete"`` only once everything is written.
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from probe import __version__
from probe.config import Config, dump_config, load_config, stable_hash
from probe.errors import ProbeError
from probe.rundir import Run, atomic_write_json, atomic_write_text, write_table

ACTIVATION_FORMAT = 1  # bump when the pooled-activation layout changes, to invalidate caches


def log(msg: str) -> None:
    """A progress line on stderr (from the main process only, in a data-parallel run)."""
    from probe.distributed import current

    if current().is_main:
        print(f"[probe] {msg}", file=sys.stderr, flush=True)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)


def resolve_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ProbeError("device: 'cuda' was asked for but no CUDA device is available; allowed here: auto, cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _versions() -> dict[str, str]:
    import sklearn
    import torch
    import transformers

    return {"probe": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def _unique(texts: list[str]) -> tuple[list[str], dict[str, int]]:
    index: dict[str, int] = {}
    for t in texts:
        index.setdefault(t, len(index))
    return list(index), index


def _load_npz(path: Path) -> dict[str, Any] | None:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(path)


def _mark(run_dir: Path, status: str, **extra: Any) -> None:
    atomic_write_json(run_dir / "summary.json", {"status": status, **extra})


def run(config: str | Path | Mapping | Config | None = None, *, progress: bool = True, **overrides: Any) -> Run:
    """Run one diagnosis and return its :class:`~probe.rundir.Run`.

    ``config`` is a YAML path, a dict, a :class:`~probe.config.Config` or ``None`` for the
    built-in default. Keyword overrides use ``__`` for dots: ``finetune__epochs=1``.
    """
    cfg = load_config(config, {k.replace("__", "."): v for k, v in overrides.items()})
    if cfg.compare:
        return execute_sweep(cfg, progress=progress)
    return execute(cfg, progress=progress)


@dataclass
class Sweep:
    """The runs of a sweep (``compare:`` in the config) and their comparison (``probe.compare``)."""

    path: Path
    runs: list[Run]
    comparison: pd.DataFrame
    report_path: Path


def execute_sweep(config: Config, progress: bool = True) -> Sweep:
    """Run every variant of ``config.compare`` into ``output_dir/name/<variant>``, then write
    ``comparison.html`` and ``comparison.csv`` there. Artifacts that do not depend on the variant
    (the pretrained model's activations) are computed once, in ``shared/``; the data stage is
    rebuilt per variant (deterministic, seconds). Every variant is validated before any work."""
    from probe.comparison import compare, write_comparison
    from probe.config import variant_configs

    from probe.distributed import current

    variants = variant_configs(config)
    sweep_dir = config.run_dir
    main = current().is_main
    if main:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sweep_dir / "config.yaml", dump_config(config))
    runs = []
    for i, v in enumerate(variants, start=1):
        log(f"sweep: variant {i}/{len(variants)}: {v.name}")
        runs.append(execute(v, progress=progress, shared_dir=sweep_dir / "shared"))
    if not main:  # a helper process of a data-parallel sweep: the main process compares
        return Sweep(sweep_dir, runs, pd.DataFrame(), sweep_dir / "comparison.html")
    from probe.comparison import paired_differences

    table = compare([r.path for r in runs], names=[v.name for v in variants])
    differences = paired_differences([r.path for r in runs], names=[v.name for v in variants],
                                     n_boot=config.analyses.bootstrap_samples, seed=config.seed)
    report = write_comparison(table, sweep_dir, differences=differences)
    log(f"sweep: {len(runs)} variants compared: {report}")
    return Sweep(sweep_dir, runs, table, report)


def execute(config: Config, progress: bool = True, shared_dir: Path | None = None) -> Run:
    """Run every stage of a validated config; see the module docstring. ``shared_dir`` holds
    artifacts shared with other runs of a sweep (the pretrained activations)."""
    from probe.data.task import build_task_data
    from probe.models.backbones import load_tokenizer

    from probe.distributed import current

    if config.task.type == "token-classification":
        from probe.pipeline_tokens import execute_tokens

        return execute_tokens(config, progress=progress, shared_dir=shared_dir)
    dist = current()
    if not dist.is_main:
        progress = False
    timer = _Timer()
    t_start = time.perf_counter()
    with timer.stage("data"):
        data = build_task_data(config)
        tokenizer = load_tokenizer(config.model.backbone)
        device = run_device(config)
    log(f"data: {config.task.dataset}, {len(data.classes)} classes, train {len(data.train_texts)} / "
        f"validation {len(data.val_texts)} / test {len(data.test_texts)}")

    return run_lifecycle(config, timer, t_start, lambda run_dir: _execute_stages(
        config, data, tokenizer, device, run_dir, timer, progress, shared_dir))


def run_device(config: Config):
    """The device of this process: ``config.device``, or this process's device under ``accelerate launch``."""
    from probe.distributed import current

    dist = current()
    return dist.accelerator.device if dist.enabled else resolve_device(config.device)


def run_lifecycle(config: Config, timer: _Timer, t_start: float, stages) -> Run:
    """Run ``stages(run_dir)`` inside the run directory's life cycle, shared by every task type:
    ``summary.json`` says ``running`` first, ``failed`` (with the error) if anything raises, and
    ``complete`` only after the stages' summary, ``timings.json`` and the report are written.
    ``stages`` returns the summary, or None on a helper process of a data-parallel run (only the
    main process writes)."""
    from probe.distributed import current

    dist = current()
    run_dir = config.run_dir
    if dist.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ProbeError(f"output_dir: cannot create the run folder {str(run_dir)!r} ({e.strerror}); "
                             "allowed: a writable folder path") from None
        (run_dir / "index.html").unlink(missing_ok=True)
        _mark(run_dir, "running", config_hash=config.hash())
    dist.barrier()
    try:
        summary = stages(run_dir)
    except BaseException as e:  # mark failed and re-raise: nothing may look complete
        if dist.is_main:
            _mark(run_dir, "failed", config_hash=config.hash(), error=f"{type(e).__name__}: {e}".splitlines()[0])
        raise
    if summary is None:  # a helper process of a data-parallel run: the main process writes
        dist.barrier()
        return Run(run_dir)
    timer.seconds["total"] = round(time.perf_counter() - t_start, 3)
    atomic_write_json(run_dir / "timings.json", timer.seconds)
    summary["timings"] = timer.seconds
    summary["status"] = "complete"
    atomic_write_json(run_dir / "summary.json", summary)
    log(f"done in {timer.seconds['total']:.0f} s: {run_dir / 'index.html'}")
    dist.barrier()
    return Run(run_dir)


def _execute_stages(config, data, tokenizer, device, run_dir: Path, timer: _Timer, progress: bool,
                    shared_dir: Path | None = None) -> dict | None:
    """Every stage after data; returns the summary, or None on a helper process of a data-parallel run."""
    from probe.distributed import current
    from probe.models.backbones import load_encoder
    from probe.report.render import render_report

    dist = current()
    reused: list[str] = []
    backbone, backbone_key, pretraining = begin_stages(config, data, tokenizer, device, run_dir, timer,
                                                       shared_dir, progress, reused)
    seeds = config.run_seeds
    fine_texts, fine_index = _unique(data.test_texts + [t for p in data.planted for t in p.inserted]
                                     + data.probe_texts)
    pre_texts, pre_index = _unique(data.probe_texts)
    with timer.stage("extract"):
        pre = _extract_cached(config, shared_dir or run_dir, "pretrained", backbone_key, pre_texts,
                              lambda: load_encoder(backbone, config.seed), tokenizer, device,
                              False, progress, reused)
    pre_acts = pre["activations"][:, [pre_index[t] for t in data.probe_texts]]

    per_seed: dict[str, list[pd.DataFrame]] = {}
    predictions: list[pd.DataFrame] = []
    train_logs, speeds = {}, {"pretrained": _speed(pre)}
    for seed in seeds:
        suffix = "" if len(seeds) == 1 else f"-seed{seed}"
        with timer.stage("finetune"):
            model, train_log, ft_key = _finetune_cached(config, data, tokenizer, device, run_dir, seed, suffix,
                                                        progress, reused, backbone, backbone_key)
        with timer.stage("extract"):
            fine = _extract_cached(config, run_dir, f"finetuned{suffix}", ft_key, fine_texts, lambda: model,
                                   tokenizer, device, True, progress, reused)
        speeds[f"finetuned{suffix}"] = _speed(fine)
        train_logs[seed] = train_log
        if not dist.is_main:
            continue  # analyses, attribution and causal tests run on the main process only
        with timer.stage("analyses"):
            fine_acts = fine["activations"][:, [fine_index[t] for t in data.probe_texts]]
            preds = {"clean": fine["logits"][[fine_index[t] for t in data.test_texts]].argmax(1)}
            for p in data.planted:
                preds[p.feature.label] = fine["logits"][[fine_index[t] for t in p.inserted]].argmax(1)
            tables = _analyse(config, data, pre_acts, fine_acts, preds, train_log, seed, progress)
            predictions.append(_prediction_rows(data, preds, seed))
        if config.analyses.attribution or config.analyses.invariance:
            with timer.stage("attribution"):
                extra = _attribution_tables(config, data, lambda: load_encoder(backbone, config.seed),
                                            model, tokenizer, pre_acts, seed, progress)
            for name, df in extra.items():
                tables[name] = pd.concat([tables[name], df], ignore_index=True) if name in tables else df
        if config.causal.enabled:
            tables.update(_causal(config, data, model, tokenizer, device, seed, timer, progress, backbone))
        for name, df in tables.items():
            df.insert(0, "seed", seed)
            per_seed.setdefault(name, []).append(df)

    if not dist.is_main:
        return None
    with timer.stage("analyses"):
        tables = write_seed_tables(run_dir, per_seed, predictions)
        features, task_acc = _features(config, data, tables)

    summary = _summary(config, data, task_acc, features, train_logs, speeds, reused, device, tables)
    if pretraining is not None:
        summary["pretraining"] = pretraining
    if dist.enabled:
        summary["processes"] = dist.world
    with timer.stage("report"):
        render_report(run_dir, summary_override={**summary, "status": "complete", "timings": timer.seconds})
    return summary


def _prediction_rows(data, preds: dict[str, np.ndarray], seed: int) -> pd.DataFrame:
    """Per test example: its label and the fine-tuned prediction on the clean text (partition
    ``clean``) and with each planted token inserted (partition = the feature's name); class indices
    into ``summary.task.classes``. ``probe.compare`` pairs these across runs."""
    n = len(data.test_labels)
    return pd.concat([pd.DataFrame({"seed": seed, "partition": part, "example": np.arange(n),
                                    "label": data.test_labels, "prediction": np.asarray(p, dtype=np.int64)})
                      for part, p in preds.items()], ignore_index=True)


def begin_stages(config: Config, data, tokenizer, device, run_dir: Path, timer: _Timer, shared_dir: Path | None,
                 progress: bool, reused: list[str]) -> tuple[str, str, dict | None]:
    """What every task type does first: seed, write ``config.yaml`` (main process) and run the
    optional pretraining stage. Returns where the pretrained weights are, the key that identifies
    them, and what pretraining did (None without it)."""
    from probe.distributed import current

    _seed_everything(config.seed)
    if current().is_main:
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
    if not config.pretrain.enabled:
        return config.model.backbone, config.model.backbone, None
    with timer.stage("pretrain"):
        return _pretrain_cached(config, data, tokenizer, device, run_dir, shared_dir, progress, reused)


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


def _speed(extraction: dict) -> float | None:
    seconds = float(extraction.get("seconds", 0))
    return float(extraction["tokens"]) / seconds if seconds > 0 else None


def _finetune_cached(config, data, tokenizer, device, run_dir: Path, seed: int, suffix: str, progress: bool,
                     reused: list[str], backbone: str, backbone_key: str):
    """The fine-tuned classifier for ``seed``: from ``models/finetuned<suffix>`` when its key matches.
    ``backbone`` is where the pretrained weights are (the pretraining stage's folder, or the configured
    backbone) and ``backbone_key`` what identifies them."""
    from probe.distributed import current
    from probe.models.finetune import build_classifier, finetune
    from probe.models.strategies import for_analysis, load_trained, prepare_model, save_trained

    dist = current()
    ft_key = stable_hash([backbone_key, config.finetune.model_dump(), config.task.max_length, seed,
                          data.fingerprint(), _planted_key(data), "seqcls-v2"])
    model_dir = run_dir / "models" / f"finetuned{suffix}"
    key_file = model_dir / "probe_key.json"
    label = f"finetune{suffix.replace('-', ':')}"
    if dist.agree(key_file.is_file() and json.loads(key_file.read_text()).get("key") == ft_key):
        model = for_analysis(load_trained(model_dir, backbone, data.classes, config.finetune, seed=seed))
        reused.append(label)
        log(f"finetune: reused checkpoint {model_dir} (key {ft_key})")
        return model, json.loads((model_dir / "training.json").read_text()), ft_key
    log(f"finetune: {config.model.backbone}{' (pretrained here)' if config.pretrain.enabled else ''}, "
        f"{config.finetune.strategy}, {config.finetune.epochs} epochs on {device.type}, seed {seed}"
        + (f", {dist.world} processes" if dist.enabled else ""))
    model = prepare_model(build_classifier(backbone, data.classes, seed), config.finetune)
    planted = [(p.feature.token, p.target, p.feature.max_position) for p in data.planted]
    tl = finetune(model, tokenizer, data.train_texts, data.train_labels, data.val_texts, data.val_labels,
                  config.finetune, config.task.max_length, seed, device, progress, planted=planted)
    train_log = tl.to_dict()
    if not dist.is_main:
        return for_analysis(model), train_log, ft_key
    tmp = model_dir.with_name(f".{model_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_trained(model, tmp, config.finetune)
    tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / "training.json", train_log)
    atomic_write_json(tmp / "probe_key.json", {"key": ft_key})
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.rename(model_dir)
    model = for_analysis(model)
    return model, train_log, ft_key


def _pretrain_cached(config, data, tokenizer, device, run_dir: Path, shared_dir: Path | None, progress: bool,
                     reused: list[str]) -> tuple[str, str, dict]:
    """The MLM pretraining stage (issue 7): returns the folder of the pretrained encoder (every later
    stage's "pretrained" model), the key that identifies it, and what pretraining did.

    The checkpoint sits in ``models/pretrained`` (in a sweep: ``shared/models/pretrained-<key>``, so
    variants with the same pretraining share it) and is reused when its key matches."""
    from probe.data.corpus import load_corpus, plant_artifact
    from probe.distributed import current
    from probe.models.pretrain import build_mlm, pretrain_mlm, save_pretrained_encoder

    dist = current()
    p = config.pretrain
    texts, labels = load_corpus(p.corpus, p.text_column, data.corpus_texts, data.corpus_labels, p.max_texts,
                                config.seed)
    artifact = None
    if p.artifact is not None:
        texts, mask = plant_artifact(texts, labels, p.artifact, config.seed)
        artifact = {"token": p.artifact.token, "target_class": p.artifact.target_class, "words": p.artifact.words,
                    "count": p.artifact.count, "texts_with_token": int(mask.sum()), "corpus_texts": len(texts)}
    key = stable_hash([config.model.backbone, p.model_dump(), config.seed, texts, "mlm-v1"])
    base = (shared_dir or run_dir) / "models"
    model_dir = base / ("pretrained" if shared_dir is None else f"pretrained-{key}")
    key_file = model_dir / "probe_key.json"
    if dist.agree(key_file.is_file() and json.loads(key_file.read_text()).get("key") == key):
        reused.append("pretrain")
        log(f"pretrain: reused checkpoint {model_dir} (key {key})")
        return str(model_dir), key, json.loads((model_dir / "pretraining.json").read_text())
    log(f"pretrain: MLM, {p.init} from {config.model.backbone}, {len(texts)} corpus texts, {p.steps} steps of "
        f"{p.batch_size} x {p.max_length} tokens on {device.type}"
        + (f", artifact {p.artifact.token!r} in {artifact['texts_with_token']} texts" if artifact else ""))
    model = build_mlm(config.model.backbone, p, tokenizer, config.seed)
    plog = pretrain_mlm(model, tokenizer, texts, p, config.compute, config.seed, device, progress)
    info = {**plog.to_dict(), "init": p.init, "corpus": p.corpus, "corpus_texts": len(texts), "artifact": artifact}
    log(f"pretrain: masked-token loss {plog.initial_loss:.3f} -> {plog.final_loss:.3f} (held out), "
        f"{plog.tokens_per_second:.0f} tokens/s")
    if dist.is_main:
        tmp = model_dir.with_name(f".{model_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_pretrained_encoder(model, tokenizer, tmp)
        atomic_write_json(tmp / "pretraining.json", info)
        atomic_write_json(tmp / "probe_key.json", {"key": key})
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp.rename(model_dir)
    dist.barrier()
    return str(model_dir), key, info


def _planted_key(data) -> list:
    """What counterfactual augmentation reads from the planted features (token, target, positions)."""
    return [[p.feature.token, int(p.target), p.feature.max_position] for p in data.planted]


def _extract_cached(config, run_dir: Path, name: str, source_key: str, texts: list[str], get_model, tokenizer,
                    device, with_logits: bool, progress: bool, reused: list[str]) -> dict:
    """Pooled activations (and logits) of ``texts``, from ``cache/`` when the same inputs made them.

    With several processes each extracts a contiguous shard of ``texts`` and the rows are gathered
    back in order; tokens are summed and the seconds are the slowest shard's."""
    from probe.distributed import current
    from probe.representations.extract import extract_pooled

    dist = current()
    key = stable_hash([source_key, config.seed, config.task.max_length, texts, ACTIVATION_FORMAT])
    path = run_dir / "cache" / f"activations-{name}-{key}.npz"
    cached = _load_npz(path) if dist.agree(path.is_file() and _load_npz(path) is not None) else None
    if cached is not None:
        reused.append(f"extract:{name.replace('-', ':')}")
        log(f"extract: reused cached {name} activations {path.name}")
        return cached
    sharded = dist.enabled and len(texts) >= dist.world  # fewer texts than processes: each does them all
    out = extract_pooled(get_model(), tokenizer, list(dist.shard(texts)) if sharded else texts,
                         config.task.max_length, config.analyses.batch_size, device, with_logits=with_logits,
                         progress=progress, desc=f"extract {name}")
    local = {"activations": out["activations"]}
    if with_logits:
        local["logits"] = out["logits"]
    arrays = dist.gather_rows(local, axes={"activations": 1}) if sharded else local
    arrays["tokens"] = np.array(int(dist.sum(out["tokens"]) if sharded else out["tokens"]))
    arrays["seconds"] = np.array(dist.max(out["seconds"]))
    if dist.is_main:
        _save_npz(path, **arrays)
    log(f"extract: {name}, {len(texts)} texts, {float(arrays['tokens']) / float(arrays['seconds']):.0f} tokens/s")
    return arrays


def _analyse(config: Config, data, pre_acts: np.ndarray, fine_acts: np.ndarray, preds: dict[str, np.ndarray],
             train_log: dict, seed: int, progress: bool) -> dict[str, pd.DataFrame]:
    """Every analysis of one fine-tuning seed; tidy tables without the seed column."""
    from probe.analyses.behaviour import reliance_metrics
    from probe.analyses.control_tasks import document_type
    from probe.analyses.probing import probe_split, probe_suite
    from probe.analyses.similarity import cka_by_layer, cka_matrix, cka_matrix_table
    from probe.analyses.stats import bootstrap_mean, metric_row
    from probe.data.properties import compute_properties

    a = config.analyses
    tables: dict[str, pd.DataFrame] = {
        "training": pd.DataFrame([{k: e[k] for k in ("epoch", "train_loss", "validation_accuracy")}
                                  for e in train_log["epochs"]])}
    acts = {"pretrained": pre_acts, "finetuned": fine_acts}
    if a.probing:
        properties = {"task": data.test_labels}
        for p in data.planted:
            properties[p.feature.label] = p.probe_has_token.astype(int)
        names = None if a.properties == "auto" else a.properties
        natural, skipped = compute_properties(data.probe_texts, names, min_count=10, return_skipped=True)
        for name, reason in skipped.items():
            log(f"probing: property {name} skipped: {reason}")
        properties.update(natural)
        types = [document_type(t) for t in data.test_texts]
        train_idx, test_idx = probe_split(data.test_labels, seed)
        tables["probing"] = probe_suite(acts, properties, types, train_idx, test_idx, a.probe_family, a.probe_C,
                                        a.probe_max_iter, a.bootstrap_samples, seed, a.control_tasks, progress)
        if a.mdl:
            tables["mdl"] = _mdl_table(config, data, acts, properties, types, seed)
    if a.similarity:
        tables["cka"] = cka_by_layer(pre_acts, fine_acts, debiased=a.cka_debiased)
        matrices = [cka_matrix_table(cka_matrix(pre_acts, fine_acts), metric="linear_cka")]
        if a.cka_debiased:
            matrices.append(cka_matrix_table(cka_matrix(pre_acts, fine_acts, debiased=True),
                                             metric="debiased_linear_cka"))
        tables["cka_matrix"] = pd.concat(matrices, ignore_index=True)
    rows = [metric_row(bootstrap_mean((preds["clean"] == data.test_labels).astype(float), a.bootstrap_samples,
                                      np.random.default_rng([seed, 5, 0])),
                       model="finetuned", layer=None, property="task", metric="clean_accuracy",
                       n=len(data.test_labels))]
    frames = [pd.DataFrame(rows)]
    if a.behaviour:
        for p in data.planted:
            frames.append(reliance_metrics(preds["clean"], preds[p.feature.label], data.test_labels, p.target,
                                           a.bootstrap_samples, seed, p.feature.label))
    tables["behaviour"] = pd.concat(frames, ignore_index=True)
    return tables


def _attribution_tables(config: Config, data, get_encoder, model, tokenizer, pre_acts: np.ndarray, seed: int,
                        progress: bool) -> dict[str, pd.DataFrame]:
    """What the prediction looks at (captum attributions, ERASER faithfulness) for both models, and
    behavioural invariance of the fine-tuned model. The pretrained model is explained through a
    linear probe head fitted on its frozen last layer (DESIGN.md §5), so both answer the same task."""
    import warnings

    from probe.analyses.attribution import spurious_attribution_metrics, word_attributions
    from probe.analyses.faithfulness import faithfulness_metrics
    from probe.analyses.invariance import invariance_metrics
    from probe.analyses.probing import probe_split
    from probe.models.probe_head import fit_probe_head_on_features

    a = config.analyses
    ml = config.task.max_length
    out: dict[str, pd.DataFrame] = {}
    if a.invariance:
        rng = np.random.default_rng([seed, 15])
        idx = np.sort(rng.choice(len(data.test_texts), min(a.invariance_examples, len(data.test_texts)), replace=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the uncased-tokenizer note is kept in the identical_inputs column
            inv = invariance_metrics(model, tokenizer, [data.test_texts[i] for i in idx], max_length=ml,
                                     labels=data.test_labels[idx], n_boot=a.bootstrap_samples, seed=seed)
        out["behaviour"] = inv
    if not a.attribution:
        return out
    train_idx, _ = probe_split(data.test_labels, seed)
    head = fit_probe_head_on_features(get_encoder(), pre_acts[-1][train_idx], data.test_labels[train_idx],
                                      num_labels=len(data.classes), seed=seed,
                                      id2label=dict(enumerate(data.classes)))
    models = {"pretrained": head, "finetuned": model}
    rng = np.random.default_rng([seed, 14])
    k = a.attribution_examples
    labels = data.test_labels

    def pick(mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        return np.sort(rng.choice(idx, min(k, idx.size), replace=False))

    partitions: list[tuple[str, str | None, str | None, list[str], np.ndarray]] = []
    clean_idx = pick(np.ones(len(labels), bool))
    partitions.append(("clean", None, None, [data.test_texts[i] for i in clean_idx], clean_idx))
    for p in data.planted:
        for part, mask in (("conflicting", labels != p.target), ("aligned", labels == p.target)):
            idx = pick(mask)
            partitions.append((part, p.feature.label, p.feature.token, [p.inserted[i] for i in idx], idx))
    rows, words = [], []
    jobs = [(m, method, part) for m in models for method in a.attribution_methods for part in partitions]
    from tqdm.auto import tqdm

    for mname, method, (part, feature, token, texts, idx) in tqdm(jobs, desc="attribution", disable=not progress,
                                                                  leave=False):
        if not texts:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            attrs = word_attributions(models[mname], tokenizer, texts, method, max_length=ml, n_steps=a.ig_steps)
        if any("convergence" in str(w.message).lower() for w in caught):
            log(f"attribution: {mname} {method} on {part}: large convergence delta; raise analyses.ig_steps")
        frames = []
        if token is not None:
            frames.append(spurious_attribution_metrics(attrs, token, model_name=mname, n_boot=a.bootstrap_samples,
                                                       seed=seed, feature=feature))
        if method in a.faithfulness_methods:
            frames.append(faithfulness_metrics(models[mname], tokenizer, attrs, model_name=mname,
                                               feature=feature or "task", max_length=ml,
                                               n_boot=a.bootstrap_samples, seed=seed))
        for df in frames:
            df.insert(df.columns.get_loc("metric") + 1, "partition", part)
            rows.append(df)
        if method == "integrated_gradients":
            words.append(_heatmap_rows(attrs, mname, part, feature, token, idx, labels, data.classes))
    out["attribution"] = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if words:
        out["attribution_words"] = pd.concat(words, ignore_index=True)
    return out


def _causal(config: Config, data, model, tokenizer, device, seed: int, timer, progress: bool,
            backbone: str) -> dict[str, pd.DataFrame]:
    """Erasure and ablation tables of one fine-tuned model (probe.causal.experiment), timed as two stages."""
    from probe.causal.experiment import ablation_tables, erasure_tables
    from probe.models.backbones import load_encoder

    c = config.causal
    out: dict[str, pd.DataFrame] = {}
    model.to(device).eval()
    if data.planted:
        with timer.stage("erasure"):
            t0 = time.perf_counter()
            out["erasure"] = erasure_tables(config, data, model, tokenizer, device, seed, progress)
            log(f"causal: erasure sweep in {time.perf_counter() - t0:.0f} s")
    if c.layer_swap or (c.head_ablation and data.planted):
        with timer.stage("ablation"):
            t0 = time.perf_counter()
            pretrained = load_encoder(backbone, seed).to(device).eval()  # fine-tuning's starting point
            out["ablation"] = ablation_tables(config, data, model, pretrained, tokenizer, device, seed, progress)
            log(f"causal: layer swaps and head ablation in {time.perf_counter() - t0:.0f} s")
    return out


def _heatmap_rows(attrs, model: str, partition: str, feature: str | None, token: str | None, idx: np.ndarray,
                  labels: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Word-level IG scores of the most telling examples of one partition: the first, and for token
    partitions also those with the highest and the lowest spurious attribution share."""
    from probe.analyses.attribution import token_positions

    chosen = {0: "example"}
    if token is not None and attrs:
        shares = []
        for a in attrs:
            pos = token_positions(a.words, token)
            total = np.abs(a.scores).sum()
            shares.append(np.abs(a.scores)[pos].sum() / total if pos.size and total > 0 else np.nan)
        if np.isfinite(shares).any():
            chosen = {int(np.nanargmax(shares)): "highest spurious share",
                      int(np.nanargmin(shares)): "lowest spurious share"}
    rows = []
    for i, why in chosen.items():
        a = attrs[i]
        for position, (word, score) in enumerate(zip(a.words, a.scores)):
            rows.append({"model": model, "partition": partition, "property": feature or "task", "example": int(idx[i]),
                         "selection": why, "label": classes[labels[idx[i]]], "prediction": classes[a.prediction],
                         "position": position, "word": word, "score": float(score)})
    return pd.DataFrame(rows)


def _mdl_table(config: Config, data, acts: dict[str, np.ndarray], properties: dict[str, np.ndarray],
               types: list[str], seed: int) -> pd.DataFrame:
    """Online codelength (Voita & Titov 2020) of the task, each planted feature and their control
    tasks for every (model, layer), plus relative extractability (Lovering et al. 2021) of each
    planted feature against its target class on balanced binary probes."""
    from probe.analyses.control_tasks import control_labels
    from probe.analyses.mdl import online_codelength_layers
    from probe.analyses.stats import bootstrap_indices

    n_boot = config.analyses.bootstrap_samples
    models = list(acts)
    L = acts[models[0]].shape[0]
    designs = np.concatenate([acts[m] for m in models])  # [models * L, n, d]
    keys = [(m, l) for m in models for l in range(L)]
    names = ["task"] + [p.feature.label for p in data.planted]
    labels = {}
    for i, name in enumerate(names):
        labels[name] = properties[name]
        control = control_labels(types, properties[name], np.random.default_rng([seed, 6, i]))
        if np.unique(control).size > 1:  # too few document types give a constant control: no control
            labels[f"control:{name}"] = control
    bits = online_codelength_layers(designs, labels, seed=seed)
    n = designs.shape[1]
    boot = bootstrap_indices(n, n_boot, np.random.default_rng([seed, 9]))
    rows = []

    def add(model, layer, prop, metric, value, samples):
        lo, hi = np.quantile(samples, [0.025, 0.975]) if samples is not None else (np.nan, np.nan)
        rows.append({"model": model, "layer": layer, "property": prop, "metric": metric, "value": float(value),
                     "ci_low": float(lo), "ci_high": float(hi)})

    for name in names:
        K = len(np.unique(labels[name]))
        uniform = n * np.log2(K)
        for g, (m, l) in enumerate(keys):
            for prefix in ("", "control_"):
                if prefix and f"control:{name}" not in bits:
                    continue
                b = bits[("control:" if prefix else "") + name][g]
                total, samples = b.sum(), b[boot].sum(axis=1)
                add(m, l, name, f"{prefix}codelength_bits", total, samples)
                add(m, l, name, f"{prefix}compression", uniform / total, uniform / samples)
    for p in data.planted:
        rng = np.random.default_rng([seed, 10])
        s_lab = properties[p.feature.label]
        t_lab = (data.test_labels == p.target).astype(int)
        per_class = int(min(s_lab.sum(), n - s_lab.sum(), t_lab.sum(), n - t_lab.sum()))
        idx = {k: np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                                          for c in (0, 1)])) for k, y in (("s", s_lab), ("t", t_lab))}
        bs = online_codelength_layers(designs[:, idx["s"]], {"s": s_lab[idx["s"]]}, seed=seed)["s"]
        bt = online_codelength_layers(designs[:, idx["t"]], {"t": t_lab[idx["t"]]}, seed=seed)["t"]
        boot2 = bootstrap_indices(2 * per_class, n_boot, np.random.default_rng([seed, 12]))
        boot3 = bootstrap_indices(2 * per_class, n_boot, np.random.default_rng([seed, 13]))
        for g, (m, l) in enumerate(keys):
            add(m, l, p.feature.label, "relative_extractability", bs[g].sum() / bt[g].sum(),
                bs[g][boot2].sum(axis=1) / bt[g][boot3].sum(axis=1))
    return pd.DataFrame(rows)


def _majority_rate(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent test class."""
    return float(np.bincount(labels).max() / len(labels))


def _features(config: Config, data, tables: dict[str, pd.DataFrame]) -> tuple[list[dict], dict]:
    """Headline numbers and verdict per planted feature, from the behaviour table.

    With several seeds the numbers are the across-seed means and intervals (``seed == "all"``).
    """
    from probe.analyses.verdict import decodability_sentence, erasure_sentence, reliance_verdict

    a = config.analyses
    b = tables["behaviour"]
    pooled = b[b.seed.astype(str) == "all"] if (b.seed.astype(str) == "all").any() else b
    probing = tables.get("probing")
    if probing is not None:
        probing = probing[probing.seed.astype(str) == str(pooled.seed.iloc[0])]
    erasure = tables.get("erasure")
    if erasure is not None:
        erasure = erasure[erasure.seed.astype(str) == str(pooled.seed.iloc[0])]

    def metric(prop: str, name: str) -> dict:
        r = pooled[(pooled.property == prop) & (pooled.metric == name)].iloc[0]
        return {"value": float(r.value), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high)}

    task_acc = metric("task", "clean_accuracy")
    majority_rate = _majority_rate(data.test_labels)
    features = []
    if not a.behaviour:
        return features, task_acc
    for p in data.planted:
        name = p.feature.label
        metrics = {m: metric(name, m) for m in ("clean_accuracy", "aligned_accuracy", "conflicting_accuracy",
                                                "conflicting_accuracy_before", "s_only_error", "flip_rate",
                                                "flip_rate_aligned", "reliance_gap")}
        status, sentence = reliance_verdict(metrics, p.feature.token, p.feature.target_class,
                                            a.reliance_threshold, majority_rate)
        features.append({
            "name": name, "kind": "planted", "token": p.feature.token, "target_class": p.feature.target_class,
            "train_rate_in_class": p.train_rate_in_class, "train_rate_outside": p.train_rate_outside,
            "natural_rate": p.natural_rate, "task_accuracy": metrics.pop("clean_accuracy"), **metrics,
            "verdict_status": status, "verdict": sentence,
            "decodability": decodability_sentence(probing, name) if probing is not None else "",
            "causal": erasure_sentence(erasure, name, p.feature.token, a.reliance_threshold),
        })
    return features, task_acc


def _first_int(train_logs: dict, key: str) -> int | None:
    values = [t[key] for t in train_logs.values() if t.get(key) is not None]
    return int(values[0]) if values else None


def _summary(config: Config, data, task_acc: dict, features: list[dict], train_logs: dict, speeds: dict,
             reused: list[str], device, tables: dict[str, pd.DataFrame]) -> dict:
    first = features[0] if features else {}
    headline = {k: first.get(k) for k in ("aligned_accuracy", "conflicting_accuracy", "s_only_error",
                                          "flip_rate", "reliance_gap")}
    if not features:
        verdict = "No spurious features were configured; only task quality and layer comparisons were measured."
    else:
        verdict = " ".join(f["verdict"].split(". ")[0].rstrip(".") + "." for f in features)
    seeds = config.run_seeds
    majority_rate = _majority_rate(data.test_labels)
    b = tables["behaviour"]
    per_seed = []
    for s in seeds:
        acc = float(b[(b.seed.astype(str) == str(s)) & (b.property == "task")].value.iloc[0])
        per_seed.append({"seed": s, "clean_accuracy": acc,
                         "collapsed": bool(acc <= majority_rate + config.analyses.reliance_threshold),
                         "final_validation_accuracy": train_logs[s]["epochs"][-1]["validation_accuracy"]})
    train_speed = [t["tokens_per_second"] for t in train_logs.values() if t.get("tokens_per_second")]
    return {
        "status": "running",
        "name": config.name,
        "config_hash": config.hash(),
        "verdict": verdict,
        "task_accuracy": task_acc,
        **headline,
        "features": features,
        "seeds": seeds,
        "per_seed": per_seed,
        "probe_family": config.analyses.probe_family,
        "majority_rate": majority_rate,
        "task": {"dataset": config.task.dataset, "classes": data.classes, "n_examples": data.n_total,
                 "n_train": len(data.train_texts), "n_validation": len(data.val_texts),
                 "n_test": len(data.test_texts),
                 "final_validation_accuracy": float(np.mean([p["final_validation_accuracy"] for p in per_seed]))},
        "model": {"backbone": config.model.backbone},
        "throughput": {"train_tokens_per_second": float(np.mean(train_speed)) if train_speed else None,
                       "extract_tokens_per_second": speeds},
        "training": {"strategy": config.finetune.strategy,
                     "trainable_parameters": _first_int(train_logs, "trainable_parameters"),
                     "total_parameters": _first_int(train_logs, "total_parameters"),
                     "seconds": float(sum(t.get("seconds", 0.0) for t in train_logs.values()))},
        "reused_stages": reused,
        "device": str(device),
        "seed": config.seed,
        "versions": _versions(),
    }
