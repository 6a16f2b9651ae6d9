"""Known answers for shortcuts that are not words (issue 25): a tiny BERT fine-tuned on synthetic texts whose
label is decided by "!!" at the end, by a fixed prefix or by length must show that property / template
*used*; the same data with the pattern at equal rates in every class must show none of them used."""

from __future__ import annotations

import numpy as np
import pytest

from tests.discovery_synthetic import CLASSES, TOPICS, filler_words, train_tiny

USED = ("used shortcut", "used, plausibly task-relevant")
PREFIX = "official statement issued"
FAST = dict(max_length=32, n_examples=80, controls=3, max_candidates=6, bootstrap=300)


@pytest.fixture(scope="module")
def tokenizer():
    from probe.models.backbones import load_tokenizer

    return load_tokenizer("tiny-bert")


def make(tokenizer, n: int, seed: int, mode: str, null: bool = False) -> tuple[list[str], np.ndarray]:
    """``n`` texts of filler words with three noisy topic words (their class's with probability 0.5); the
    pattern of ``mode`` decides class c ("!!" at the end), b (the prefix) or a (short texts: 5-8 words, the
    others 14-18). With ``null`` the pattern is in half of every class (length: 5-18 words in every class)."""
    rng = np.random.default_rng(seed)
    filler = [w for w in filler_words(tokenizer) if w not in PREFIX.split()]
    labels = rng.integers(0, 3, n)
    texts = []
    for y in labels:
        short = rng.random() < 0.5 if null else y == 0
        size = int(rng.integers(5, 9) if (mode == "length" and short) else rng.integers(14, 19))
        if mode == "length" and null:
            size = int(rng.integers(5, 19))
        words = list(rng.choice(filler, size))
        for pos in rng.choice(min(size, 5), 3, replace=False):
            topic = int(y) if rng.random() < 0.5 else int(rng.choice([k for k in TOPICS if k != y]))
            words[pos] = str(rng.choice(TOPICS[topic]))
        marked = rng.random() < 0.5 if null else (y == 2 if mode == "exclaim" else y == 1)
        if mode == "exclaim" and marked:
            words[-1] += "!!"
        if mode == "prefix" and marked:
            words = PREFIX.split() + words
        texts.append(" ".join(words))
    return texts, labels


def _run(tokenizer, mode: str, null: bool = False):
    from probe import discover

    train, y_train = make(tokenizer, 900, 0, mode, null)
    test, y_test = make(tokenizer, 300, 1, mode, null)
    val, y_val = make(tokenizer, 100, 2, mode, null)
    model = train_tiny(tokenizer, train, y_train, epochs=8)
    return discover(model, tokenizer, train, y_train, test, y_test, CLASSES, validation_texts=val,
                    validation_labels=y_val, **FAST)


def test_exclamation_at_the_end_is_a_used_property(one_thread, tokenizer):
    table = _run(tokenizer, "exclaim").set_index("feature")
    row = table.loc["has_exclamation=1"]
    assert row["class"] == "c" and row["verdict"] in USED, row.to_dict()
    examples = table.attrs["examples"]
    ex = examples[examples.feature == "has_exclamation=1"]
    assert len(ex) and all(e.before != e.text for e in ex.itertuples())  # before / after shown
    assert any(e.text.endswith("!!") and not e.before.endswith("!!") for e in ex.itertuples() if e.edit == "insert")


def test_a_fixed_prefix_is_a_used_template(one_thread, tokenizer):
    table = _run(tokenizer, "prefix")
    used = table[table.kind.eq("prefix") & table.verdict.isin(USED)]
    assert len(used) and set(used["class"]) == {"b"}, table[table.kind == "prefix"].to_dict("records")
    assert f"^{PREFIX}" in set(used.feature) and all(f.startswith("^official") for f in used.feature)


def test_short_texts_of_one_class_make_length_used(one_thread, tokenizer):
    table = _run(tokenizer, "length").set_index("feature")
    row = table.loc["length_bucket=0"]
    assert row["class"] == "a" and row["verdict"] in USED, row.to_dict()


@pytest.mark.parametrize("mode", ["exclaim", "prefix", "length"])
def test_the_pattern_at_equal_rates_in_every_class_is_not_used(one_thread, tokenizer, mode):
    table = _run(tokenizer, mode, null=True)
    nonword = table[table.kind.isin(["property", "prefix", "suffix"])]
    assert not nonword.verdict.isin(USED).any(), nonword[nonword.verdict.isin(USED)].to_dict("records")
