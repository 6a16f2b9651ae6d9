import numpy as np
import pytest

from probe.data.properties import available_properties, bucket_edges, compute_properties, register_property


def test_social_flags_and_digits_on_a_hand_made_text():
    labels = compute_properties(["@bob see https://x.co #tag 42", "plain words only"], skip_constant=False)
    for name in ("has_mention", "has_url", "has_hashtag", "contains_digit"):
        assert labels[name].tolist() == [1, 0], name


@pytest.mark.parametrize("text, mention, url, hashtag, digit", [
    ("mail me at bob@example.com", 0, 0, 0, 0),
    ("visit www.bbc.co.uk today", 0, 1, 0, 0),
    ("we are #1", 0, 0, 0, 1),  # a number is not a hashtag
    ("RT @USER: wow", 1, 0, 0, 0),
    ("C# and F# rock; #python", 0, 0, 1, 0),
])
def test_flags_avoid_obvious_false_positives(text, mention, url, hashtag, digit):
    labels = compute_properties([text], ["has_mention", "has_url", "has_hashtag", "contains_digit"], skip_constant=False)
    assert [labels[k][0] for k in ("has_mention", "has_url", "has_hashtag", "contains_digit")] == [mention, url, hashtag, digit]


def _varied_texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "Beta", "GAMMA", "delta", "Epsilon", "zeta", "ETA", "theta"]
    out = []
    for _ in range(n):
        k = int(rng.integers(3, 40))
        toks = [str(w) for w in rng.choice(words, size=k)]
        out.append(" ".join(t + ("," if rng.random() < rng.random() * 0.5 else "") for t in toks) + ".")
    return out


@pytest.mark.parametrize("name", ["length_bucket", "casing_ratio_bucket", "punctuation_density_bucket"])
def test_buckets_are_roughly_balanced_on_varied_texts(name):
    y = compute_properties(_varied_texts(), [name])[name]
    counts = np.bincount(y, minlength=3)
    assert len(counts) == 3
    assert counts.min() >= 0.2 * len(y) and counts.max() <= 0.46 * len(y)


def test_length_buckets_are_ordered_by_word_count():
    texts = _varied_texts()
    y = compute_properties(texts, ["length_bucket"])["length_bucket"]
    lengths = np.array([len(t.split()) for t in texts])
    assert lengths[y == 0].max() < lengths[y == 1].min() and lengths[y == 1].max() < lengths[y == 2].min()


def test_bucket_edges_keep_ties_together_and_avoid_empty_buckets():
    values = np.array([0.0] * 50 + [1.0] * 10 + [2.0] * 5 + [3.0] * 5)  # a mass of ties at 0
    labels = np.searchsorted(bucket_edges(values), values, side="right")
    counts = np.bincount(labels)
    assert len(counts) == 3 and counts.min() > 0 and counts[0] == 50
    for v in np.unique(values):
        assert len(set(labels[values == v])) == 1
    two = np.array([1.0, 1.0, 2.0, 2.0, 2.0])  # fewer distinct values than buckets
    assert len(np.unique(np.searchsorted(bucket_edges(two), two, side="right"))) == 2


def test_constant_properties_are_skipped_with_a_reason():
    texts = ["all lower case here", "another plain one", "and a third text"]
    labels, skipped = compute_properties(texts, return_skipped=True)
    for name in ("has_mention", "has_url", "has_hashtag", "contains_digit", "casing_ratio_bucket"):
        assert name in skipped and "constant" in skipped[name]
        assert name not in labels
    assert "length_bucket" in labels
    assert all(v.dtype.kind == "i" and len(v) == 3 for v in labels.values())


def test_min_count_skips_rare_labels():
    texts = ["a 1"] + ["b"] * 9
    labels, skipped = compute_properties(texts, ["contains_digit"], min_count=2, return_skipped=True)
    assert labels == {} and "rarest" in skipped["contains_digit"]


def test_registry_lists_properties_and_rejects_unknown_names():
    specs = available_properties()
    assert {"length_bucket", "casing_ratio_bucket", "contains_digit", "punctuation_density_bucket",
            "has_mention", "has_url", "has_hashtag"} <= set(specs)
    assert specs["has_mention"].applies_to == "social" and specs["length_bucket"].applies_to == "any"
    assert "has_hashtag" not in available_properties("news")
    with pytest.raises(ValueError, match="allowed"):
        compute_properties(["x"], ["no_such_property"])
    with pytest.raises(ValueError, match="already registered"):
        register_property("length_bucket", "dup")(lambda texts: np.zeros(len(texts), dtype=int))
