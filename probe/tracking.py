"""``tracking: tensorboard``: a finished run's training curves and headline numbers as TensorBoard
event files under ``<run>/tensorboard/`` (``tensorboard --logdir reports/<name>/tensorboard``).

Written once, from what the run recorded, after its tables: nothing here runs during training, so a
tracked run computes exactly what an untracked one does (``tracking`` is left out of the config hash).

- ``finetune/seed<s>/``: ``loss`` and ``learning_rate`` per optimiser step (the rate the step used;
  the loss of the main process's batch), and per epoch, at the epoch's last step, ``epoch/train_loss``,
  ``epoch/validation_<metric>`` and ``epoch/tokens_per_second``. Checkpoints trained before steps were
  recorded, and given checkpoints, have the per-epoch curves (or nothing) only.
- ``pretrain/`` (``pretrain:`` enabled): ``loss`` (mean training loss since the previous record) and
  ``learning_rate`` by step, ``held_out_loss`` before (step 0) and after training, ``tokens_per_second``.
- ``headline/``: the summary's clean accuracy and, per planted feature, its reliance gap, conflicting
  accuracy, flip rate and s-only error with their interval ends (``…/ci_low``, ``…/ci_high``), and each
  verdict as text.
"""

from __future__ import annotations

from pathlib import Path

from probe.errors import ProbeError

HEADLINE = ("conflicting_accuracy", "reliance_gap", "flip_rate", "s_only_error")


def require_tensorboard() -> None:
    """Refuse early, with the fix, when ``tracking: tensorboard`` cannot write event files."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ProbeError("tracking: tensorboard needs the tensorboard package: "
                         "pip install 'probe-shortcuts[tensorboard]' (or pip install tensorboard), "
                         "or set tracking: none") from None


def _writer(path: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(path))


def _finetune(out: Path, seed, log: dict) -> None:
    epochs = log.get("epochs") or []
    if not epochs:
        return
    w, step = _writer(out / "finetune" / f"seed{seed}"), 0
    for e in epochs:
        steps = e.get("steps") or {}
        for loss, lr in zip(steps.get("loss", []), steps.get("learning_rate", [])):
            step += 1
            w.add_scalar("loss", loss, step)
            w.add_scalar("learning_rate", lr, step)
        at = step or int(e.get("epoch", 0))
        w.add_scalar("epoch/train_loss", e["train_loss"], at)
        for k, v in e.items():
            if k.startswith("validation_") and isinstance(v, (int, float)):
                w.add_scalar(f"epoch/{k}", v, at)
        if e.get("tokens_per_second"):
            w.add_scalar("epoch/tokens_per_second", e["tokens_per_second"], at)
    w.close()


def _pretrain(out: Path, info: dict) -> None:
    w = _writer(out / "pretrain")
    for step, loss in info.get("losses") or []:
        w.add_scalar("loss", loss, int(step))
    for step, lr in info.get("learning_rates") or []:
        w.add_scalar("learning_rate", lr, int(step))
    last = int(info.get("steps") or 0)
    for step, key in ((0, "initial_loss"), (last, "final_loss")):
        if isinstance(info.get(key), (int, float)) and info[key] == info[key]:
            w.add_scalar("held_out_loss", info[key], step)
    if info.get("tokens_per_second"):
        w.add_scalar("tokens_per_second", info["tokens_per_second"], last)
    w.close()


def _metric(w, tag: str, m) -> None:
    if not isinstance(m, dict):
        return
    for part, key in (("", "value"), ("/ci_low", "ci_low"), ("/ci_high", "ci_high")):
        v = m.get(key)
        if isinstance(v, (int, float)) and v == v:
            w.add_scalar(tag + part, v, 0)


def _headline(out: Path, summary: dict) -> None:
    w = _writer(out / "headline")
    _metric(w, "clean_accuracy", summary.get("task_accuracy"))
    for f in summary.get("features", []):
        for metric in HEADLINE:
            _metric(w, f"{f['name']}/{metric}", f.get(metric))
        if f.get("verdict"):
            w.add_text(f"{f['name']}/verdict", str(f["verdict"]), 0)
    if summary.get("verdict"):
        w.add_text("verdict", str(summary["verdict"]), 0)
    w.close()


def write_tensorboard(run_dir: str | Path, summary: dict, train_logs: dict) -> Path:
    """Write event files into ``<run_dir>/tensorboard/`` from ``summary`` (``summary.json``'s content) and
    ``train_logs`` (seed → the fine-tuning log, ``models/finetuned*/training.json``), and list them in the
    run's manifest. Other files there stay: a rerun's life cycle has already set aside the event files
    the previous run wrote (:mod:`probe.engine.folder`)."""
    from probe.rundir import record_outputs

    require_tensorboard()
    run_dir = Path(run_dir)
    out = run_dir / "tensorboard"
    before = set(out.rglob("*")) if out.exists() else set()
    for seed, log in train_logs.items():
        _finetune(out, seed, log)
    if summary.get("pretraining"):
        _pretrain(out, summary["pretraining"])
    _headline(out, summary)
    record_outputs(run_dir, sorted(str(p.relative_to(run_dir)) for p in set(out.rglob("*")) - before if p.is_file()))
    return out
