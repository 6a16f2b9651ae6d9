"""Discovery (issue 15): known answers on a synthetic task, the statistics by hand, config and report.

A tiny BERT is fine-tuned (a plain loop, single-threaded, a few seconds) on a task with three planted
words nobody tells discovery about (:mod:`tests.discovery_synthetic`): "marble" in every class-a example,
"violin" in 60 % of class b (and 5 % of the others), "harbor" at the end of class-c examples, always beyond
``max_length`` so the model never reads it. The same pipeline on a model trained on shuffled labels must
find nothing that passes the false-discovery control.
"""

from __future__ import annotations

import os
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_overrides
from tests.discovery_synthetic import CLASSES, MAX_LENGTH, STRONG, TRUNCATED, WEAK, make_texts, train_tiny

USED = ("used shortcut", "used, plausibly task-relevant")
FAST = dict(max_length=MAX_LENGTH, n_examples=100, controls=5, max_candidates=10, bootstrap=300, properties=False)


@pytest.fixture(scope="module")
def tokenizer():
    from probe.models.backbones import load_tokenizer

    return load_tokenizer("tiny-bert")


@pytest.fixture(scope="module")
def synthetic(tokenizer):
    train, y_train = make_texts(tokenizer, 900, 0, planted=True)
    test, y_test = make_texts(tokenizer, 400, 1, planted=False)
    return train, y_train, test, y_test


def _discover(model, tokenizer, synthetic, labels=None):
    from probe import discover
    from probe.models.backbones import load_encoder

    train, y_train, test, y_test = synthetic
    return discover(model, tokenizer, train, y_train if labels is None else labels, test, y_test, CLASSES,
                    reference=load_encoder("tiny-bert", 0), **FAST)


@pytest.fixture(scope="module")
def found(one_thread, tokenizer, synthetic):
    model = train_tiny(tokenizer, synthetic[0], synthetic[1])
    return _discover(model, tokenizer, synthetic).set_index("feature")


def test_strongest_planted_word_ranks_first_and_is_a_used_shortcut(found):
    assert found.index[0] == STRONG, found.head()
    assert found.loc[STRONG, "verdict"] == "used shortcut"
    assert found.loc[STRONG, "class"] == "a" and found.loc[STRONG, "override_effect_ci_low"] > 0.5


def test_two_planted_words_come_in_the_order_of_their_strength(found):
    assert found.loc[WEAK, "verdict"] == "used shortcut" and found.loc[WEAK, "class"] == "b"
    assert found.loc[STRONG, "rank"] < found.loc[WEAK, "rank"]
    assert found.loc[STRONG, "override_effect"] > found.loc[WEAK, "override_effect"]


def test_a_word_the_model_never_reads_is_correlated_but_not_used(found):
    row = found.loc[TRUNCATED]
    assert row["z"] > 10 and row["class"] == "c"  # the strongest association in the data but one
    assert row["verdict"] == "correlated but not used", row
    assert row["n_delete"] >= 20 and row["deletion_effect_ci_high"] < 0.1


def test_summary_records_carry_every_key_with_the_table_numbers(found):
    from probe.discovery.verdicts import SUMMARY_KEYS, discovered

    records = {r["feature"]: r for r in discovered(found.reset_index())}
    assert STRONG in records and WEAK in records and TRUNCATED not in records
    r = records[STRONG]
    assert set(SUMMARY_KEYS) <= set(r) and r["verdict"] == "used shortcut" and r["sentence"]
    row = found.loc[STRONG]
    assert r["override_rate"] == pytest.approx(row["override_rate"])
    assert r["override_ci_low"] == pytest.approx(row["override_rate_ci_low"]) and r["override_ci_high"] is not None
    assert r["q_value"] == pytest.approx(row["q_value"]) and r["count"] == row["count"]


def test_tables_carry_examples_and_seconds(found):
    ex = found.attrs["examples"]
    assert set(ex.columns) >= {"feature", "class", "edit", "text", "p_before", "p_after"}
    marble = ex[(ex.feature == STRONG) & (ex.edit == "insert")]
    assert len(marble) and all(STRONG in t.split() for t in marble.text)
    assert found.attrs["seconds"] > 0


def test_shuffled_labels_nothing_passes_the_false_discovery_control(one_thread, tokenizer, synthetic):
    shuffled = np.random.default_rng(5).permutation(synthetic[1])
    model = train_tiny(tokenizer, synthetic[0], shuffled)
    table = _discover(model, tokenizer, synthetic, labels=shuffled)
    assert not table.verdict.isin(USED).any(), table[table.verdict.isin(USED)]
    assert table.n_insert.notna().sum() > 0  # candidates were tested, not skipped


# --- the statistics by hand ---------------------------------------------------------------------------


def test_z_statistic_and_pmi_against_a_hand_computation():
    from probe.discovery.candidates import word_association

    # "cue" in 10 texts, 8 of class 1; class 1 is half the data: z = (0.8 - 0.5) / sqrt(0.25 / 10)
    texts = ["cue filler"] * 8 + ["cue other"] * 2 + ["filler"] * 2 + ["other"] * 8
    labels = np.array([1] * 8 + [0] * 2 + [1] * 2 + [0] * 8)
    table = word_association(texts, labels, ["x", "y"], min_count=5).set_index(["feature", "class"])
    row = table.loc[("cue", "y")]
    assert row["count"] == 10 and row["class_count"] == 8
    assert row["z"] == pytest.approx(0.3 / np.sqrt(0.25 / 10))
    assert row["pmi"] == pytest.approx(np.log(0.8 / 0.5))
    assert table.loc[("cue", "x"), "z"] == pytest.approx(-0.3 / np.sqrt(0.25 / 10))
    assert ("cue filler", "y") in table.index  # bigrams, in 8 texts


def test_bonferroni_threshold_counts_every_pair():
    from scipy.stats import norm

    from probe.discovery.candidates import mark_significant

    t = mark_significant(pd.DataFrame({"z": [5.0, 3.0, 1.0, 0.0]}), alpha=0.01)
    assert t.z_threshold.iloc[0] == pytest.approx(norm.isf(0.01 / 4))
    assert t.significant.tolist() == [True, True, False, False]


def test_benjamini_hochberg_by_hand_and_nan():
    from probe.discovery.causal_test import benjamini_hochberg

    p = np.array([0.01, 0.04, 0.03, 0.5, np.nan])
    # step-up: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.0533, 0.0533, 0.5 (monotone from the top)
    q = benjamini_hochberg(p)
    assert q[:4] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])  # 0.03: min(0.03·4/2, 0.04·4/3)
    assert np.isnan(q[4])


def test_paired_bootstrap_covers_a_known_effect_and_the_sign_flip_test_sees_it():
    from probe.analyses.stats import bootstrap_mean
    from probe.discovery.causal_test import sign_flip_pvalue

    rng = np.random.default_rng(0)
    diff = 0.3 + rng.normal(0, 0.5, 200)
    value, lo, hi = bootstrap_mean(diff, 2000, np.random.default_rng(1))
    assert lo < 0.3 < hi and hi - lo < 0.2
    assert sign_flip_pvalue(diff, 999, np.random.default_rng(2)) == pytest.approx(1 / 1000)
    assert sign_flip_pvalue(np.zeros(50), 999, np.random.default_rng(2)) == 1.0
    assert sign_flip_pvalue(-diff, 999, np.random.default_rng(2)) > 0.9


def test_edits_find_words_and_bigrams_through_case_and_punctuation():
    from probe.discovery.causal_test import contains, delete_feature

    text = "The Prime Minister, said: prime minister!"
    assert contains(text, "prime minister") and contains(text, "said") and not contains(text, "the minister")
    out, gone = delete_feature(text, "prime minister")
    assert out == "The said:" and gone == [1, 2, 4, 5]


# --- config, run stage and report ---------------------------------------------------------------------


@pytest.mark.parametrize("setting, message", [
    ("discover.foo=1", "discover.foo: unknown key"),
    ("discover.alpha=2", "discover.alpha: got 2"),
    ("discover.enabled=maybe", "discover.enabled"),
])
def test_bad_discover_config_is_one_line(tmp_path, setting, message):
    import os

    root = str(Path(__file__).resolve().parents[1])  # this checkout's probe, whatever is installed
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": root}
    res = subprocess.run([sys.executable, "-m", "probe", "run", "--set", setting, "--set", "output_dir=out"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_run_writes_discovery_and_the_report_section_after_the_verdict_cards(tmp_path, one_thread):
    import probe
    from probe.report.render import render_report

    over = tiny_overrides(tmp_path, "disc", **{"analyses.attribution": False, "analyses.probing": False,
                                               "analyses.similarity": False, "analyses.invariance": False,
                                               "discover.hide_planted": True, "discover.n_examples": 30,
                                               "discover.max_candidates": 4, "discover.controls": 2,
                                               "discover.bootstrap": 100, "discover.min_count": 10})
    run = probe.run(None, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    table = run.table("discovery")
    assert {"feature", "kind", "class", "source", "count", "z", "pmi", "amplification", "override_rate",
            "deletion_drop", "p_value", "q_value", "verdict", "planted"} <= set(table.columns)
    assert table.loc[table.feature == "zebra", "planted"].all()  # flagged for the reader, hidden from ranking
    assert isinstance(run.summary["discovered"], list)
    assert "discovery" in run.summary["timings"]
    ex_path = run.path / "tables" / "discovery_examples.csv"
    ex = pd.read_csv(ex_path)
    ex.loc[len(ex)] = {"seed": 0, "feature": "zebra", "class": "business", "edit": "insert",
                       "text": "<script>alert(1)</script>", "p_before": 0.1, "p_after": 0.9}
    ex["before"] = ex["before"].astype(object)  # empty for word findings (no before / after)
    ex.loc[len(ex)] = {"seed": 0, "feature": "has_exclamation=1", "class": "sport", "edit": "insert",
                       "text": "<i>goal</i>!!", "before": "<i>goal</i>", "p_before": 0.1, "p_after": 0.9}
    ex.to_csv(ex_path, index=False)
    summary = {**run.summary, "discovered": [{"feature": "zebra", "class": "business", "verdict": "used shortcut",
                                              "sentence": "s", "planted": True},
                                             {"feature": "has_exclamation=1", "class": "sport",
                                              "verdict": "used shortcut", "sentence": "p", "planted": False}]}
    (run.path / "summary.json").write_text(json.dumps(summary))
    html = render_report(run.path).read_text()
    assert html.index('id="shortcuts-found"') < html.index('id="task-quality"')
    assert html.index("Does the fine-tuned model rely") < html.index('id="shortcuts-found"')
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    # a property finding shows its text before and after the edit, escaped (issue 25)
    assert "before “&lt;i&gt;goal&lt;/i&gt;”" in html and "after “&lt;i&gt;goal&lt;/i&gt;!!”" in html


def test_marker_statistic_by_hand():
    from probe.discovery.candidates import marker_counts

    # "mr" is followed by a person start 3 times out of 4; of the 10 words that have a next word, 4 are
    # followed by one: z = (0.75 - 0.4) / sqrt(0.4 * 0.6 / 4)
    sentences = [["mr", "smith", "said", "hi"], ["mr", "jones", "and", "mr", "lee"], ["mr", "x", "went", "home"]]
    starts = [[None, "person", None, None], [None, "person", None, None, "person"], [None, None, None, "person"]]
    table = marker_counts(sentences, starts, ["person"], min_count=2).set_index("feature")
    row = table.loc["mr"]
    assert row["count"] == 4 and row["class_count"] == 3 and row["kind"] == "marker"
    assert row["p0"] == pytest.approx(4 / 10)  # 10 words have a next word
    assert row["z"] == pytest.approx((0.75 - 0.4) / np.sqrt(0.4 * 0.6 / 4))


def test_word_association_rows_do_not_depend_on_string_hashing():
    """Rows come out in sorted order, so ties between candidates rank the same in every process
    (Python salts string hashes per process; a set's order is not an order)."""
    code = ("from probe.discovery.candidates import word_association; import numpy as np; "
            "t = ['the cat sat', 'a dog ran', 'the dog sat', 'a cat ran'] * 5; "
            "print(word_association(t, np.array([0, 1, 0, 1] * 5), ['x', 'y'], 2).feature.tolist())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3)}
    assert len(outs) == 1
