import json

import numpy as np
import pandas as pd
import pytest

from probe.config import load_config
from probe.data.conll import read_conll
from probe.data.planted import insert_token, insertion_positions, plant_mask
from probe.data.sources import load_table, load_text_classification, load_wnut16
from probe.data.splits import stratified_splits
from probe.errors import ProbeError
from probe.tasks.sequence.data import build_task_data


def test_bbc_news_is_the_documented_corpus():
    texts, labels, classes = load_text_classification("bbc-news", "text", "label")
    assert classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(texts) == 2225
    assert np.bincount(labels).tolist() == [510, 386, 417, 511, 401]
    assert all("\n" not in t and "  " not in t for t in texts[:50])


def test_wnut16_loads_as_bio_sentences():
    sents = load_wnut16()
    assert len(sents) > 2000
    tags = {t for s in sents for t in s.tags}
    assert "O" in tags and "B-person" in tags and "I-person" in tags
    assert len({t[2:] for t in tags if t != "O"}) == 10
    assert all(len(s.tokens) == len(s.tags) for s in sents)


def test_wnut16_is_refused_for_text_classification():
    with pytest.raises(ProbeError, match="^task.dataset: 'wnut16' is a token-classification dataset, but task.type is "
                       "text-classification; set task.type: token-classification"):
        build_task_data(load_config(None, {"task.dataset": "wnut16"}))


def test_conll_edge_cases(tmp_path):
    f = tmp_path / "a.conll"
    f.write_text("-DOCSTART- O\n\nEU\tB-ORG\nrejects  O\n\t\n\nGerman B-MISC\n\n\n")
    sents = read_conll(f)
    assert [s.tokens for s in sents] == [("EU", "rejects"), ("German",)]
    assert [s.tags for s in sents] == [("B-ORG", "O"), ("B-MISC",)]
    bad = tmp_path / "bad.conll"
    bad.write_text("EU B-ORG\nlonely\n")
    with pytest.raises(ProbeError, match=r"bad.conll:2: expected a token and a tag"):
        read_conll(bad)


def test_stratified_splits_are_disjoint_proportional_and_seeded():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    tr, va, te = stratified_splits(labels, (500, 100, 200), seed=3)
    assert len(tr) == 500 and len(va) == 100 and len(te) == 200
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert np.bincount(labels[te]).tolist() == [100, 60, 40]
    again = stratified_splits(labels, (500, 100, 200), seed=3)
    assert all((a == b).all() for a, b in zip((tr, va, te), again))
    other = stratified_splits(labels, (500, 100, 200), seed=4)
    assert not (other[2] == te).all()


def test_insert_token_adds_exactly_one_word_early():
    text = "one two three four five six seven"
    rng = np.random.default_rng(0)
    pos = insertion_positions([text] * 200, 3, rng)
    assert pos.min() == 0 and pos.max() == 3
    for p in pos[:20]:
        out = insert_token(text, "zebra", int(p))
        words = out.split()
        assert words.index("zebra") == p
        assert [w for w in words if w != "zebra"] == text.split()
    assert insert_token("short", "zebra", 5) == "short zebra"


def test_plant_mask_follows_the_rates():
    labels = np.repeat([0, 1], 5000)
    m = plant_mask(labels, 1, 0.8, 0.1, np.random.default_rng(0))
    assert abs(m[labels == 1].mean() - 0.8) < 0.02
    assert abs(m[labels == 0].mean() - 0.1) < 0.02
    m = plant_mask(labels, 1, 1.0, 0.0, np.random.default_rng(0))
    assert m[labels == 1].all() and not m[labels == 0].any()


def _task(**over):
    base = {"task.train_size": 200, "task.validation_size": 50, "task.test_size": 100}
    return build_task_data(load_config(None, {**base, **over}))


def test_task_data_plants_training_and_builds_partitions():
    data = _task()
    p = data.planted[0]
    target = data.classes.index("business")
    has = np.array(["zebra" in t.split() for t in data.train_texts])
    assert has[data.train_labels == target].all() and not has[data.train_labels != target].any()
    assert p.train_rate_in_class == 1.0 and p.train_rate_outside == 0.0
    assert not any("zebra" in t.split() for t in data.test_texts)
    assert all(t.split().count("zebra") == 1 for t in p.inserted)
    assert all(i.replace("zebra ", "", 1).replace(" zebra", "", 1) == c
               for i, c in zip(p.inserted, data.test_texts))
    assert 0.35 < p.probe_has_token.mean() < 0.65
    for has_token, text, clean, ins in zip(p.probe_has_token, data.probe_texts, data.test_texts, p.inserted):
        assert text == (ins if has_token else clean)


def test_task_data_is_deterministic_in_seed():
    a, b = _task(), _task()
    assert a.train_texts == b.train_texts and a.planted[0].inserted == b.planted[0].inserted
    c = _task(seed=1)
    assert c.test_texts != a.test_texts


def test_control_plants_at_equal_rates():
    data = _task(**{"spurious.0.rate_in_class": 0.5, "spurious.0.rate_outside": 0.5})
    p = data.planted[0]
    assert abs(p.train_rate_in_class - 0.5) < 0.2 and abs(p.train_rate_outside - 0.5) < 0.1


@pytest.mark.parametrize("over, message", [
    ({"spurious.0.target_class": "sport"}, "spurious.0.target_class: 'sport' is not a class of 'bbc-news'; allowed: business"),
    ({"task.test_size": 5000}, "task.test_size: 5000 is larger than the dataset (2225 examples)"),
    ({"task.train_size": 2000, "task.test_size": 400}, "exceed the dataset's 2225 examples"),
    ({"task.test_size": 3}, "fewer than the 5 classes"),
    ({"task.dataset": "nope"}, "unknown dataset 'nope'; allowed: a built-in (bbc-news, bbc-news-pairs, wnut16)"),
    ({"task.text_column": "body"}, "task.text_column: column 'body' is not in 'bbc-news'; its columns are: text, label"),
])
def test_impossible_data_configs_are_refused(over, message):
    with pytest.raises(ProbeError) as err:
        _task(**over)
    assert message in str(err.value)


@pytest.fixture
def frame():
    return pd.DataFrame({"text": [f"sample text number {i}" for i in range(40)],
                         "label": ["pos", "neg"] * 20, "n": range(40)})


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl"])
def test_local_files_load(tmp_path, frame, suffix):
    path = tmp_path / f"d.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    else:
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")))
    texts, labels, classes = load_text_classification(str(path), "text", "label")
    assert classes == ["neg", "pos"] and len(texts) == 40 and labels[0] == 1


def test_saved_datasets_folder_loads_with_label_names(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"sentence": ["good film", "bad film", "fine", "awful"], "label": [1, 0, 1, 0]},
        features=datasets.Features({"sentence": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["neg", "pos"])}))
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "saved"))
    df = load_table(str(tmp_path / "saved"))
    assert len(df) == 8 and set(df["label"]) == {"neg", "pos"}


def test_bad_local_data_is_refused(tmp_path, frame):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ProbeError, match="is empty"):
        load_text_classification(str(empty), "text", "label")
    one = tmp_path / "one.csv"
    frame.assign(label="pos").to_csv(one, index=False)
    with pytest.raises(ProbeError, match="single class 'pos'; classification needs at least 2"):
        load_text_classification(str(one), "text", "label")
    with pytest.raises(ProbeError, match="holds non-text values"):
        frame.to_csv(tmp_path / "d.csv", index=False)
        load_text_classification(str(tmp_path / "d.csv"), "n", "label")
    with pytest.raises(ProbeError, match="unknown file type '.xlsx'"):
        (tmp_path / "d.xlsx").write_text("x")
        load_text_classification(str(tmp_path / "d.xlsx"), "text", "label")
    with pytest.raises(ProbeError, match="not a saved datasets folder"):
        (tmp_path / "folder").mkdir()
        load_text_classification(str(tmp_path / "folder"), "text", "label")


def test_hf_prefix_goes_through_datasets_offline():
    with pytest.raises(ProbeError, match="cannot load 'hf:surely/not-a-dataset'"):
        load_table("hf:surely/not-a-dataset")


# --- silent data problems (issue #18) --------------------------------------------------------------

def _rows_csv(path, n_good=40, n_empty=0, n_missing=0, extra=()):
    rows = [{"text": f"story {i} about {'ab'[i % 2]} things", "label": "ab"[i % 2]} for i in range(n_good)]
    rows += [{"text": "   ", "label": "a"}] * n_empty + [{"text": None, "label": "b"}] * n_missing + list(extra)
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_dropped_rows_are_counted_and_too_many_refused(tmp_path):
    notes = []
    path = _rows_csv(tmp_path / "some.csv", n_empty=2, n_missing=1)
    texts, _, _ = load_text_classification(path, "text", "label", notes=notes)
    assert len(texts) == 40
    assert notes == [f"3 of the 43 rows of {path!r} dropped (missing text 1, empty text 2)"]
    path = _rows_csv(tmp_path / "many.csv", n_empty=10, n_missing=5)
    with pytest.raises(ProbeError, match=r"^task.dataset: 15 of the 55 rows .* \(27%\) would be dropped \(missing "
                                         r"text 5, empty text 10\), more than task.max_dropped_share 0.1"):
        load_text_classification(path, "text", "label")
    assert len(load_text_classification(path, "text", "label", max_dropped_share=0.3)[0]) == 40
    cfg = load_config(None, {"task.dataset": path, "task.max_dropped_share": 0.3, "task.train_size": 20,
                             "task.validation_size": 6, "task.test_size": 10, "spurious.0.target_class": "a"})
    assert build_task_data(cfg).notes == [f"15 of the 55 rows of {path!r} dropped (missing text 5, empty text 10)"]


def test_target_class_without_test_examples_is_refused_and_a_single_example_class_noted(tmp_path):
    path = _rows_csv(tmp_path / "solo.csv", extra=[{"text": "the lonely story", "label": "solo"}])
    base = {"task.dataset": path, "task.train_size": 20, "task.validation_size": 6, "task.test_size": 10}
    with pytest.raises(ProbeError, match=r"^spurious.0.target_class: 'solo' has 1 example in .* the test split has "
                                         r"no test example of it, so the aligned or conflicting accuracy would be "
                                         r"measured on zero examples"):
        build_task_data(load_config(None, {**base, "spurious.0.target_class": "solo"}))
    data = build_task_data(load_config(None, {**base, "spurious.0.target_class": "a"}))
    assert data.notes == [f"class 'solo' has a single example in {path!r} (in no split): no metric can measure it"]
    assert (data.test_labels == data.classes.index("a")).any()
