"""Precision budgets on a tagger (docs/design.md §5, "Precision budgets"): the same tiny tagger run with
``analyses.precision: budget`` and ``full``. The budget attributes and reads held-out span pairs only until
the intervals are narrow enough, says in ``tables/budgets.csv`` what each measurement used and why it
stopped, prints no convergence warning, and its headline numbers lie in the precise run's intervals."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import probe

RUN = {
    "task.type": "token-classification", "task.dataset": "wnut16", "task.max_length": 48,
    "task.train_size": 400, "task.validation_size": 40, "task.test_size": 200,
    "spurious": [{"token": "zebra", "target_class": "person", "rate_in_class": 1.0, "rate_outside": 0.0}],
    "model.backbone": "tiny-bert", "finetune.epochs": 2, "finetune.learning_rate": 2e-3, "finetune.batch_size": 16,
    "analyses.bootstrap_samples": 200, "analyses.attribution_examples": 12, "analyses.ig_steps": 32,
    "analyses.attribution_methods": ["integrated_gradients", "saliency", "occlusion"], "analyses.attribution_batch": 4,
    "analyses.probing": False, "analyses.similarity": False,
    "causal.layers": [0, 2], "causal.concepts": ["position"], "causal.batch": 8,
}
ATTRIBUTION_KEYS = ["partition", "method", "metric"]
ABLATION_KEYS = ["intervention", "layer", "head", "metric"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("tagger-budget")
    got, caught = {}, {}
    for precision in ("full", "budget"):
        over = {**RUN, "analyses.precision": precision, "output_dir": str(out), "name": precision}
        with warnings.catch_warnings(record=True) as caught[precision]:
            warnings.simplefilter("always")
            got[precision] = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    return got, caught


def _merged(full: pd.DataFrame, budget: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    def keyed(df):
        return df.assign(**{k: df[k].astype(str) for k in keys}).set_index(keys)

    return keyed(budget).join(keyed(full)[["value", "ci_low", "ci_high", "n"]].add_suffix("_full"), how="inner")


def test_budgets_say_what_each_measurement_used_and_why_it_stopped(runs):
    (got, caught) = runs
    assert "budgets" not in got["full"].tables  # precision: full measures everything, as before budgets
    budgets = got["budget"].table("budgets")
    assert {"attribution", "occlusion", "ablation", "head scan"} <= set(budgets.analysis)
    assert (budgets.examples <= budgets.cap).all() and budgets.stopped.str.len().gt(0).all()
    attribution = budgets[budgets.analysis == "attribution"]
    # the loose default half-width (0.1) is met by the first batch of 4 of the 12 examples the precise mode uses
    assert (attribution.cap == 12).all() and (attribution.examples == 4).all()
    assert attribution.stopped.str.startswith("half-width").all() and (attribution.width <= 0.1).all()
    assert attribution.steps.str.startswith("32x").all()  # analyses.ig_steps_start, doubled only where needed
    occlusion = budgets[budgets.analysis == "occlusion"].steps.str.extract(r"(\d+) of (\d+) words").astype(int)
    assert (occlusion[0] < occlusion[1]).all()  # ranked words + a control sample, fewer than every word
    ablation = budgets[budgets.analysis == "ablation"].iloc[0]
    assert ablation.examples < ablation.cap and "by the interval" in ablation.stopped
    assert "table-budgets" in (got["budget"].path / "index.html").read_text()
    # the default prints no convergence warning; the precise run at a fixed 32 steps may
    assert not [w for w in caught["budget"] if "convergence delta" in str(w.message)]


def test_budget_uses_no_more_examples_than_full(runs):
    got, _ = runs
    att = _merged(got["full"].table("attribution"), got["budget"].table("attribution"), ATTRIBUTION_KEYS)
    assert len(att) == len(got["full"].table("attribution")) and (att.n <= att.n_full).all()
    assert (att.n < att.n_full).any()
    abl = _merged(got["full"].table("ablation"), got["budget"].table("ablation"), ABLATION_KEYS)
    assert len(abl) and (abl.n <= abl.n_full).all() and (abl.n < abl.n_full).any()


def test_budget_headline_numbers_lie_in_the_precise_intervals(runs):
    got, _ = runs
    att = _merged(got["full"].table("attribution"), got["budget"].table("attribution"), ATTRIBUTION_KEYS)
    share = att.xs(("integrated_gradients", "spurious_attribution_share"), level=("method", "metric"))
    assert len(share) == 2  # conflicting and aligned
    assert ((share.value >= share.ci_low_full) & (share.value <= share.ci_high_full)).all(), share
    # every method's interval overlaps the precise one (occlusion's words outside the ranked ones are imputed)
    shares = att.xs("spurious_attribution_share", level="metric")
    assert ((shares.ci_low <= shares.ci_high_full) & (shares.ci_high >= shares.ci_low_full)).all(), shares
    abl = _merged(got["full"].table("ablation"), got["budget"].table("ablation"), ABLATION_KEYS)
    acc = abl.xs("conflicting_accuracy", level="metric")
    assert len(acc) >= 5  # unedited, swaps and re-initialisation of two layers, the heads both runs rank on top
    assert np.all((acc.value >= acc.ci_low_full - 1e-12) & (acc.value <= acc.ci_high_full + 1e-12)), acc
    # erasure is not budgeted (its difference rows pair conditions on the same spans): identical tables
    pd.testing.assert_frame_equal(got["full"].table("erasure"), got["budget"].table("erasure"))
