"""Fine-tuning: AdamW, linear warmup/decay, clipping, and the strategies, for any :class:`Objective`.

A plain, explicit loop rather than ``transformers.Trainer``: the run needs exact control of
seeding (one ``torch.Generator`` for shuffling), a per-epoch validation pass, a tqdm bar with
loss and tokens/s, and nothing written outside the run directory.

Which weights train is the strategy's business (:mod:`probe.models.strategies`: full, linear
probe, LP-FT, LoRA, BitFit). On top of any strategy the loop adds the regularisers of the
``finetune`` section (weight decay, L2-SP, a dropout override, early stopping), adversarial
training on the word embeddings (FGM, PGD) and data augmentation (word deletion,
counterfactual planting, :mod:`probe.data.augment`). With the defaults it is plain full
fine-tuning, step for step the same as before the strategies existed.

What is specific to a task (how to tokenise and batch the training examples, the loss, the
validation scores) is an :class:`Objective`: :class:`SequenceObjective` here (one label per
text), ``TaggingObjective`` in :mod:`probe.models.tagger` (one tag per word).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Optional, Protocol

import numpy as np

from probe.config import FinetuneConfig
from probe.models.backbones import BUILTIN_BACKBONES, _not_found, _quiet_transformers, load_encoder
from probe.models.batching import length_sorted_batches, pad_batch, tokenize
from probe.errors import ProbeError


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


def build_classifier(backbone: str, classes: list[str], seed: int):
    """The pretrained encoder with a fresh classification head (initialised from ``seed``)."""
    from transformers import AutoModelForSequenceClassification

    return build_with_head(AutoModelForSequenceClassification, backbone, classes, seed)


def build_with_head(auto_class, backbone: str, labels: list[str], seed: int):
    """``auto_class`` (an ``AutoModelFor...`` class) on the pretrained encoder with a fresh head over
    ``labels`` (``id2label`` / ``label2id`` set), the head initialised from ``seed``. Randomly
    initialised built-ins (``tiny-bert``) get the encoder that :func:`load_encoder` builds from ``seed``."""
    import torch

    _quiet_transformers()
    names = dict(id2label=dict(enumerate(labels)), label2id={c: i for i, c in enumerate(labels)})
    builtin = BUILTIN_BACKBONES.get(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if builtin is not None and builtin.weights_path is None:
            encoder = load_encoder(backbone, seed)
            config = encoder.config
            config.num_labels = len(labels)
            config.update(names)
            model = auto_class.from_config(config)
            missing, _ = model.base_model.load_state_dict(encoder.state_dict(), strict=False)
            if missing:
                raise RuntimeError(f"classifier encoder is missing weights: {missing[:3]}")
            return model
        source = str(builtin.weights_path()) if builtin else backbone
        try:
            return auto_class.from_pretrained(source, num_labels=len(labels), **names)
        except (OSError, ValueError) as e:
            raise ProbeError(_not_found(backbone, e)) from None


def autocast(device):
    """bf16 autocast on CUDA, nothing elsewhere (CPU bf16 is slower and less exact here)."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def predict_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int, device) -> np.ndarray:
    """Classifier logits for ``texts`` in their given order."""
    import torch

    ids = tokenize(tokenizer, texts, max_length)
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode(), autocast(device):
        for idx in length_sorted_batches(ids, batch_size):
            batch = pad_batch(tokenizer, [ids[i] for i in idx]).to(device)
            out[idx] = model(**batch).logits.float().cpu().numpy()
    return out


# --- adversarial training on the word embeddings ------------------------------------------------

def _example_norms(x):
    """L2 norm of each example's ``[tokens, hidden]`` slice, shaped to broadcast over ``x``."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def fgm_perturbation(grad, mask, epsilon: float):
    """FGM (Miyato et al. 2017): ``r = epsilon * g / ||g||_2``, per example, on real tokens only.

    ``grad`` is the loss gradient w.r.t. the word-embedding output ``[batch, tokens, hidden]``,
    ``mask`` the attention mask ``[batch, tokens]``. Each example's perturbation has L2 norm
    exactly ``epsilon`` (0 where its gradient vanishes).
    """
    g = grad * mask.unsqueeze(-1).to(grad.dtype)
    return epsilon * g / _example_norms(g).clamp_min(1e-12)


def project_l2(delta, epsilon: float):
    """Project each example's perturbation onto the L2 ball of radius ``epsilon``."""
    return delta * (epsilon / _example_norms(delta).clamp_min(1e-12)).clamp(max=1.0)


def pgd_step(delta, grad, mask, alpha: float, epsilon: float):
    """One PGD ascent step (Madry et al. 2018) in the L2 geometry, per example:
    ``delta + alpha * g / ||g||_2`` projected onto the ball of radius ``epsilon``."""
    return project_l2(delta + fgm_perturbation(grad, mask, alpha), epsilon)


@contextmanager
def embedding_perturbation(model):
    """A forward hook on the word embeddings that adds ``holder.delta`` to their output while it is set.

    Yields the holder (``delta`` starts as ``None``: no change). The hook is removed on exit.
    """
    holder = SimpleNamespace(delta=None)

    def hook(module, inputs, output):
        if holder.delta is None:
            return None
        return output + holder.delta.to(output.dtype)

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield holder
    finally:
        handle.remove()


# --- the loop ----------------------------------------------------------------------------------

def _optimizer(model, cfg: FinetuneConfig, lr: float, device):
    import torch

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, **fused)


def _check_inputs(cfg: FinetuneConfig, model, planted, n_val: int) -> None:
    from probe.models.strategies import is_peft

    if cfg.strategy == "lora" and not is_peft(model):
        raise ProbeError("finetune: strategy 'lora' trains the peft model that prepare_model(model, cfg) returns; "
                         "pass that model instead of the plain classifier")
    if cfg.augmentation.counterfactual_rate > 0 and not planted:
        raise ProbeError("finetune.augmentation.counterfactual_rate: got "
                         f"{cfg.augmentation.counterfactual_rate}: needs planted features (a spurious section); "
                         "allowed without them: 0")
    if cfg.early_stopping_patience is not None and not n_val:
        raise ProbeError("finetune.early_stopping_patience: needs a validation split (task.validation_size >= 1)")


class Objective(Protocol):
    """What the fine-tuning loop needs to know about a task (sequence classification, tagging).

    ``encode(rng)`` (re)tokenises the training examples, augmented with ``rng`` when it is given
    (the loop passes one per epoch when augmentation is on, None before the first epoch);
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


class SequenceObjective:
    """Sequence classification: one label per text, cross-entropy on the classifier logits,
    validation accuracy. Augmentation: word deletion and counterfactual planting (:mod:`probe.data.augment`)."""

    monitor = "validation_accuracy"
    monitor_label = "validation accuracy"

    def __init__(self, tokenizer, train_texts: list[str], train_labels: np.ndarray, val_texts: list[str],
                 val_labels: np.ndarray, max_length: int, cfg: FinetuneConfig,
                 planted: list[tuple[str, int, int]] | None = None):
        import torch

        self.tokenizer, self.max_length, self.aug, self.planted = tokenizer, max_length, cfg.augmentation, planted
        self.train_texts, self.train_labels = train_texts, train_labels
        self.val_texts, self.val_labels = val_texts, val_labels
        self.labels = torch.as_tensor(train_labels, dtype=torch.long)
        self.n_train, self.n_val = len(train_texts), len(val_texts)
        self.ids: list[list[int]] = []

    def encode(self, rng: np.random.Generator | None) -> None:
        texts = self.train_texts
        if rng is not None:
            from probe.data.augment import counterfactual_plant, delete_words  # looked up per call (tests patch it)

            texts = delete_words(texts, self.aug.word_deletion, rng)
            if self.aug.counterfactual_rate > 0:
                texts, _ = counterfactual_plant(texts, self.train_labels, self.planted, self.aug.counterfactual_rate,
                                                rng)
        self.ids = tokenize(self.tokenizer, texts, self.max_length)

    def batch(self, idx: np.ndarray, device) -> tuple:
        return pad_batch(self.tokenizer, [self.ids[i] for i in idx]).to(device), self.labels[idx].to(device)

    def count(self, idx: np.ndarray) -> int:
        return len(idx)

    def loss(self, logits, y, reduction: str = "mean"):
        import torch

        if reduction == "sum":
            return torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        return torch.nn.functional.cross_entropy(logits.float(), y)

    def validate(self, model, device) -> dict[str, float]:
        pred = predict_logits(model, self.tokenizer, self.val_texts, self.max_length, 64, device).argmax(1)
        return {"validation_accuracy": float((pred == self.val_labels).mean())}

    def describe(self, scores: dict[str, float]) -> str:
        return f"validation accuracy {scores['validation_accuracy']:.3f}"


def finetune(
    model, tokenizer, train_texts: list[str], train_labels: np.ndarray,
    val_texts: list[str], val_labels: np.ndarray, cfg: FinetuneConfig,
    max_length: int, seed: int, device, progress: bool = True, *,
    planted: list[tuple[str, int, int]] | None = None,
    callback: Callable[[str, dict], None] | None = None,
) -> TrainingLog:
    """Fine-tune ``model`` in place with ``cfg.strategy``; validation accuracy after every epoch goes into the log.

    ``model`` is a classifier from :func:`build_classifier`, or for ``lora`` the peft model that
    :func:`probe.models.strategies.prepare_model` returned (other strategies are prepared here).
    ``planted``: ``(token, target class index, max_position)`` per planted feature, needed by
    counterfactual augmentation. ``callback(event, info)`` sees ``phase_start`` / ``phase_end``
    (``phase``, ``model``), ``step`` (``phase``, ``loss``, ``l2_sp``), ``perturbation`` (``delta``,
    ``mask``: the adversarial perturbation of a batch) and ``epoch_end`` (``epoch``,
    ``validation_accuracy``, ``model``).

    The loop itself is :func:`finetune_objective` (shared with taggers,
    :func:`probe.models.tagger.finetune_tagger`); see there for the regularisers.
    """
    objective = SequenceObjective(tokenizer, train_texts, train_labels, val_texts, val_labels, max_length, cfg,
                                  planted)
    return finetune_objective(model, objective, cfg, seed, device, progress, planted=planted, callback=callback)


def finetune_objective(
    model, objective: Objective, cfg: FinetuneConfig, seed: int, device, progress: bool = True, *,
    planted: list | None = None, callback: Callable[[str, dict], None] | None = None,
) -> TrainingLog:
    """The fine-tuning loop: train ``model`` in place on ``objective`` with ``cfg.strategy``.

    ``planted`` is only checked here (counterfactual augmentation needs it; the objective uses
    it). ``callback`` events as in :func:`finetune`; ``epoch_end`` carries every validation score.

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
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from probe.models.strategies import (
        is_head_parameter, is_peft, phases, prepare_model, set_trainable, total_parameter_count,
        trainable_parameter_count)

    from probe.distributed import current

    _check_inputs(cfg, model, planted, objective.n_val)
    dist = current()
    if dist.enabled and cfg.adversarial.method != "none":
        raise ProbeError(f"finetune.adversarial.method: got {cfg.adversarial.method!r} with {dist.world} processes; "
                         "adversarial training runs in one process only; allowed under accelerate launch: none")
    progress = progress and dist.is_main
    model = prepare_model(model, cfg)
    emit = callback or (lambda event, info: None)
    model.to(device)
    aug = cfg.augmentation
    augmenting = aug.word_deletion > 0 or aug.counterfactual_rate > 0
    objective.encode(None)
    steps_per_epoch = math.ceil(objective.n_train / cfg.batch_size)
    generator = torch.Generator().manual_seed(seed)
    adv = cfg.adversarial
    anchors = ({n: p.detach().clone() for n, p in model.named_parameters() if not is_head_parameter(model, n)}
               if cfg.l2_sp > 0 else {})
    log = TrainingLog(strategy=cfg.strategy, total_parameters=total_parameter_count(model))
    plan = phases(cfg)
    epoch, n_total = 0, sum(p[3] for p in plan)

    with embedding_perturbation(model) if adv.method != "none" else nullcontext() as holder:
        for phase_no, (phase, trainable, lr, n_epochs) in enumerate(plan):
            last_phase = phase_no == len(plan) - 1
            set_trainable(model, trainable)
            params = [p for p in model.parameters() if p.requires_grad]
            forward = dist.prepare(model)  # DDP over this phase's trainable weights; the model itself otherwise
            log.trainable_parameters = trainable_parameter_count(model)
            log.phases.append({"phase": phase, "trainable": trainable, "learning_rate": lr, "epochs": n_epochs,
                               "trainable_parameters": log.trainable_parameters})
            anchored = [(p, anchors[n]) for n, p in model.named_parameters() if p.requires_grad and n in anchors]
            optimizer = _optimizer(model, cfg, lr, device)
            total = steps_per_epoch * n_epochs
            scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
            patience = cfg.early_stopping_patience if last_phase else None
            best_score, best_state = -1.0, None
            emit("phase_start", {"phase": phase, "model": model})
            name = "linear probe" if phase == "lp" else "fine-tune"
            for phase_epoch in range(1, n_epochs + 1):
                epoch += 1
                model.train()
                if phase == "lp" and not is_peft(model):
                    model.base_model.eval()  # frozen features: no dropout inside the encoder
                if augmenting:
                    objective.encode(np.random.default_rng([seed, epoch]))
                order = torch.randperm(objective.n_train, generator=generator).numpy()
                bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch}/{n_total}",
                           disable=not progress, unit="step", leave=False)
                losses, penalties, norms, tokens, t0 = [], [], [], 0, time.perf_counter()
                for step in bar:
                    idx = order[step * cfg.batch_size: (step + 1) * cfg.batch_size]
                    if dist.enabled:  # this process's shard of the global batch (see probe.distributed)
                        idx, weight = dist.shard(idx), dist.loss_scale(objective.count(idx))
                        if not len(idx):  # fewer examples than processes: take part with zero weight
                            idx, weight = order[:1], 0.0
                    batch, y = objective.batch(idx, device)
                    if adv.method != "none":
                        shape = (*batch["input_ids"].shape, model.get_input_embeddings().embedding_dim)
                        holder.delta = torch.zeros(shape, device=device, requires_grad=True)
                    with autocast(device):
                        logits = forward(**batch).logits
                    if dist.enabled:
                        loss = objective.loss(logits, y, "sum") * weight
                    else:
                        loss = objective.loss(logits, y)
                    loss.backward()
                    if adv.method != "none":
                        norms.append(_adversarial_backward(model, batch, y, holder, adv, emit, objective.loss))
                    if anchored:
                        penalties.append(_l2_sp_backward(anchored, cfg.l2_sp))
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(loss.item())
                    emit("step", {"phase": phase, "loss": losses[-1], "l2_sp": penalties[-1] if penalties else 0.0})
                    tokens += int(batch["attention_mask"].sum())
                    elapsed = time.perf_counter() - t0
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", tok_s=f"{tokens / max(elapsed, 1e-9):.0f}")
                bar.close()
                seconds = time.perf_counter() - t0
                tokens = int(dist.sum(tokens))
                log.train_tokens += tokens
                log.train_seconds += seconds
                scores = objective.validate(model, device)
                score = scores[objective.monitor]
                train_loss = float(np.mean(losses))
                if dist.enabled:  # each process's loss is its shard's share x world: the global mean is their average
                    train_loss = dist.sum(train_loss) / dist.world
                record = {"epoch": epoch, "train_loss": train_loss, **scores,
                          "seconds": seconds, "tokens_per_second": tokens / seconds if seconds else 0.0}
                if device.type == "cuda":
                    from probe.models.pretrain import peak_flops

                    peak = peak_flops(device)
                    if peak and seconds:  # model FLOPs utilisation of this epoch (all processes together)
                        record["mfu"] = 6 * log.trainable_parameters * tokens / seconds / (peak * dist.world)
                if len(plan) > 1 or phase != "ft":
                    record["phase"] = phase
                if penalties:
                    record["l2_sp_penalty"] = float(np.mean(penalties))
                if norms:
                    record["perturbation_norm_max"] = float(np.max(norms))
                log.epochs.append(record)
                if dist.is_main:
                    tqdm.write(f"[probe] epoch {epoch}{f' ({name})' if 'phase' in record else ''}: train loss "
                               f"{train_loss:.3f}, {objective.describe(scores)}, "
                               f"{tokens / seconds:.0f} tokens/s", file=sys.stderr)
                emit("epoch_end", {"epoch": epoch, **scores, "model": model})
                if patience is not None:
                    if score > best_score:
                        best_score, log.best_epoch = score, epoch
                        best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                    elif epoch - log.best_epoch >= patience:
                        if phase_epoch < n_epochs:
                            log.stopped_epoch = epoch
                        break
            if best_state is not None and log.best_epoch != epoch:
                with torch.no_grad():
                    for n, p in model.named_parameters():
                        if n in best_state:
                            p.copy_(best_state[n])
                tqdm.write(f"[probe] early stopping: restored epoch {log.best_epoch} "
                           f"({objective.monitor_label} {best_score:.3f})", file=sys.stderr)
            emit("phase_end", {"phase": phase, "model": model})
    model.eval()
    return log


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


def _adversarial_backward(model, batch, y, holder, adv, emit, loss_fn: Callable) -> float:
    """After the clean backward pass (``holder.delta`` = zeros that caught the embedding gradient):
    build the FGM / PGD perturbation, then backpropagate the loss (``loss_fn(logits, y)``) at the
    perturbed embeddings into the weights. Returns the largest per-example perturbation norm."""
    import torch

    mask = batch["attention_mask"]
    grad = holder.delta.grad
    if adv.method == "fgm":
        delta = fgm_perturbation(grad, mask, adv.epsilon)
    else:
        delta = torch.zeros_like(grad)
        for k in range(adv.steps):
            delta = pgd_step(delta, grad, mask, adv.alpha, adv.epsilon).detach()
            if k < adv.steps - 1:
                holder.delta = delta.requires_grad_(True)
                with autocast(mask.device):
                    logits = model(**batch).logits
                loss = loss_fn(logits, y)
                grad = torch.autograd.grad(loss, holder.delta)[0]
    delta = delta.detach()
    emit("perturbation", {"delta": delta, "mask": mask, "method": adv.method})
    holder.delta = delta
    try:
        with autocast(mask.device):
            logits = model(**batch).logits
        loss_fn(logits, y).backward()
    finally:
        holder.delta = None
    return float(_example_norms(delta).max())
