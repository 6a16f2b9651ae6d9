"""Devices, dtypes and CPU threads for the torch probes (:mod:`probe.analyses.logistic_probe`,
:mod:`probe.analyses.mlp_probe`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

__all__ = ["as_tensor", "cpu_threads", "resolve_device", "resolve_dtype"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; otherwise ``torch.device(device)``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` / "auto": float32. Measured on minilm activations (benchmarks/RESULTS_probes.md):
    float32 reaches the float64 optimum to ~2e-6 relative with identical test predictions, and is
    ~1.7x faster on the CPU here. Standardisation statistics are always computed in float64."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


@contextmanager
def cpu_threads(device: torch.device, n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads on the CPU, restoring the setting afterwards.

    The solver's kernels are small (a few MFLOP): extra intra-op threads gain little, and when
    the cores are shared with other processes every op waits for its slowest thread — measured
    3-30x slower with 2 threads than with 1 on a loaded 2-core machine.
    """
    if n is None or device.type != "cpu" or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def as_tensor(X, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``X`` (array or tensor) as a detached tensor on ``device`` in ``dtype``."""
    if isinstance(X, torch.Tensor):
        return X.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(X), dtype=dtype, device=device)
