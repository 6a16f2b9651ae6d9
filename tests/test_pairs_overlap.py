"""Known answer for a relational shortcut: a pair classifier trained where lexical overlap decides the
label is found *using* overlap; one trained where a word in the second text decides it (overlap at the
same rates in both classes) is not.

The model is minilm: tiny-bert (random, hidden 32) does not learn overlap from a few hundred pairs (40
epochs at 3e-3 left it at 0.51 validation accuracy), while minilm learns it in three epochs.
"""

import numpy as np
import pandas as pd
import pytest

from probe.config import load_config
from probe.engine import execute

VOCAB = ("apple river stone cloud garden window silver market engine forest doctor letter summer island "
         "camera bridge coffee planet rocket violin pencil castle marble desert jacket candle hammer ladder "
         "mirror orange pepper saddle tunnel wallet anchor basket cotton falcon").split()
CUES = ["tiger", "rabbit"]


def pairs(n: int, seed: int, overlap_decides: bool) -> pd.DataFrame:
    """Six words, then three; 0–3 of the three are copied from the six. ``overlap_decides``: label high iff
    at least two are; otherwise high iff the second text holds a cue animal (independent of overlap)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        w = rng.choice(VOCAB, 9, replace=False).tolist()
        shared = int(rng.integers(0, 4))
        second = w[:shared] + w[6:9 - shared]
        rng.shuffle(second)
        if overlap_decides:
            label = "high" if shared >= 2 else "low"
        else:
            label = str(rng.choice(["high", "low"]))
            if label == "high":
                second[int(rng.integers(3))] = str(rng.choice(CUES))
        rows.append({"premise": " ".join(w[:6]), "hypothesis": " ".join(second), "label": label})
    return pd.DataFrame(rows)


def _overlap_verdict(tmp_path, overlap_decides: bool) -> pd.Series:
    path = tmp_path / "pairs.csv"
    pairs(700, 0, overlap_decides).to_csv(path, index=False)
    config = load_config(None, {
        "model.backbone": "minilm", "task.type": "text-pair", "task.dataset": str(path),
        "task.text_column": "premise", "task.text_pair_column": "hypothesis", "task.max_length": 16,
        "task.train_size": 400, "task.validation_size": 50, "task.test_size": 250, "finetune.epochs": 3,
        "finetune.learning_rate": 1e-4, "finetune.batch_size": 32, "analyses.probing": False,
        "analyses.similarity": False, "analyses.attribution": False, "analyses.invariance": False,
        "causal.enabled": False, "analyses.bootstrap_samples": 200, "discover.bootstrap": 300,
        "discover.n_examples": 120, "spurious": [], "output_dir": str(tmp_path), "name": "run"})
    run = execute(config, progress=False)
    assert run.summary["partial_input"]["full"]["value"] > 0.85  # the model learnt its rule
    rel = pd.read_csv(tmp_path / "run" / "tables" / "relations.csv").set_index("feature")
    return rel.loc["pair:lexical_overlap"]


@pytest.mark.slow
def test_a_model_trained_on_overlap_uses_it(tmp_path):
    row = _overlap_verdict(tmp_path, True)
    assert row.verdict == "used shortcut" and row["class"] == "high"
    assert row.override_rate > 0.8 and row.override_control < 0.2


@pytest.mark.slow
def test_a_model_trained_on_a_word_does_not_use_overlap(tmp_path):
    row = _overlap_verdict(tmp_path, False)
    assert row.verdict not in ("used shortcut", "used, plausibly task-relevant")
