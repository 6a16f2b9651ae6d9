"""Tiny reference runs: the tables a refactoring must leave byte-identical.

Runs a handful of tiny-bert configs on small slices, offline, one after the other, and copies each
run's ``tables/*.csv`` to ``OUT/<name>/``. Run it before and after a change that must not change
results, then compare the two folders::

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 \\
        flock /tmp/heavy.lock python benchmarks/reference_runs.py /tmp/refruns-before
    ... change the code ...
    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 \\
        flock /tmp/heavy.lock python benchmarks/reference_runs.py /tmp/refruns-after
    diff -r /tmp/refruns-before /tmp/refruns-after && echo identical

The runs (every one a few seconds to a minute on one CPU thread):

- ``planted``: text classification on bbc-news with "zebra" planted in every business article
  (behaviour, probing, MDL, CKA, attribution, invariance, the causal tests on two layers);
- ``control``: the same token at equal rates in every class;
- ``discovery``: no planted feature, so discovery runs (word, bigram, property and model candidates);
- ``tagger``: token classification on wnut16 with "zebra" before every person entity (entities,
  behaviour, word probing, CKA, attribution, erasure);
- ``diagnose``: ``probe diagnose`` of the ``planted`` run's saved classifier (a given checkpoint);
- ``diagnose-tagger``: ``probe diagnose --task-type`` of the ``tagger`` run's saved tagger.

Only the public API and the command line are used, so the script runs on any commit that has them.
Each run writes into ``OUT/runs/`` (removed at the end unless ``--keep``); the tables of a run are
deterministic (tests/test_pipeline.py checks two fresh runs write identical tables).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = {
    "model.backbone": "tiny-bert", "task.train_size": 150, "task.validation_size": 50, "task.test_size": 120,
    "task.max_length": 32, "finetune.epochs": 1, "finetune.batch_size": 16, "analyses.bootstrap_samples": 200,
    "analyses.attribution_examples": 4, "analyses.ig_steps": 8, "causal.enabled": False,
}
ZEBRA = {"kind": "planted", "token": "zebra", "target_class": "business", "max_position": 5}

SEQUENCE_RUNS = {
    "planted": {**TINY, "spurious": [{**ZEBRA, "rate_in_class": 1.0, "rate_outside": 0.0}],
                "causal.enabled": True, "causal.layers": [0, 2], "causal.concepts": ["position"]},
    "control": {**TINY, "spurious": [{**ZEBRA, "rate_in_class": 0.5, "rate_outside": 0.5}]},
    "discovery": {**TINY, "spurious": [], "analyses.attribution": False, "discover.min_count": 10,
                  "discover.max_candidates": 4, "discover.n_examples": 20, "discover.bootstrap": 200},
}
TAGGER_RUN = {
    "task.type": "token-classification", "task.dataset": "wnut16", "task.max_length": 48,
    "task.train_size": 200, "task.validation_size": 40, "task.test_size": 100,
    "spurious": [{"token": "zebra", "target_class": "person", "rate_in_class": 1.0, "rate_outside": 0.0}],
    "model.backbone": "tiny-bert", "finetune.epochs": 1, "finetune.learning_rate": 2e-3, "finetune.batch_size": 16,
    "analyses.bootstrap_samples": 200, "analyses.attribution_examples": 3, "analyses.ig_steps": 8,
    "analyses.max_probe_words": 600, "analyses.attribution_methods": ["integrated_gradients", "saliency"],
    "causal.layers": [0, 2], "causal.concepts": ["position"],
}
DIAGNOSE_SETS = ["task.test_size=60", "task.train_size=60", "task.validation_size=20", "task.max_length=32",
                 "causal.enabled=false", "analyses.attribution=false", "analyses.bootstrap_samples=100",
                 "discover.enabled=false"]


def _api_run(runs: Path, name: str, over: dict):
    import probe

    over = {**over, "output_dir": str(runs), "name": name}
    return probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})


def _diagnose(runs: Path, name: str, model: Path, data: str, extra: list[str]) -> Path:
    from probe.cli import main

    sets = [f"output_dir={runs}", *DIAGNOSE_SETS]
    args = ["diagnose", str(model), "--data", data, "--reference", "tiny-bert", "--name", name, "--quiet", *extra]
    for s in sets:
        args += ["--set", s]
    code = main(args)
    if code != 0:
        raise SystemExit(f"diagnose {name}: exit {code}")
    return runs / name


def _keep_tables(run_dir: Path, out: Path, name: str) -> int:
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    tables = sorted((run_dir / "tables").glob("*.csv"))
    for t in tables:
        shutil.copyfile(t, dest / t.name)
    return len(tables)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder for the tables (one subfolder per run)")
    p.add_argument("--only", nargs="*", help="run only these (planted control discovery tagger diagnose "
                   "diagnose-tagger; the diagnose runs need planted / tagger)")
    p.add_argument("--keep", action="store_true", help="keep the run folders under OUT/runs")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="an override added to every run (e.g. analyses.precision=full on a commit that has it)")
    args = p.parse_args()
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)}
    DIAGNOSE_SETS.extend(args.sets)
    out: Path = args.out
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only or ["planted", "control", "discovery", "tagger", "diagnose", "diagnose-tagger"])
    for name, over in [*SEQUENCE_RUNS.items(), ("tagger", TAGGER_RUN)]:
        if name in wanted:
            start = time.perf_counter()
            run = _api_run(runs, name, {**over, **extra})
            n = _keep_tables(run.path, out, name)
            print(f"{name}: {n} tables, {time.perf_counter() - start:.1f} s", flush=True)
    for name, source, data, extra in (("diagnose", "planted", "bbc-news", []),
                                      ("diagnose-tagger", "tagger", "wnut16",
                                       ["--task-type", "token-classification"])):
        if name in wanted:
            start = time.perf_counter()
            run_dir = _diagnose(runs, name, runs / source / "models" / "finetuned", data, extra)
            n = _keep_tables(run_dir, out, name)
            print(f"{name}: {n} tables, {time.perf_counter() - start:.1f} s", flush=True)
    if not args.keep:
        shutil.rmtree(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
