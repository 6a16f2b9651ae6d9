"""The flow of one run (DESIGN.md §3): data -> fine-tune -> extract -> analyses -> report.

Each expensive artifact (fine-tuned checkpoint, activations) is keyed by a hash of what
produced it and written atomically, so an interrupted or repeated run resumes instead of
recomputing. ``summary.json`` says ``"status": "complete"`` only once everything is written.
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import sys
import time
from contextlib import contextmanager
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
    return execute(cfg, progress=progress)


def execute(config: Config, progress: bool = True) -> Run:
    """Run every stage of a validated config; see the module docstring."""
    from probe.data.task import build_task_data
    from probe.models.backbones import load_tokenizer

    timer = _Timer()
    t_start = time.perf_counter()
    with timer.stage("data"):
        data = build_task_data(config)
        tokenizer = load_tokenizer(config.model.backbone)
        device = resolve_device(config.device)
    log(f"data: {config.task.dataset}, {len(data.classes)} classes, train {len(data.train_texts)} / "
        f"validation {len(data.val_texts)} / test {len(data.test_texts)}")

    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "index.html").unlink(missing_ok=True)
    _mark(run_dir, "running", config_hash=config.hash())
    try:
        summary = _execute_stages(config, data, tokenizer, device, run_dir, timer, progress)
    except BaseException as e:  # mark failed and re-raise: nothing may look complete
        _mark(run_dir, "failed", config_hash=config.hash(), error=f"{type(e).__name__}: {e}".splitlines()[0])
        raise
    timer.seconds["total"] = round(time.perf_counter() - t_start, 3)
    atomic_write_json(run_dir / "timings.json", timer.seconds)
    summary["timings"] = timer.seconds
    summary["status"] = "complete"
    atomic_write_json(run_dir / "summary.json", summary)
    log(f"done in {timer.seconds['total']:.0f} s: {run_dir / 'index.html'}")
    return Run(run_dir)


def _execute_stages(config, data, tokenizer, device, run_dir: Path, timer: _Timer, progress: bool) -> dict:
    from probe.analyses.behaviour import reliance_metrics
    from probe.analyses.probing import probe_layers, probe_split
    from probe.analyses.similarity import cka_by_layer
    from probe.analyses.stats import bootstrap_mean
    from probe.analyses.verdict import decodability_sentence, reliance_verdict
    from probe.models.backbones import load_encoder
    from probe.models.finetune import build_classifier, finetune
    from probe.report.render import render_report
    from probe.representations.extract import extract_pooled

    _seed_everything(config.seed)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    reused: list[str] = []
    a = config.analyses
    ml = config.task.max_length

    # fine-tune ----------------------------------------------------------------------------
    with timer.stage("finetune"):
        ft_key = stable_hash([config.model.backbone, config.finetune.model_dump(), ml, config.seed,
                              data.fingerprint(), "seqcls-v1"])
        model_dir = run_dir / "models" / "finetuned"
        key_file = model_dir / "probe_key.json"
        model = None
        if key_file.is_file() and json.loads(key_file.read_text()).get("key") == ft_key:
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(model_dir)
            train_log = json.loads((model_dir / "training.json").read_text())
            reused.append("finetune")
            log(f"finetune: reused checkpoint {model_dir} (key {ft_key})")
        else:
            log(f"finetune: {config.model.backbone}, {config.finetune.epochs} epochs on {device.type}")
            model = build_classifier(config.model.backbone, data.classes, config.seed)
            tl = finetune(model, tokenizer, data.train_texts, data.train_labels, data.val_texts, data.val_labels,
                          config.finetune, ml, config.seed, device, progress)
            train_log = {"epochs": tl.epochs, "tokens": tl.train_tokens, "seconds": tl.train_seconds,
                         "tokens_per_second": tl.tokens_per_second}
            tmp = model_dir.with_name(".finetuned.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / "training.json", train_log)
            atomic_write_json(tmp / "probe_key.json", {"key": ft_key})
            shutil.rmtree(model_dir, ignore_errors=True)
            tmp.rename(model_dir)

    # extract ------------------------------------------------------------------------------
    with timer.stage("extract"):
        fine_texts, fine_index = _unique(data.test_texts + [t for p in data.planted for t in p.inserted]
                                         + data.probe_texts)
        pre_texts, pre_index = _unique(data.probe_texts)
        extraction: dict[str, dict] = {}
        for name, texts, with_logits in (("pretrained", pre_texts, False), ("finetuned", fine_texts, True)):
            source_key = config.model.backbone if name == "pretrained" else ft_key
            key = stable_hash([source_key, config.seed, ml, texts, ACTIVATION_FORMAT])
            path = run_dir / "cache" / f"activations-{name}-{key}.npz"
            cached = _load_npz(path) if path.is_file() else None
            if cached is not None:
                reused.append(f"extract:{name}")
                log(f"extract: reused cached {name} activations {path.name}")
                extraction[name] = cached
                continue
            m = load_encoder(config.model.backbone, config.seed) if name == "pretrained" else model
            out = extract_pooled(m, tokenizer, texts, ml, a.batch_size, device, with_logits=with_logits,
                                 progress=progress, desc=f"extract {name}")
            arrays = {"activations": out["activations"], "tokens": np.array(out["tokens"]),
                      "seconds": np.array(out["seconds"])}
            if with_logits:
                arrays["logits"] = out["logits"]
            _save_npz(path, **arrays)
            extraction[name] = arrays
            log(f"extract: {name}, {len(texts)} texts, {out['tokens'] / out['seconds']:.0f} tokens/s")

    # analyses -----------------------------------------------------------------------------
    with timer.stage("analyses"):
        tables: dict[str, pd.DataFrame] = {}
        tables["training"] = pd.DataFrame([{k: e[k] for k in ("epoch", "train_loss", "validation_accuracy")}
                                           for e in train_log["epochs"]])
        probe_rows = [pre_index[t] for t in data.probe_texts]
        pre_acts = extraction["pretrained"]["activations"][:, probe_rows]
        fine_acts = extraction["finetuned"]["activations"][:, [fine_index[t] for t in data.probe_texts]]
        if a.probing:
            properties = {"task": data.test_labels}
            for p in data.planted:
                properties[p.feature.label] = p.probe_has_token.astype(int)
            train_idx, test_idx = probe_split(data.test_labels, config.seed)
            tables["probing"] = probe_layers({"pretrained": pre_acts, "finetuned": fine_acts}, properties,
                                             train_idx, test_idx, a.probe_C, a.probe_max_iter,
                                             a.bootstrap_samples, config.seed, progress)
        if a.similarity:
            tables["cka"] = cka_by_layer(pre_acts, fine_acts)
        logits = extraction["finetuned"]["logits"]
        clean_pred = logits[[fine_index[t] for t in data.test_texts]].argmax(1)
        task_acc = dict(zip(("value", "ci_low", "ci_high"), bootstrap_mean(
            (clean_pred == data.test_labels).astype(float), a.bootstrap_samples, np.random.default_rng([config.seed, 5, 0]))))
        majority_rate = float(np.bincount(data.test_labels).max() / len(data.test_labels))
        features = []
        if a.behaviour:
            frames = []
            for p in data.planted:
                ins_pred = logits[[fine_index[t] for t in p.inserted]].argmax(1)
                df = reliance_metrics(clean_pred, ins_pred, data.test_labels, p.target, a.bootstrap_samples,
                                      config.seed, p.feature.label)
                frames.append(df)
                metrics = {r.metric: {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high}
                           for r in df.itertuples()}
                status, sentence = reliance_verdict(metrics, p.feature.token, p.feature.target_class,
                                                    a.reliance_threshold, majority_rate)
                where = decodability_sentence(tables.get("probing"), p.feature.label)
                features.append({
                    "name": p.feature.label, "kind": "planted", "token": p.feature.token,
                    "target_class": p.feature.target_class,
                    "train_rate_in_class": p.train_rate_in_class, "train_rate_outside": p.train_rate_outside,
                    "natural_rate": p.natural_rate,
                    "task_accuracy": metrics["clean_accuracy"],
                    **{k: metrics[k] for k in ("aligned_accuracy", "conflicting_accuracy",
                                               "conflicting_accuracy_before", "s_only_error", "flip_rate",
                                               "flip_rate_aligned", "reliance_gap")},
                    "verdict_status": status, "verdict": sentence, "decodability": where,
                })
            if frames:
                tables["behaviour"] = pd.concat(frames, ignore_index=True)
        for name, df in tables.items():
            write_table(run_dir, name, df)

    summary = _summary(config, data, task_acc, features, train_log, extraction, reused, device)
    with timer.stage("report"):
        render_report(run_dir, summary_override={**summary, "status": "complete", "timings": timer.seconds})
    return summary


def _summary(config: Config, data, task_acc: dict, features: list[dict], train_log: dict,
             extraction: dict, reused: list[str], device) -> dict:
    first = features[0] if features else {}
    headline = {k: first.get(k) for k in ("aligned_accuracy", "conflicting_accuracy", "s_only_error",
                                          "flip_rate", "reliance_gap")}
    if not features:
        verdict = "No spurious features were configured; only task quality and layer comparisons were measured."
    else:
        verdict = " ".join(f["verdict"].split(". ")[0].rstrip(".") + "." for f in features)
    extract_speed = {name: float(e["tokens"]) / float(e["seconds"]) for name, e in extraction.items()
                     if "tokens" in e and float(e["seconds"]) > 0}
    return {
        "status": "running",
        "name": config.name,
        "config_hash": config.hash(),
        "verdict": verdict,
        "task_accuracy": task_acc,
        **headline,
        "features": features,
        "task": {"dataset": config.task.dataset, "classes": data.classes, "n_examples": data.n_total,
                 "n_train": len(data.train_texts), "n_validation": len(data.val_texts),
                 "n_test": len(data.test_texts),
                 "final_validation_accuracy": train_log["epochs"][-1]["validation_accuracy"]},
        "model": {"backbone": config.model.backbone},
        "throughput": {"train_tokens_per_second": train_log.get("tokens_per_second"),
                       "extract_tokens_per_second": extract_speed},
        "reused_stages": reused,
        "device": str(device),
        "seed": config.seed,
        "versions": _versions(),
    }
