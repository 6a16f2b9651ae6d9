"""Pair data: tables of two texts from CSV / JSONL / datasets sources, group-respecting splits, and the
built-in next-sentence task bbc-news-pairs (probe.tasks.pairs.data, probe.tasks.pairs.news)."""

import json

import numpy as np
import pandas as pd
import pytest

from probe.errors import ProbeError
from probe.tasks.pairs.data import group_splits, load_pair_table
from probe.tasks.pairs.news import load_news_pairs, news_pairs, sentences

ROWS = [("A man plays a guitar.", "A man plays music.", "entailment"),
        ("A man plays a guitar.", "Nobody plays.", "contradiction"),
        ("Two dogs run in a field.", "Animals are outside.", "entailment"),
        ("Two dogs run in a field.", "The cats sleep.", "contradiction"),
        ("A  woman\treads.", "  Someone   reads. ", "entailment")]


def _csv(tmp_path, rows=ROWS, name="nli.csv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["premise", "hypothesis", "label"]).to_csv(path, index=False)
    return str(path)


def test_pairs_from_a_csv_keep_both_texts_normalised_and_group_by_first_text(tmp_path):
    t = load_pair_table(_csv(tmp_path), "premise", "hypothesis", "label")
    assert t.classes == ["contradiction", "entailment"]
    assert t.pairs[4] == ("A woman reads.", "Someone reads.")
    assert t.labels.tolist() == [1, 0, 1, 0, 1]
    assert t.groups.tolist() == [0, 0, 1, 1, 2]
    assert t.topic_match() is None  # a file does not say where its texts come from


def test_pairs_from_jsonl_and_from_a_hf_dataset(tmp_path, monkeypatch):
    import datasets

    path = tmp_path / "nli.jsonl"
    path.write_text("\n".join(json.dumps(dict(zip(["premise", "hypothesis", "label"], r))) for r in ROWS))
    assert load_pair_table(str(path), "premise", "hypothesis", "label").pairs == \
        load_pair_table(_csv(tmp_path), "premise", "hypothesis", "label").pairs
    names = ["entailment", "neutral", "contradiction"]
    ds = datasets.Dataset.from_dict(
        {"premise": [r[0] for r in ROWS], "hypothesis": [r[1] for r in ROWS],
         "label": [names.index(r[2]) for r in ROWS]},
        features=datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=names)}))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, cfg=None: datasets.DatasetDict({"train": ds}))
    t = load_pair_table("hf:nyu-mll/multi_nli", "premise", "hypothesis", "label")
    assert t.classes == ["contradiction", "entailment"] and t.labels.tolist() == [1, 0, 1, 0, 1]


def _refusal(tmp_path, rows=ROWS, pair="hypothesis", **kw) -> str:
    with pytest.raises(ProbeError) as e:
        load_pair_table(_csv(tmp_path, rows), "premise", pair, "label", **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_pair_data_is_refused_in_one_line(tmp_path):
    assert _refusal(tmp_path, pair="claim").startswith("task.text_pair_column: column 'claim' is not in")
    assert "premise, hypothesis, label" in _refusal(tmp_path, pair="claim")
    assert _refusal(tmp_path, pair=None).startswith("task.text_pair_column: is not set")
    empty = [(a, "", y) for a, _, y in ROWS]
    assert "holds only empty or missing texts" in _refusal(tmp_path, empty)
    one_empty = ROWS[:4] + [(ROWS[4][0], " ", ROWS[4][2])]
    msg = _refusal(tmp_path, one_empty, max_dropped_share=0.1)
    assert "1 of the 5 rows" in msg and "empty or missing second text 1" in msg
    notes: list[str] = []
    t = load_pair_table(_csv(tmp_path, one_empty), "premise", "hypothesis", "label", max_dropped_share=0.5,
                        notes=notes)
    assert len(t) == 4 and "empty or missing second text 1" in notes[0]
    numbers = [(a, 7, y) for a, _, y in ROWS]
    assert _refusal(tmp_path, numbers).startswith("task.text_pair_column: column 'hypothesis' holds non-text values")
    assert "single class" in _refusal(tmp_path, [(a, b, "x") for a, b, _ in ROWS])


def test_group_splits_never_divide_a_group_and_are_exact_for_single_pairs():
    groups = np.repeat(np.arange(50), 3)
    tr, va, te = group_splits(groups, (90, 24, 30), seed=3)
    for a, b in ((tr, va), (tr, te), (va, te)):
        assert not set(groups[a]) & set(groups[b])
    assert len(te) == 30 and len(va) == 24 and len(tr) == 90
    tr, va, te = group_splits(np.arange(100), (60, 10, 20), seed=0)
    assert (len(tr), len(va), len(te)) == (60, 10, 20) and not set(tr) & set(te)
    assert [x.tolist() for x in group_splits(np.arange(100), (60, 10, 20), seed=0)] == [tr.tolist(), va.tolist(),
                                                                                       te.tolist()]


def test_sentences_skip_the_title_and_split_at_sentence_ends():
    article = "A title line\n\nFirst one is here. Second one \"is\" there! Third? \n\nMr. X. Fourth one comes in here."
    assert sentences(article) == ["First one is here.", "Second one \"is\" there!", "Fourth one comes in here."]


def _articles(n_per_topic=12, topics=3):
    texts, ids = [], []
    for t in range(topics):
        for k in range(n_per_topic):
            body = " ".join(f"Topic{t} article{k} sentence{s} has words." for s in range(6))
            texts.append(f"Title {t} {k}\n\n{body}")
            ids.append(t)
    return texts, np.array(ids)


@pytest.mark.parametrize("negatives", ["random", "same-topic"])
def test_next_sentence_pairs_are_what_they_say(negatives):
    texts, topics = _articles()
    splits = news_pairs(texts, topics, ["a", "b", "c"], (18, 6, 9), seed=1, negatives=negatives)
    used = []
    for split, size in zip(splits, (18, 6, 9)):
        assert len(split) == size and abs(int(split.labels.sum()) - size / 2) <= 0.5  # balanced
        for (a, b), y, (i, j), s1, s2 in zip(split.pairs, split.labels, split.articles, split.first_source,
                                             split.second_source):
            art_a, art_b = a.split()[1], b.split()[1]
            assert a.split()[2] == "sentence0" and "sentence1" in a  # the first two sentences
            assert int(b.split()[2][len("sentence"):]) >= 2  # a later sentence
            assert (art_a == art_b and a.split()[0] == b.split()[0]) == (y == 0) == (i == j)
            assert s1 == "abc"[topics[i]] and s2 == "abc"[topics[j]]
            if negatives == "same-topic":
                assert s1 == s2
        used.append({x for pair in split.articles for x in pair})
    assert not used[0] & used[2] and not used[0] & used[1] and not used[1] & used[2]  # no article in two splits
    again = news_pairs(texts, topics, ["a", "b", "c"], (18, 6, 9), seed=1, negatives=negatives)
    assert [s.pairs for s in again] == [s.pairs for s in splits]


def test_both_negative_schemes_share_labels_and_positives_and_differ_in_topic_match():
    texts, topics = _articles(20, 5)
    rand = news_pairs(texts, topics, list("abcde"), (60, 10, 30), seed=0, negatives="random")[0]
    same = news_pairs(texts, topics, list("abcde"), (60, 10, 30), seed=0, negatives="same-topic")[0]
    assert rand.labels.tolist() == same.labels.tolist()
    pos = rand.labels == 0
    assert [p for p, k in zip(rand.pairs, pos) if k] == [p for p, k in zip(same.pairs, pos) if k]
    assert same.topic_match().tolist() == [1] * len(same)
    assert rand.topic_match()[~pos].mean() < 0.5  # random negatives: mostly another topic


def test_the_built_in_pairs_come_from_the_shipped_articles():
    notes: list[str] = []
    tr, va, te = load_news_pairs((200, 50, 100), seed=0, notes=notes)
    assert (len(tr), len(va), len(te)) == (200, 50, 100)
    assert tr.classes == ["continues", "unrelated"]
    assert set(tr.first_source) == {"business", "entertainment", "politics", "sports", "tech"}
    neg = te.labels == 1
    assert 0.6 < 1 - te.topic_match()[neg].mean() < 0.95  # random negatives: about 4 in 5 from another topic
    assert te.topic_match()[~neg].all()
