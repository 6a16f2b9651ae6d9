"""Adversarial training on the word-embedding output: FGM (Miyato et al. 2017) and PGD (Madry et al. 2018).

The perturbation is per example, in the L2 geometry, on real tokens only; a forward hook on the
word embeddings adds it (:func:`embedding_perturbation`). The fine-tuning loop
(:func:`probe.models.finetune.finetune_objective`) calls :func:`adversarial_backward` after each clean
backward pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace
from typing import Callable

from probe.models.compute import autocast


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


def adversarial_backward(model, batch, y, holder, adv, emit, loss_fn: Callable) -> float:
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
