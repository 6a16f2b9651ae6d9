"""Fine-tuning: AdamW, linear warmup/decay, clipping, and the strategies, for any :class:`Objective`.

A plain, explicit loop rather than ``transformers.Trainer``: the run needs exact control of
seeding (one ``torch.Generator`` for shuffling), a per-epoch validation pass, a tqdm bar with
loss and tokens/s, and nothing written outside the run directory.

Which weights train is the strategy's business (:mod:`probe.models.strategies`: full, linear
probe, LP-FT, LoRA, BitFit). On top of any strategy the loop adds the regularisers of the
``finetune`` section (weight decay, L2-SP, a dropout override, early stopping), adversarial
training on the word embeddings (FGM, PGD; :mod:`probe.models.adversarial`) and data
augmentation (drawn by the objective every epoch). With the defaults it is plain full
fine-tuning, step for step the same as before the strategies existed.

What is specific to a task (how to tokenise and batch the training examples, the loss, the
validation scores) is an :class:`Objective`: ``SequenceObjective`` in
:mod:`probe.tasks.sequence.objective` (one label per text), ``TaggingObjective`` in
:mod:`probe.tasks.tokens.objective` (one tag per word).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import numpy as np

from probe.config import FinetuneConfig
from probe.errors import ProbeError
from probe.models.adversarial import adversarial_backward, embedding_perturbation
from probe.models.compute import adamw, autocast, peak_flops
from probe.models.strategies import (is_head_parameter, is_peft, phases, prepare_model, set_trainable,
                                     total_parameter_count, trainable_parameter_count)

SHOW_EVERY = 20  # steps between progress-bar updates (each reads the loss back from the device)


@dataclass
class TrainingLog:
    """What fine-tuning did: one record per epoch plus totals.

    ``trainable_parameters`` counts the last phase's trainable weights (LP-FT: all of them;
    ``phases`` has each phase's count). ``best_epoch`` is set when early stopping is on (the
    epoch whose weights the model holds); ``stopped_epoch`` when it stopped before the last epoch.
    Epochs are numbered across phases (LP-FT: the linear-probing epochs come first).
    """

    epochs: list[dict] = field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0
    strategy: str = "full"
    trainable_parameters: int = 0
    total_parameters: int = 0
    phases: list[dict] = field(default_factory=list)
    best_epoch: Optional[int] = None
    stopped_epoch: Optional[int] = None

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0

    def to_dict(self) -> dict:
        """JSON-ready: ``epochs``, ``tokens``, ``seconds``, ``tokens_per_second`` and the strategy fields."""
        return {"epochs": self.epochs, "tokens": self.train_tokens, "seconds": self.train_seconds,
                "tokens_per_second": self.tokens_per_second, "strategy": self.strategy,
                "trainable_parameters": self.trainable_parameters, "total_parameters": self.total_parameters,
                "phases": self.phases, "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}


def _check_inputs(cfg: FinetuneConfig, model, planted, n_val: int) -> None:
    if cfg.strategy == "lora" and not is_peft(model):
        raise ProbeError("finetune: strategy 'lora' trains the peft model that prepare_model(model, cfg) returns; "
                         "pass that model instead of the plain classifier")
    if cfg.augmentation.counterfactual_rate > 0 and not planted:
        raise ProbeError("finetune.augmentation.counterfactual_rate: got "
                         f"{cfg.augmentation.counterfactual_rate}: needs planted features (a spurious section); "
                         "allowed without them: 0")
    if cfg.early_stopping_patience is not None and not n_val:
        raise ProbeError("finetune.early_stopping_patience: needs a validation split (task.validation_size >= 1)")


def needs_augmenter(cfg: FinetuneConfig, augmenter):
    """``augmenter``, checked to be there when the augmentation needs models (synonym, contextual, back-translation)."""
    if cfg.augmentation.uses_models and augmenter is None:
        raise ProbeError("finetune.augmentation: synonym_replacement, contextual_replacement and back_translation need "
                         "an augmenter; pass augmenter=probe.models.augmenters.build_augmenter(...) (probe run does)")
    return augmenter


class Objective(Protocol):
    """What the fine-tuning loop needs to know about a task (sequence classification, tagging).

    ``encode(rng)`` (re)tokenises the training examples, augmented with ``rng`` when it is given
    (the loop passes one per epoch when augmentation is on, None before the first epoch; an objective
    may set ``augmented``, how many training examples each augmentation changed, for the epoch's record);
    ``batch(idx, device)`` returns the padded model inputs and the targets of training examples
    ``idx``; ``count(idx)`` the number of loss terms they hold (examples, or labelled tokens), which
    scales the summed loss under data parallelism; ``loss(logits, y, reduction)`` the
    cross-entropy (``"mean"`` or ``"sum"``); ``validate(model, device)`` the validation scores,
    one of them named by ``monitor`` (the one early stopping watches, ``monitor_label`` in
    messages); ``describe(scores)`` them for the log line.
    """

    monitor: str
    monitor_label: str
    n_train: int
    n_val: int

    def encode(self, rng: np.random.Generator | None) -> None: ...
    def batch(self, idx: np.ndarray, device) -> tuple: ...
    def count(self, idx: np.ndarray) -> int: ...
    def loss(self, logits, y, reduction: str = "mean"): ...
    def validate(self, model, device) -> dict[str, float]: ...
    def describe(self, scores: dict[str, float]) -> str: ...


def finetune_objective(
    model, objective: Objective, cfg: FinetuneConfig, seed: int, device, progress: bool = True, *,
    planted: list | None = None, callback: Callable[[str, dict], None] | None = None,
) -> TrainingLog:
    """The fine-tuning loop: train ``model`` in place on ``objective`` with ``cfg.strategy``.

    ``model`` is a classifier or tagger (for ``lora`` the peft model that
    :func:`probe.models.strategies.prepare_model` returned; other strategies are prepared here).
    ``planted`` is only checked here (counterfactual augmentation needs it; the objective uses it).
    ``callback(event, info)`` sees ``phase_start`` / ``phase_end`` (``phase``, ``model``), ``step``
    (``phase``, ``loss``, ``l2_sp``), ``perturbation`` (``delta``, ``mask``: the adversarial
    perturbation of a batch) and ``epoch_end`` (``epoch``, every validation score, ``model``).

    L2-SP (Li et al. 2018) adds ``l2_sp/2 * sum ||theta - theta_0||^2`` to the loss, over the
    trainable encoder weights (not the head; for LoRA the adapters), anchored at their values
    when this function starts, i.e. the pretrained weights; the ``step`` callback reports it as
    measured before that step's update. Adversarial training adds the loss at the perturbed
    word embeddings to the clean loss; FGM and PGD perturb each example separately
    (per-example L2 norm: FGM exactly ``epsilon``, PGD at most ``epsilon``, starting from zero
    with the clean gradient as the first ascent direction).
    Early stopping watches ``objective.monitor`` in the last phase (LP-FT: the fine-tuning phase)
    and restores the best epoch's trainable weights. Augmentation is drawn afresh every epoch
    from ``(seed, epoch)``.
    """
    import torch

    from probe.distributed import current

    _check_inputs(cfg, model, planted, objective.n_val)
    dist = current()
    if dist.enabled and cfg.adversarial.method != "none":
        raise ProbeError(f"finetune.adversarial.method: got {cfg.adversarial.method!r} with {dist.world} processes; "
                         "adversarial training runs in one process only; allowed under accelerate launch: none")
    model = prepare_model(model, cfg)
    model.to(device)
    objective.encode(None)
    loop = _Loop(model=model, objective=objective, cfg=cfg, seed=seed, device=device,
                 progress=progress and dist.is_main, emit=callback or (lambda event, info: None), dist=dist,
                 generator=torch.Generator().manual_seed(seed),
                 steps_per_epoch=math.ceil(objective.n_train / cfg.batch_size),
                 anchors=({n: p.detach().clone() for n, p in model.named_parameters()
                           if not is_head_parameter(model, n)} if cfg.l2_sp > 0 else {}),
                 log=TrainingLog(strategy=cfg.strategy, total_parameters=total_parameter_count(model)),
                 callback=callback is not None)
    plan = phases(cfg)
    loop.n_total = sum(p[3] for p in plan)
    with embedding_perturbation(model) if cfg.adversarial.method != "none" else nullcontext() as holder:
        loop.holder = holder
        for phase_no, phase in enumerate(plan):
            _run_phase(loop, *phase, last_phase=phase_no == len(plan) - 1, several=len(plan) > 1)
    model.eval()
    return loop.log


@dataclass
class _Loop:
    """What the phases and epochs of one :func:`finetune_objective` call share."""

    model: Any
    objective: Objective
    cfg: FinetuneConfig
    seed: int
    device: Any
    progress: bool
    emit: Callable[[str, dict], None]
    dist: Any
    generator: Any
    steps_per_epoch: int
    anchors: dict
    log: TrainingLog
    holder: Any = None
    epoch: int = 0
    n_total: int = 0
    callback: bool = False  # someone listens to the per-step events (each then costs a host sync)


def _run_phase(loop: _Loop, phase: str, trainable: str, lr: float, n_epochs: int, *, last_phase: bool,
               several: bool) -> None:
    """One phase of a strategy (``lp``: only the head trains; ``ft``): its optimizer and schedule,
    its epochs, and early stopping (last phase only) with the best epoch's weights restored."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    model, cfg, log = loop.model, loop.cfg, loop.log
    set_trainable(model, trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    forward = loop.dist.prepare(model)  # DDP over this phase's trainable weights; the model itself otherwise
    log.trainable_parameters = trainable_parameter_count(model)
    log.phases.append({"phase": phase, "trainable": trainable, "learning_rate": lr, "epochs": n_epochs,
                       "trainable_parameters": log.trainable_parameters})
    anchored = [(p, loop.anchors[n]) for n, p in model.named_parameters() if p.requires_grad and n in loop.anchors]
    optimizer = adamw(model, cfg.weight_decay, lr, loop.device)
    total = loop.steps_per_epoch * n_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    patience = cfg.early_stopping_patience if last_phase else None
    best_score, best_state = -1.0, None
    loop.emit("phase_start", {"phase": phase, "model": model})
    for phase_epoch in range(1, n_epochs + 1):
        loop.epoch += 1
        score = _run_epoch(loop, phase, forward, params, optimizer, scheduler, anchored, several)
        if patience is not None:
            if score > best_score:
                best_score, log.best_epoch = score, loop.epoch
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            elif loop.epoch - log.best_epoch >= patience:
                if phase_epoch < n_epochs:
                    log.stopped_epoch = loop.epoch
                break
    if best_state is not None and log.best_epoch != loop.epoch:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best_state:
                    p.copy_(best_state[n])
        tqdm.write(f"[probe] early stopping: restored epoch {log.best_epoch} "
                   f"({loop.objective.monitor_label} {best_score:.3f})", file=sys.stderr)
    loop.emit("phase_end", {"phase": phase, "model": model})


def _run_epoch(loop: _Loop, phase: str, forward, params, optimizer, scheduler, anchored: list,
               several: bool) -> float:
    """One epoch: shuffled batches (augmentation redrawn from ``(seed, epoch)``), validation, the
    epoch's record in the log. Returns the monitored validation score."""
    import torch
    from tqdm.auto import tqdm

    model, objective, cfg, dist = loop.model, loop.objective, loop.cfg, loop.dist
    model.train()
    if phase == "lp" and not is_peft(model):
        model.base_model.eval()  # frozen features: no dropout inside the encoder
    if cfg.augmentation.active:
        objective.encode(np.random.default_rng([loop.seed, loop.epoch]))
    order = torch.randperm(objective.n_train, generator=loop.generator).numpy()
    name = "linear probe" if phase == "lp" else "fine-tune"
    bar = tqdm(range(loop.steps_per_epoch), desc=f"{name} epoch {loop.epoch}/{loop.n_total}",
               disable=not loop.progress, unit="step", leave=False)
    # losses and token counts stay on the device until the epoch ends (or a callback or the progress bar,
    # every SHOW_EVERY steps, reads them): no host sync per step on an accelerator
    losses, lrs, penalties, norms, tokens, t0 = [], [], [], [], 0, time.perf_counter()
    for step in bar:
        lrs.append(float(optimizer.param_groups[0]["lr"]))  # the rate this step uses (tracking: tensorboard)
        loss, penalty, norm, n_tokens = _train_step(loop, forward, params, optimizer, scheduler, anchored, order, step)
        losses.append(loss)
        if penalty is not None:
            penalties.append(penalty)
        if norm is not None:
            norms.append(norm)
        if loop.callback:
            loop.emit("step", {"phase": phase, "loss": float(loss), "l2_sp": penalties[-1] if penalties else 0.0})
        tokens = tokens + n_tokens
        if loop.progress and (step % SHOW_EVERY == 0 or step == loop.steps_per_epoch - 1):
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{float(torch.stack(losses[-20:]).mean()):.3f}",
                            tok_s=f"{int(tokens) / max(elapsed, 1e-9):.0f}")
    bar.close()
    seconds = time.perf_counter() - t0
    losses = torch.stack(losses).cpu().tolist() if losses else []
    tokens = int(dist.sum(int(tokens)))
    loop.log.train_tokens += tokens
    loop.log.train_seconds += seconds
    scores = objective.validate(model, loop.device)
    train_loss = float(np.mean(losses))
    if dist.enabled:  # each process's loss is its shard's share x world: the global mean is their average
        train_loss = dist.sum(train_loss) / dist.world
    augmented = dict(getattr(objective, "augmented", {}))
    record = {"epoch": loop.epoch, "train_loss": train_loss, **scores,
              "seconds": seconds, "tokens_per_second": tokens / seconds if seconds else 0.0,
              **{f"augmented_{k}": v for k, v in augmented.items()},
              "steps": {"loss": [float(v) for v in losses], "learning_rate": lrs}}
    peak = peak_flops(loop.device)
    if peak and seconds:  # model FLOPs utilisation of this epoch (all processes together)
        record["mfu"] = 6 * loop.log.trainable_parameters * tokens / seconds / (peak * dist.world)
    if several or phase != "ft":
        record["phase"] = phase
    if penalties:
        record["l2_sp_penalty"] = float(np.mean(penalties))
    if norms:
        record["perturbation_norm_max"] = float(np.max(norms))
    loop.log.epochs.append(record)
    if dist.is_main:
        tqdm.write(f"[probe] epoch {loop.epoch}{f' ({name})' if 'phase' in record else ''}: train loss "
                   f"{train_loss:.3f}, {objective.describe(scores)}, {tokens / seconds:.0f} tokens/s"
                   + (f"; changed by augmentation (of {objective.n_train}): "
                      + ", ".join(f"{k} {v}" for k, v in augmented.items()) if augmented else ""), file=sys.stderr)
    loop.emit("epoch_end", {"epoch": loop.epoch, **scores, "model": model})
    return scores[objective.monitor]


def _train_step(loop: _Loop, forward, params, optimizer, scheduler, anchored: list, order: np.ndarray, step: int):
    """Optimizer step ``step`` of an epoch visiting the training examples in ``order``: ``(loss, L2-SP
    penalty or None, largest adversarial perturbation norm or None, real tokens in the batch)``."""
    import torch

    model, objective, cfg, dist, device = loop.model, loop.objective, loop.cfg, loop.dist, loop.device
    adv = cfg.adversarial
    idx = order[step * cfg.batch_size: (step + 1) * cfg.batch_size]
    if dist.enabled:  # this process's shard of the global batch (see probe.distributed)
        idx, weight = dist.shard(idx), dist.loss_scale(objective.count(idx))
        if not len(idx):  # fewer examples than processes: take part with zero weight
            idx, weight = order[:1], 0.0
    batch, y = objective.batch(idx, device)
    if adv.method != "none":
        shape = (*batch["input_ids"].shape, model.get_input_embeddings().embedding_dim)
        loop.holder.delta = torch.zeros(shape, device=device, requires_grad=True)
    with autocast(device):
        logits = forward(**batch).logits
    loss = objective.loss(logits, y, "sum") * weight if dist.enabled else objective.loss(logits, y)
    loss.backward()
    norm = (adversarial_backward(model, batch, y, loop.holder, adv, loop.emit, objective.loss)
            if adv.method != "none" else None)
    penalty = _l2_sp_backward(anchored, cfg.l2_sp) if anchored else None
    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), penalty, norm, batch["attention_mask"].sum()


def _l2_sp_backward(anchored: list, alpha: float) -> float:
    """L2-SP (Li et al. 2018): add the gradient of ``alpha/2 * sum ||theta - theta_0||^2`` to the weights'
    gradients and return the penalty. The analytic gradient ``alpha * (theta - theta_0)`` is what
    backpropagating the penalty as part of the loss would give, at a third of the cost."""
    import torch

    with torch.no_grad():
        params, anchors = [p for p, _ in anchored], [a for _, a in anchored]
        diffs = torch._foreach_sub(params, anchors)
        penalty = alpha / 2 * float(torch.stack(torch._foreach_norm(diffs)).double().pow(2).sum())
        torch._foreach_mul_(diffs, alpha)
        for p, g in zip(params, diffs):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)
    return penalty
