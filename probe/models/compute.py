"""How training and inference use the hardware: device choice, autocast, the optimizer, FLOPs.

One place for what pretraining, fine-tuning, extraction and the analyses all need, so that they
agree (results do not depend on it beyond float noise).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from probe.errors import ProbeError

_PEAK_BF16_FLOPS = (("H100", 989e12), ("H200", 989e12), ("A100", 312e12))  # dense bf16, per device
#: parameter-name endings that get no weight decay (biases and norms)
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``; asking for a missing CUDA is a one-line error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ProbeError("device: 'cuda' was asked for but no CUDA device is available; allowed here: auto, cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast(device):
    """bf16 autocast on CUDA, nothing elsewhere (CPU bf16 is slower and less exact here)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def resolve_precision(precision: str, device) -> str:
    """``compute.precision`` for ``device``: ``auto`` is bf16 on CUDA and fp32 elsewhere."""
    return "bf16" if precision == "bf16" or (precision == "auto" and device.type == "cuda") else "fp32"


def load_dtype(precision: str, device) -> torch.dtype:
    """The dtype models are loaded in: bfloat16 where ``compute.precision`` resolves to bf16 (a large model
    then takes half the memory), float32 otherwise."""
    return torch.bfloat16 if resolve_precision(precision, torch.device(device)) == "bf16" else torch.float32


def autocast_for(precision: str, device):
    """Autocast for a resolved precision (``bf16`` or ``fp32``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def adamw(model, weight_decay: float, lr: float, device) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, no decay on biases and norms, fused on CUDA."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, **fused)


def peak_flops(device) -> float | None:
    """Dense bf16 peak FLOP/s of a known CUDA device (None elsewhere), for model FLOPs utilisation:
    MFU = 6 · trainable parameters · tokens/s / peak (Chowdhery et al. 2022, PaLM appendix B; an
    upper estimate here, since embedding lookups and the masked-only MLM head cost less than 6N)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    return next((flops for key, flops in _PEAK_BF16_FLOPS if key in name), None)


@contextmanager
def seeded_rng(seed: int, device) -> Iterator[None]:
    """The global CPU (and ``device``'s CUDA) generator seeded from ``seed`` inside the block and
    restored after it: dropout is repeatable without seeding anything outside."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def keep_one_on(device, active, others) -> None:
    """On an accelerator, ``active`` on ``device`` and every model in ``others`` back on the CPU, so that
    two large models never need to fit at once; on the CPU nothing moves. Models that accelerate placed
    across devices (``hf_device_map``) stay where they are."""
    device = torch.device(device)
    if device.type == "cpu":
        return
    for model in others:
        if model is not active and getattr(model, "hf_device_map", None) is None:
            model.to("cpu")
    if getattr(active, "hf_device_map", None) is None:
        active.to(device)
