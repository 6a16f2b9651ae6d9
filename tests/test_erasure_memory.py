"""Memory of the erasure sweep (issue 27): LEACE statistics accumulated chunk by chunk equal one update
over every row; an erasure sweep that extracts one layer at a time (over its memory budget) writes the
same table as one holding every layer; token activations stay in a half compute dtype when the model
computes in one, and an eraser fits on them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import probe.causal.erasure as erasure_module
from probe.analyses.behaviour import metric_values
from probe.causal.erasure import fit_leace
from probe.causal.experiment import erasure_table
from probe.causal.token_activations import token_activations
from probe.config.measurement import CausalConfig
from probe.models.backbones import build_classifier, load_tokenizer

TEXTS = ["the zebra ran home fast today", "a cat sat on the mat", "profits rose at the zebra company",
         "rain fell all day long", "zebra zebra and more words here", "the market closed higher on friday",
         "a long quiet walk by the river", "zebra shares fell sharply", "he read the book twice",
         "the zebra ate grass"]


def test_chunked_leace_statistics_equal_one_update(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 16)).astype(np.float32)
    z = (X[:, 0] + 0.5 * rng.standard_normal(500) > 0).astype(int)
    whole = fit_leace(X, z)
    monkeypatch.setattr(erasure_module, "LEACE_CHUNK", 64)  # 8 updates
    chunked = fit_leace(torch.from_numpy(X), z)
    assert chunked.rank == whole.rank == 1
    np.testing.assert_allclose(chunked.P.numpy(), whole.P.numpy(), atol=1e-9)
    np.testing.assert_allclose(chunked.bias.numpy(), whole.bias.numpy(), atol=1e-9)


class _Predictor:
    """A fixed predictor: the sweep's behaviour rows do not depend on how activations were held."""

    features = ["token:zebra"]

    def __call__(self, features=None):
        pred = np.array([0, 1, 0, 1, 1, 0])
        return {f: metric_values(pred, 1 - pred, np.array([0, 0, 1, 1, 0, 1]), 1) for f in (features or self.features)}


@pytest.fixture(scope="module")
def tiny():
    return build_classifier("tiny-bert", ["a", "b"], seed=0).eval(), load_tokenizer("tiny-bert")


def test_streamed_layers_give_the_same_erasure_table(tiny):
    model, tokenizer = tiny
    base = CausalConfig(layers=[0, 1, 2], concepts=["position", "document"]).model_dump()
    tables = []
    for budget in (1024, 0):  # 0 MiB: every layer extracted on its own
        cfg = SimpleNamespace(**{**base, "activation_memory_mb": budget})
        tables.append(erasure_table(model, tokenizer, TEXTS[:6], TEXTS[4:], _Predictor(), "token:zebra", "zebra", cfg,
                                    32, 4, "cpu", 100, 0, progress=False))
    assert len(tables[0]) > 20
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_token_activations_keep_a_half_compute_dtype(tiny):
    model, tokenizer = tiny
    half = build_classifier("tiny-bert", ["a", "b"], seed=0).eval().to(torch.bfloat16)
    full = token_activations(model, tokenizer, TEXTS, [1, 2], 32, 4, "cpu", token="zebra")
    kept = token_activations(half, tokenizer, TEXTS, [1, 2], 32, 4, "cpu", token="zebra")
    assert isinstance(full.layers[2], np.ndarray) and full.layers[2].dtype == np.float32
    assert kept.layers[2].dtype == torch.bfloat16 and kept.layers[2].shape == full.layers[2].shape
    np.testing.assert_allclose(kept.layers[2].float().numpy(), full.layers[2], atol=0.1, rtol=0.05)
    eraser = fit_leace(kept.layers[2], kept.has_token)
    assert eraser.rank == 1 and eraser(kept.layers[2]).dtype == torch.bfloat16
