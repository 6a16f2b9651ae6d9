"""`accelerate launch` with 2 CPU processes (gloo) gives the same tables as one process (issue 7).

Data parallelism shards each global batch and scales the summed loss so that DDP's averaged
gradient equals the single-process mean-loss gradient; with dropout off, both runs take the same
optimizer steps up to floating-point summation order. Extraction is sharded and gathered in order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

CONFIG = {
    "model": {"backbone": "tiny-bert"},
    "task": {"train_size": 600, "validation_size": 50, "test_size": 120, "max_length": 32},
    "spurious": [{"token": "zebra", "target_class": "business", "rate_in_class": 1.0, "rate_outside": 0.0}],
    # dropout off: the two processes would draw different dropout masks than one process does
    "finetune": {"epochs": 6, "batch_size": 32, "learning_rate": 2e-3, "dropout": 0.0},
    "analyses": {"bootstrap_samples": 200, "attribution": False, "invariance": False, "mdl": False},
    "causal": {"enabled": False},
}


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


TAGGER = {
    "model": {"backbone": "tiny-bert"},
    "task": {"type": "token-classification", "dataset": "wnut16", "train_size": 300, "validation_size": 40,
             "test_size": 100, "max_length": 48},
    "spurious": [{"token": "zebra", "target_class": "person"}],
    "finetune": {"epochs": 2, "batch_size": 16, "learning_rate": 2e-3, "dropout": 0.0},
    "analyses": {"bootstrap_samples": 200, "attribution": False, "max_probe_words": 800, "probe_C": 1.0,
                 "control_tasks": False},
    "causal": {"enabled": False},
}
LAUNCHER = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
needs_launcher = pytest.mark.skipif(not Path(LAUNCHER).exists(), reason="accelerate's launcher is not installed")


def _one_and_two(tmp_path, config: dict) -> None:
    """Run ``config`` as ``one`` (a plain process) and as ``two`` (accelerate launch, 2 CPU processes)."""
    for name in ("one", "two"):
        cfg = {**config, "name": name, "output_dir": str(tmp_path)}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    _run([sys.executable, "-m", "probe", "run", "--quiet", str(tmp_path / "one.yaml")], tmp_path)
    _run([LAUNCHER, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
          "no", "--dynamo_backend", "no", "-m", "probe", "run", "--quiet", str(tmp_path / "two.yaml")], tmp_path)


def _tables_agree(one: Path, two: Path, names: tuple[str, ...], tolerance: float = 0.02) -> None:
    for table in names:
        a = pd.read_csv(one / "tables" / f"{table}.csv")
        b = pd.read_csv(two / "tables" / f"{table}.csv")
        keys = [c for c in a.columns if c not in ("value", "ci_low", "ci_high")]
        merged = a.merge(b, on=keys, suffixes=("_1", "_2"), validate="one_to_one")
        assert len(merged) == len(a) == len(b), table
        diff = (merged.value_1 - merged.value_2).abs()
        assert diff.max() <= tolerance, merged.loc[diff.idxmax()].to_dict()


@needs_launcher
def test_two_processes_match_one(tmp_path):
    _one_and_two(tmp_path, CONFIG)

    one, two = tmp_path / "one", tmp_path / "two"
    s1, s2 = (yaml.safe_load((d / "summary.json").read_text()) for d in (one, two))
    assert s1["status"] == s2["status"] == "complete"
    assert s2["processes"] == 2 and "processes" not in s1
    # the tiny model must learn something (here the planted shortcut) for the comparison to mean much
    assert s1["s_only_error"]["value"] > 0.5
    # the training curves agree: same steps, same data, same losses up to summation order
    t1, t2 = (yaml.safe_load((d / "models" / "finetuned" / "training.json").read_text()) for d in (one, two))
    for e1, e2 in zip(t1["epochs"], t2["epochs"], strict=True):
        assert e2["train_loss"] == pytest.approx(e1["train_loss"], abs=1e-3)
        assert e2["validation_accuracy"] == pytest.approx(e1["validation_accuracy"], abs=0.02)
    assert t2["tokens"] == t1["tokens"]  # every training token counted once over both processes
    _tables_agree(one, two, ("behaviour", "probing", "cka"))
    # only the main process wrote: one report, no stray temporary folders
    assert (two / "index.html").is_file()
    assert not list(two.rglob(".*.tmp"))


@needs_launcher
def test_tagger_two_processes_match_one(tmp_path):
    """Taggers: fine-tuning (loss over labelled words, summed and scaled per global batch) and word
    extraction (sentences sharded, word indices shifted back) in 2 processes give one process's tables."""
    _one_and_two(tmp_path, TAGGER)
    one, two = tmp_path / "one", tmp_path / "two"
    s2 = yaml.safe_load((two / "summary.json").read_text())
    assert s2["status"] == "complete"
    w1, w2 = (np.load(next((d / "cache").glob("words-finetuned-*.npz"))) for d in (one, two))
    np.testing.assert_array_equal(w1["word_index"], w2["word_index"])
    np.testing.assert_allclose(w1["activations"], w2["activations"], atol=1e-3)
    _tables_agree(one, two, ("entities", "behaviour", "probing", "cka"))
