"""Shared fixtures. Tests never touch the network: hub access is switched off here."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

TINY = {
    "model.backbone": "tiny-bert",
    "task.train_size": 150,
    "task.validation_size": 50,
    "task.test_size": 120,
    "task.max_length": 32,
    "finetune.epochs": 1,
    "finetune.batch_size": 16,
    "analyses.bootstrap_samples": 200,
    "causal.enabled": False,  # tests/test_causal.py turns it on
}


def tiny_overrides(tmp_path, name: str = "tiny", **more) -> dict:
    return {**TINY, "output_dir": str(tmp_path), "name": name, **more}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished tiny-bert run on bbc-news, shared by the tests that only read it."""
    import probe

    out = tmp_path_factory.mktemp("runs")
    return probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in tiny_overrides(out).items()})


@pytest.fixture(scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they save, worse on a shared CPU
    yield
    torch.set_num_threads(before)
