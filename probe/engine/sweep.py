"""Sweeps (``compare:`` in the config): one run per variant, then their comparison."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from probe.config import Config, dump_config
from probe.engine.context import log
from probe.rundir import Run, atomic_write_text


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
    rebuilt per variant (deterministic, seconds). Every variant is validated before any work, and the
    sweep holds its folder's lock (:func:`probe.engine.lifecycle.take_folder`) throughout."""
    from probe.config import variant_configs
    from probe.engine.lifecycle import take_folder
    from probe.engine.run import check_requirements

    variants = variant_configs(config)
    for v in variants:  # a missing masked LM, translation model or tensorboard is refused before the first variant
        check_requirements(v)
    sweep_dir = config.run_dir
    with take_folder(sweep_dir, config.overwrite):
        return _run_variants(config, variants, sweep_dir, progress)


def _run_variants(config: Config, variants: list[Config], sweep_dir: Path, progress: bool) -> Sweep:
    """Each variant's run (in its own folder, under its own lock), then the comparison."""
    from probe.comparison import compare, paired_differences
    from probe.distributed import current
    from probe.engine.run import execute
    from probe.report.comparison_page import write_comparison

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
    table = compare([r.path for r in runs], names=[v.name for v in variants])
    differences = paired_differences([r.path for r in runs], names=[v.name for v in variants],
                                     n_boot=config.analyses.bootstrap_samples, seed=config.seed)
    report = write_comparison(table, sweep_dir, differences=differences)
    log(f"sweep: {len(runs)} variants compared: {report}")
    return Sweep(sweep_dir, runs, table, report)
