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


@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate's launcher is not installed")
def test_two_processes_match_one(tmp_path):
    launcher = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    for name in ("one", "two"):
        cfg = {**CONFIG, "name": name, "output_dir": str(tmp_path)}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    _run([sys.executable, "-m", "probe", "run", "--quiet", str(tmp_path / "one.yaml")], tmp_path)
    _run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
          "no", "--dynamo_backend", "no", "-m", "probe", "run", "--quiet", str(tmp_path / "two.yaml")], tmp_path)

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
    for table in ("behaviour", "probing", "cka"):
        a = pd.read_csv(one / "tables" / f"{table}.csv")
        b = pd.read_csv(two / "tables" / f"{table}.csv")
        keys = [c for c in a.columns if c not in ("value", "ci_low", "ci_high")]
        merged = a.merge(b, on=keys, suffixes=("_1", "_2"), validate="one_to_one")
        assert len(merged) == len(a) == len(b)
        diff = (merged.value_1 - merged.value_2).abs()
        assert diff.max() <= 0.02, merged.loc[diff.idxmax()].to_dict()
    # only the main process wrote: one report, no stray temporary folders
    assert (two / "index.html").is_file()
    assert not list(two.rglob(".*.tmp"))
