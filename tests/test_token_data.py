"""Token-classification data: CoNLL parsing, loaders and BIO checks, splits, planted markers, span pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from probe.config import load_config
from probe.data.conll import read_conll
from probe.errors import ProbeError
from probe.tasks.tokens.data import build_token_task_data, counterfactual_plant_spans, delete_o_words
from probe.tasks.tokens.tagging import Sentence, entity_spans, load_tagged_sentences, to_bio

TYPES = ("person", "geo", "company")


# --- CoNLL ------------------------------------------------------------------------------------

def test_conll_docstart_blank_lines_tabs_spaces_and_crlf(tmp_path):
    f = tmp_path / "a.conll"
    text = ("-DOCSTART- -X- -X- O\n\nEU\tNNP\tB-ORG\nrejects   VBZ  O\n \t \n\n\n-DOCSTART- -X- O\n"
            "German JJ B-MISC\ncall\tNN\tO\n\n\n\n")
    f.write_bytes(("\ufeff" + text).replace("\n", "\r\n").encode())
    sents = read_conll(f)
    assert [s.tokens for s in sents] == [("EU", "rejects"), ("German", "call")]
    assert [s.tags for s in sents] == [("B-ORG", "O"), ("B-MISC", "O")]
    assert not any("\r" in w for s in sents for w in s.tokens + s.tags)
    # column choice, also counted from the end
    assert [s.tags for s in read_conll(f, 0, 1)] == [("NNP", "VBZ"), ("JJ", "NN")]
    assert [s.tags for s in read_conll(f, 0, -2)] == [("NNP", "VBZ"), ("JJ", "NN")]
    assert [s.words for s in read_conll(f, -2, -1)] == [("NNP", "VBZ"), ("JJ", "NN")]


def test_conll_tab_lines_keep_spaces_inside_words(tmp_path):
    f = tmp_path / "b.txt"
    f.write_text("New York\tB-LOC\nis\tO\n")
    assert read_conll(f)[0].tokens == ("New York", "is")


@pytest.mark.parametrize("body, cols, line", [
    ("EU B-ORG\nlonely\n", (0, -1), 2),
    ("EU NNP B-ORG\n\nx O\n", (0, 2), 3),  # too few columns for the chosen tag column
    ("a\tO\n\nb\t\tO\n\t\n", (0, 1), 3),   # the chosen tag column is empty
])
def test_conll_malformed_line_names_file_line_and_text(tmp_path, body, cols, line):
    bad = tmp_path / "bad.conll"
    bad.write_text(body)
    with pytest.raises(ProbeError, match=rf"bad.conll:{line}: ") as e:
        read_conll(bad, *cols)
    assert repr(body.splitlines()[line - 1].rstrip("\n")) in str(e.value)
    assert "\n" not in str(e.value)


# --- BIO and loaders ---------------------------------------------------------------------------

def test_bio_checks_and_iob1_conversion():
    assert to_bio(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-geo-loc"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-geo-loc"]
    for bad in (["S-PER"], ["E-PER"], ["PER"], ["B-"], ["o"]):
        with pytest.raises(ValueError):
            to_bio(bad)
    assert entity_spans(["B-a", "I-a", "B-a", "O", "I-b", "B-geo-loc", "I-geo-loc"]) == \
        [(0, 2, "a"), (2, 3, "a"), (4, 5, "b"), (5, 7, "geo-loc")]


def _task(dataset, **kw):
    return load_config(None, {"task.type": "token-classification", "task.dataset": str(dataset), **kw}).task


def test_jsonl_and_conll_sources_and_their_errors(tmp_path):
    rows = [{"tokens": ["Obama", "visits", "Paris"], "ner_tags": ["B-PER", "O", "I-LOC"]},
            {"tokens": [], "ner_tags": []}]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    notes = []
    sents = load_tagged_sentences(_task(f, **{"task.max_dropped_share": 0.5}), notes)
    assert len(sents) == 1 and sents[0].tags == ["B-PER", "O", "B-LOC"]  # IOB1 converted, empty row dropped
    assert notes == [f"1 of the 2 sentences of {str(f)!r} dropped (no words 1)"]  # and said so
    with pytest.raises(ProbeError, match=r"^task.dataset: 1 of the 2 sentences .* \(50%\) would be dropped .*"
                                         r"more than task.max_dropped_share 0.1"):
        load_tagged_sentences(_task(f))  # half the sentences empty: refused by default
    f.write_text(json.dumps({"tokens": ["a", "b"], "ner_tags": [0, 1]}))
    with pytest.raises(ProbeError, match=r"^task.tag_column: .*class ids .*no tag names"):
        load_tagged_sentences(_task(f))
    f.write_text(json.dumps({"tokens": ["a", "b"], "ner_tags": ["O"]}))
    with pytest.raises(ProbeError, match=r"^task.tag_column: row 0 has 2 words but 1 tags"):
        load_tagged_sentences(_task(f))
    f.write_text(json.dumps({"tokens": "a b", "ner_tags": ["O", "O"]}))
    with pytest.raises(ProbeError, match=r"^task.token_column: .*list of words"):
        load_tagged_sentences(_task(f))
    with pytest.raises(ProbeError, match=r"^task.tag_column: column 'tags' is not in .*columns are: tokens, ner_tags"):
        load_tagged_sentences(_task(f, **{"task.tag_column": "tags"}))
    c = tmp_path / "d.iob"
    c.write_text("Obama NNP S-PER\nvisits VBZ O\n")
    with pytest.raises(ProbeError, match=r"^task.conll_columns: tag 'S-PER' .*not a BIO tag.*allowed: O, B-<type>"):
        load_tagged_sentences(_task(c))
    with pytest.raises(ProbeError, match=r"^task.conll_columns: tag 'NNP'"):
        load_tagged_sentences(_task(c, **{"task.conll_columns": [0, 1]}))
    c.write_text("Obama NNP B-PER\nvisits\n")
    with pytest.raises(ProbeError, match=r"^task.dataset: .*d.iob:2: "):
        load_tagged_sentences(_task(c))
    with pytest.raises(ProbeError, match=r"^task.dataset: 'bbc-news' is a text-classification dataset.*allowed: wnut16"):
        load_tagged_sentences(_task("bbc-news"))
    with pytest.raises(ProbeError, match=r"^task.dataset: unknown dataset .*allowed: wnut16"):
        load_tagged_sentences(_task(tmp_path / "missing.conll"))


def test_saved_datasets_folder_maps_class_ids_through_label_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-PER", "I-PER"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    ds = datasets.Dataset.from_dict({"tokens": [["Barack", "Obama", "spoke"]], "ner_tags": [[1, 2, 0]]},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "ds"))
    sents = load_tagged_sentences(_task(tmp_path / "ds"))
    assert sents == [Sentence(["Barack", "Obama", "spoke"], ["B-PER", "I-PER", "O"])]


# --- splits and planting -----------------------------------------------------------------------

def _synthetic(path, n=600, seed=0):
    """Sentences of 4-9 filler words holding 0-3 entity spans of the TYPES, each 1-2 words."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words, tags = [], []
        for _ in range(rng.integers(0, 4)):
            words += [f"w{i}_{len(words)}"] * int(rng.integers(1, 3))
            tags += ["O"] * (len(words) - len(tags))
            kind = TYPES[rng.integers(3)]
            k = int(rng.integers(1, 3))
            words += [f"E{kind}{j}" for j in range(k)]
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (k - 1)
        k = int(rng.integers(1, 4))
        words += [f"t{i}_{j}" for j in range(k)]
        tags += ["O"] * k
        rows.append({"tokens": words, "ner_tags": tags})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _config(path, seed=0, **more):
    base = {"task.type": "token-classification", "task.dataset": str(path), "task.train_size": 300,
            "task.validation_size": 100, "task.test_size": 0.25, "seed": seed,
            "spurious": [{"token": "zebra", "target_class": "person", "rate_in_class": 0.7, "rate_outside": 0.2}]}
    return load_config(None, {**base, **more})


def _marked(sentences, marker):
    """For every entity span: (type, preceded by the marker)."""
    out = []
    for s in sentences:
        for start, _, kind in entity_spans(s.tags):
            out.append((kind, start > 0 and s.words[start - 1] == marker))
    return out


def test_splits_are_disjoint_sized_and_seeded(tmp_path):
    path = _synthetic(tmp_path / "syn.jsonl")
    data = build_token_task_data(_config(path))
    assert (len(data.train), len(data.val), len(data.test), data.n_total) == (300, 100, 150, 600)
    assert data.tags[0] == "O" and data.tags[1:] == sorted(data.tags[1:])
    assert data.entity_types == sorted(TYPES) and len(data.tags) == 1 + 2 * len(TYPES)
    strip = [[tuple(w for w in s.words if w != "zebra") for s in split] for split in (data.train, data.val, data.test)]
    assert not (set(strip[0]) & set(strip[1]) or set(strip[0]) & set(strip[2]) or set(strip[1]) & set(strip[2]))
    again = build_token_task_data(_config(path))
    assert again.fingerprint() == data.fingerprint() and again.planted[0].pairs == data.planted[0].pairs
    assert build_token_task_data(_config(path, seed=1)).fingerprint() != data.fingerprint()
    assert build_token_task_data(_config(path, **{"task.test_size": 149})).fingerprint() == data.fingerprint()
    with pytest.raises(ProbeError, match=r"^task: train \+ validation \+ test sizes .* exceed the dataset's 600"):
        build_token_task_data(_config(path, **{"task.test_size": 201}))
    with pytest.raises(ProbeError, match=r"^task.train_size: 601 is larger than the dataset \(600 sentences\)"):
        build_token_task_data(_config(path, **{"task.train_size": 601}))
    with pytest.raises(ProbeError, match=r"^spurious.0.target_class: 'PER' is not an entity type .*allowed: "
                                         r"company, geo, person"):
        build_token_task_data(_config(path, **{"spurious.0.target_class": "PER"}))


def test_planting_rates_marker_tags_and_clean_test(tmp_path):
    path = _synthetic(tmp_path / "syn.jsonl", n=1400)
    data = build_token_task_data(_config(path, **{"task.train_size": 1000, "task.validation_size": 200,
                                                  "task.test_size": 200}))
    p = data.planted[0]
    marked = _marked(data.train, "zebra")
    hit = np.array([k == "person" for k, _ in marked])
    got = np.array([m for _, m in marked])
    assert p.train_rate_in_class == pytest.approx(got[hit].mean()) and p.train_rate_outside == pytest.approx(
        got[~hit].mean())
    # about 600 person spans and 1200 others: 4 binomial standard errors
    assert abs(p.train_rate_in_class - 0.7) < 4 * np.sqrt(0.21 / hit.sum())
    assert abs(p.train_rate_outside - 0.2) < 4 * np.sqrt(0.16 / (~hit).sum())
    val = _marked(data.val, "zebra")
    assert any(m for k, m in val if k == "person") and any(m for k, m in val if k != "person")
    for s in data.train + data.val:
        assert all(t == "O" for w, t in zip(s.words, s.tags) if w == "zebra")
        assert len(s.words) == len(s.tags)
    assert not any("zebra" in s.words for s in data.test)
    assert len(data.corpus_texts) == 1200 and not any("zebra" in t.split() for t in data.corpus_texts)
    # rates 1 / 0: every person span and nothing else
    one = build_token_task_data(_config(path, **{"spurious.0.rate_in_class": 1.0, "spurious.0.rate_outside": 0.0}))
    assert one.planted[0].train_rate_in_class == 1.0 and one.planted[0].train_rate_outside == 0.0
    assert all(m == (k == "person") for k, m in _marked(one.train + one.val, "zebra"))


def test_test_pairs_partition_kinds_and_point_at_the_span(tmp_path):
    path = _synthetic(tmp_path / "syn.jsonl")
    data = build_token_task_data(_config(path))
    p = data.planted[0]
    spans = [(i, a, b, t) for i, s in enumerate(data.test) for a, b, t in entity_spans(s.tags)]
    with_o = sum("O" in s.tags for s in data.test)
    kinds = p.kinds()
    assert (kinds != "no_entity").sum() == len(spans) and (kinds == "no_entity").sum() == with_o
    assert {(q.sentence, q.start, q.end, q.type) for q in p.pairs if q.kind != "no_entity"} == set(spans)
    for q in p.pairs:
        clean = data.test[q.sentence]
        assert q.kind == ("no_entity" if q.type is None else "aligned" if q.type == "person" else "conflicting")
        assert q.inserted_start == q.start + 1
        assert q.words[q.start] == "zebra" and q.tags[q.start] == "O"
        assert q.words[:q.start] + q.words[q.start + 1:] == clean.words
        assert q.tags[:q.start] + q.tags[q.start + 1:] == clean.tags
        assert q.words[q.inserted_start:q.inserted_start + q.end - q.start] == clean.words[q.start:q.end]
        if q.kind == "no_entity":
            assert clean.tags[q.start] == "O" and q.tags[q.inserted_start] == "O" and q.end == q.start + 1
        else:
            assert clean.tags[q.start] == f"B-{q.type}" and q.tags[q.inserted_start] == f"B-{q.type}"
    # the no_entity word is drawn, not always the first O word
    assert len({q.start - data.test[q.sentence].tags.index("O") for q in p.pairs if q.kind == "no_entity"}) > 1


def test_wnut16_builds_with_person_marker():
    cfg = load_config(None, {"task.type": "token-classification", "task.dataset": "wnut16",
                             "task.train_size": 200, "task.validation_size": 50, "task.test_size": 100,
                             "spurious": [{"token": "zebra", "target_class": "person"}]})
    data = build_token_task_data(cfg)
    assert len(data.entity_types) == 10 and "person" in data.entity_types and data.n_total > 2000
    assert data.planted[0].train_rate_in_class == 1.0 and data.planted[0].train_rate_outside == 0.0
    assert data.planted_markers() == [("zebra", "person")]
    ids = data.tag_ids(data.test[:3])
    assert [[data.tags[i] for i in x] for x in ids] == [s.tags for s in data.test[:3]]


# --- augmentation ------------------------------------------------------------------------------

def test_tagger_augmentation_keeps_entities_and_plants_other_types_only():
    rng = np.random.default_rng(0)
    sents = [Sentence(["a", "Bob", "b", "Paris", "c", "d"], ["O", "B-person", "O", "B-geo", "O", "O"])] * 200
    out = delete_o_words(sents, 0.5, rng)
    for s in out:
        assert "Bob" in s.words and "Paris" in s.words and len(s.words) == len(s.tags)
    assert 0.35 < 1 - sum(len(s.words) - 2 for s in out) / (4 * len(out)) < 0.65
    lone = delete_o_words([Sentence(["x"], ["O"])] * 50, 0.9, rng)
    assert all(s.words == ["x"] for s in lone)
    planted = counterfactual_plant_spans(sents, [("zebra", "person")], 0.5, rng)
    before_paris = np.mean([s.words[s.words.index("Paris") - 1] == "zebra" for s in planted])
    assert 0.35 < before_paris < 0.65
    assert not any(s.words[s.words.index("Bob") - 1] == "zebra" for s in planted)
    assert all(t == "O" for s in planted for w, t in zip(s.words, s.tags) if w == "zebra")
    assert sents[0].words == ["a", "Bob", "b", "Paris", "c", "d"]  # inputs untouched


def test_marker_type_without_test_spans_is_refused(tmp_path):
    path = _synthetic(tmp_path / "d.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows.append({"tokens": ["Zed", "rules"], "ner_tags": ["B-rare", "O"]})  # one span of a rare type
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = _config(path, **{"spurious.0.target_class": "rare", "task.test_size": 0.1})  # seed 0: not in the test split
    with pytest.raises(ProbeError, match=r"^spurious.0.target_class: the test split of .* has no entity of type "
                                         r"'rare', so the aligned accuracy would be measured on zero spans"):
        build_token_task_data(cfg)
