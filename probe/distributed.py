"""Data parallelism under ``accelerate launch`` (Hugging Face Accelerate), and nothing without it.

Launched as ``accelerate launch --num_processes N -m probe run CONFIG``, every process runs the
same program. Pretraining and fine-tuning split each *global* batch into contiguous per-process
shards; the model is wrapped in DistributedDataParallel, which averages gradients, so a loss of
``sum(per-example losses on this shard) / global batch size * N`` gives exactly the gradient of the
single-process mean loss and every process takes the same optimizer step. Extraction shards the
examples, and :meth:`Dist.gather_rows` puts the rows back in their original order. Decisions that
read the disk (is a checkpoint cached?) are made by the main process and broadcast
(:meth:`Dist.agree`), and only the main process writes the run directory.

A plain ``probe run`` has ``world == 1``: no process group, no Accelerator, every helper here is a
no-op, so single-process behaviour is unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np


@dataclass
class Dist:
    """Where this process stands: ``rank`` of ``world`` processes, and the Accelerator (or None)."""

    rank: int = 0
    world: int = 1
    accelerator: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence | np.ndarray) -> Sequence | np.ndarray:
        """This process's contiguous part of ``items`` (sizes differ by at most one)."""
        n = len(items)
        lo, hi = self.rank * n // self.world, (self.rank + 1) * n // self.world
        return items[lo:hi]

    def loss_scale(self, global_count: int) -> float:
        """Multiply a *summed* shard loss by this to get the global mean's gradient after DDP averaging."""
        return self.world / max(global_count, 1)

    def prepare(self, model):
        """Wrap ``model`` for data-parallel training (DDP) when there are several processes."""
        if not self.enabled:
            return model
        return self.accelerator.prepare_model(model)

    def unwrap(self, model):
        if not self.enabled:
            return model
        return self.accelerator.unwrap_model(model)

    def barrier(self) -> None:
        if self.enabled:
            self.accelerator.wait_for_everyone()

    def agree(self, value: Any) -> Any:
        """The main process's ``value``, on every process."""
        if not self.enabled:
            return value
        import torch.distributed as td

        box = [value]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def _all(self, value: Any) -> list:
        """``value`` of every process, in rank order."""
        if not self.enabled:
            return [value]
        import torch.distributed as td

        out: list = [None] * self.world
        td.all_gather_object(out, value)
        return out

    def sum(self, value: float) -> float:
        """``value`` summed over processes (tokens counted, for throughput)."""
        return float(sum(self._all(value))) if self.enabled else value

    def max(self, value: float) -> float:
        """The largest ``value`` over processes (the wall time of a sharded stage)."""
        return float(max(self._all(value))) if self.enabled else value

    def gather_rows(self, local: dict[str, np.ndarray], axes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
        """Concatenate each process's shard of every array (along ``axes[name]``, default 0) in rank
        order, on every process: the inverse of :meth:`shard` over the same item order."""
        if not self.enabled:
            return local
        parts = self._all(local)
        axes = axes or {}
        return {k: np.concatenate([p[k] for p in parts], axis=axes.get(k, 0)) for k in local}


@lru_cache(maxsize=1)
def current() -> Dist:
    """The process's :class:`Dist`; builds an Accelerator only when launched with several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    from datetime import timedelta

    from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs

    import torch

    # without CUDA, several processes are CPU processes (gloo): `accelerate launch --multi_gpu
    # --num_processes N` starts them with torchrun, and Accelerator must be told to stay on the CPU.
    # A token classifier never uses its pooler: DDP skips weights without gradients. Helper processes
    # wait at the next collective while the main process runs the analyses: a long timeout.
    acc = Accelerator(cpu=not torch.cuda.is_available(),
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True),
                                       InitProcessGroupKwargs(timeout=timedelta(hours=6))])
    if acc.num_processes != world:
        from probe.errors import ProbeError

        raise ProbeError(f"accelerate: WORLD_SIZE is {world} but Accelerate set up {acc.num_processes} process(es); "
                         "launch with `accelerate launch --multi_gpu --num_processes N -m probe run CONFIG`")
    return Dist(rank=acc.process_index, world=acc.num_processes, accelerator=acc)
