"""The run engine: one sequence of stages for every task kind (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from probe.config import Config, load_config
from probe.engine.run import execute
from probe.engine.sweep import Sweep, execute_sweep

__all__ = ["run", "execute", "execute_sweep", "Sweep"]


def run(config: str | Path | Mapping | Config | None = None, *, progress: bool = True, **overrides: Any):
    """Run one diagnosis (or a sweep, with ``compare:``) and return its :class:`~probe.rundir.Run`
    (a :class:`~probe.engine.sweep.Sweep` for a sweep).

    ``config`` is a YAML path, a dict, a :class:`~probe.config.Config` or ``None`` for the
    built-in default. Keyword overrides use ``__`` for dots: ``finetune__epochs=1``.
    """
    cfg = load_config(config, {k.replace("__", "."): v for k, v in overrides.items()})
    if cfg.compare:
        return execute_sweep(cfg, progress=progress)
    return execute(cfg, progress=progress)
