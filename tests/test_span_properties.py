"""Taggers' span properties (issue 25): each edit moves the span's property and its control does not, both keep
the other words and the tag alignment; the candidate statistic by hand; an uncased tokenizer is detected; and
known answers on a tiny tagger: a digit in the span that decides the type is *used*, digits at equal rates in
every type are not."""

from __future__ import annotations

import numpy as np
import pytest

from probe.tasks.tokens.span_edits import ONE_WAY, SPAN_EDITS, Span, SpanContext, inserted_tags, moves, span_counts
from probe.tasks.tokens.tagging import Sentence

CTX = SpanContext(["quietly"])
ON_SPAN = {"span_digit"}  # properties whose control edits the span's own words
# (property, sentence, tags) with the span at the B- tag; each sentence is outside the property's slice 1
OUTSIDE = {
    "span_capitalised": (["we", "met", "alice", "smith", "today"], ["O", "O", "B-per", "I-per", "O"]),
    "span_all_caps": (["we", "met", "Alice", "Smith", "today"], ["O", "O", "B-per", "I-per", "O"]),
    "span_digit": (["we", "met", "alice", "today"], ["O", "O", "B-per", "O"]),
    "span_first": (["we", "met", "Alice", "today"], ["O", "O", "B-per", "O"]),
}
INSIDE = {
    "span_capitalised": (["we", "met", "Alice", "smith", "today"], ["O", "O", "B-per", "I-per", "O"]),
    "span_all_caps": (["we", "met", "NASA", "HQ", "today"], ["O", "O", "B-org", "I-org", "O"]),
    "span_digit": (["we", "saw", "win10", "pro4", "at", "home"], ["O", "O", "B-prod", "I-prod", "O", "O"]),
    "span_first": (["Alice", "met", "us", "today"], ["B-per", "O", "O", "O"]),
}


def _span(words, tags) -> Span:
    s = next(j for j, t in enumerate(tags) if t.startswith("B-"))
    e = s + 1
    while e < len(tags) and tags[e].startswith("I-"):
        e += 1
    return Span(words, tags, s, e)


def _after(span: Span, read) -> Span:
    """The edited read as a span again: its tags follow the words, the span where the read says."""
    words, pos = read
    tags = inserted_tags(span, read)
    assert len(tags) == len(words), "the tags stay aligned with the words"
    assert tags[pos: pos + span.e - span.s] == list(span.tags[span.s: span.e]), "the span keeps its tags"
    return Span(words, tags, pos, pos + span.e - span.s)


def _changed(before: Span, after: Span) -> list[int]:
    """Positions of the unedited sentence whose word changed (same-length edits)."""
    return [j for j, (a, b) in enumerate(zip(before.words, after.words)) if a != b]


@pytest.mark.parametrize("name", sorted(SPAN_EDITS))
@pytest.mark.parametrize("direction", ["into", "out_of"])
def test_each_edit_moves_the_property_and_its_control_does_not(name, direction):
    edit = SPAN_EDITS[name]
    words, tags = (OUTSIDE if direction == "into" else INSIDE)[name]
    span = _span(words, tags)
    into, out_of = moves(f"{name}=1", CTX)
    pair = (into if direction == "into" else out_of)(span, np.random.default_rng(0))
    if name in ONE_WAY and direction == "into":
        assert pair is None  # no honest edit moves a later span to the front
        return
    assert pair is not None
    edited, control = (_after(span, read) for read in pair)
    before = edit.value(span, CTX)
    assert before == (0 if direction == "into" else 1)
    assert edit.value(edited, CTX) == 1 - before, "the edit moves the property"
    assert edit.value(control, CTX) == before, "the control leaves it"
    if len(edited.words) == len(span.words):  # in-place edits touch the span only
        assert set(_changed(span, edited)) <= set(range(span.s, span.e))
        if name in ON_SPAN:  # the digit's control: the same word(s), a letter for a digit or a digit for a digit
            assert _changed(span, control) == _changed(span, edited)
        else:  # the case controls: O words only
            assert control.words[control.s: control.e] == span.words[span.s: span.e]
            assert all(tags[j] == "O" for j in _changed(span, control))
        # the same size: as many letters' case changed, digits added or characters deleted
        size = [sum(abs(len(a) - len(b)) if len(a) != len(b) else sum(x != y for x, y in zip(a, b))
                    for a, b in zip(span.words, s.words)) for s in (edited, control)]
        assert size[0] == size[1] != 0
    else:  # one O word inserted: the same word, before the span in the edit, after it in the control
        new_e, new_c = edited.words[0], control.words[control.e]
        assert new_e == new_c == "quietly" and edited.tags[0] == control.tags[control.e] == "O"
        assert [w for w in edited.words if w != new_e] == [w for w in control.words if w != new_c] == list(words)


@pytest.mark.parametrize("name", sorted(SPAN_EDITS))
def test_edits_refuse_spans_already_in_the_target_slice(name):
    into, out_of = moves(f"{name}=1", CTX)
    rng = np.random.default_rng(0)
    assert into(_span(*INSIDE[name]), rng) is None and out_of(_span(*OUTSIDE[name]), rng) is None
    into0, out_of0 = moves(f"{name}=0", CTX)  # slice 0: the same edits reversed
    assert into0(_span(*OUTSIDE[name]), rng) is None and out_of0(_span(*INSIDE[name]), rng) is None
    assert into0(_span(*INSIDE[name]), rng) is not None  # into slice 0 is out of slice 1, which every property has


def test_a_digit_only_word_is_not_emptied_and_a_sentence_without_o_words_gets_no_case_control():
    span = _span(["in", "2012", "we"], ["O", "B-date", "O"])
    assert moves("span_digit=1", CTX)[1](span, np.random.default_rng(0)) is None
    (edited, _), (control, _) = moves("span_digit=1", CTX)[1](_span(["in", "euro2012"], ["O", "B-ev"]),
                                                              np.random.default_rng(0))
    assert edited == ["in", "euro"] and control[1][:4] == "euro" and control[1][4:].isdigit()
    assert all(a != b for a, b in zip(control[1][4:], "2012")), "each digit replaced by another digit"
    alone = _span(["alice"], ["B-per"])
    assert moves("span_capitalised=1", CTX)[0](alone, np.random.default_rng(0)) is None


def test_span_statistic_by_hand():
    sentences = [Sentence(["met", "Alice"], ["O", "B-per"]), Sentence(["Bob", "came"], ["B-per", "O"]),
                 Sentence(["in", "paris"], ["O", "B-loc"]), Sentence(["Rome", "is"], ["B-loc", "O"])]
    rows = span_counts(sentences, ["loc", "per"], min_count=1).set_index(["feature", "class"])
    row = rows.loc[("span_capitalised=1", "per")]
    # 4 spans, 3 capitalised; 2 of those are per (p0 = 2/4)
    assert row["count"] == 3 and row["class_count"] == 2 and row["p0"] == pytest.approx(0.5)
    assert row["z"] == pytest.approx((2 / 3 - 0.5) / np.sqrt(0.25 / 3))
    assert rows.loc[("span_first=1", "per"), "count"] == 2 and rows.loc[("span_first=1", "per"), "class_count"] == 1
    assert set(rows.kind) == {"span property"}


def _cased_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def test_an_uncased_tokenizer_is_detected_and_a_cased_one_is_not():
    from probe.models.backbones import load_tokenizer
    from probe.tasks.tokens.property_test import edit_seen

    pairs = [(["we", "met", "alice"], ["we", "met", "Alice"])]
    assert not edit_seen(load_tokenizer("tiny-bert"), pairs)  # minilm's tokenizer lower-cases
    assert edit_seen(_cased_tokenizer(["we", "met", "alice", "Alice"]), pairs)
    assert edit_seen(load_tokenizer("tiny-bert"), [(["alice"], ["alice7"])])  # digits it sees


def test_case_properties_under_an_uncased_tokenizer_are_correlational_not_not_used():
    """Person spans are capitalised, city spans not: the data associate capitalisation with person, but the
    tokenizer lower-cases, so the edit is not run and the verdict says why."""
    import torch
    from transformers import AutoModelForTokenClassification

    from probe.models.backbones import load_tokenizer
    from probe.tasks.tokens.markers import discover_markers
    from tests.test_hardening import _tiny_config

    rng = np.random.default_rng(0)
    sentences = []
    for _ in range(300):
        typ = ["per", "loc"][int(rng.integers(2))]
        name = str(rng.choice(["alice", "bob"] if typ == "per" else ["paris", "rome"]))
        sentences.append(Sentence(["we", "met" if typ == "per" else "saw", name.capitalize() if typ == "per" else name,
                                   "today"], ["O", "O", f"B-{typ}", "O"]))
    tags = ["O", "B-loc", "I-loc", "B-per", "I-per"]
    torch.manual_seed(0)
    tagger = AutoModelForTokenClassification.from_config(_tiny_config(labels=tags)).eval()
    table = discover_markers(tagger, load_tokenizer("tiny-bert"), sentences[:200], sentences[200:], tags,
                             max_length=16, min_count=5, n_examples=40, bootstrap=100)
    row = table.set_index(["feature", "class"]).loc[("span_capitalised=1", "per")]
    assert row["kind"] == "span property" and row["verdict"] == "correlational"
    assert "uncased" in row["note"] and row["n_insert"] == 0


# --- known answers on a tiny tagger ------------------------------------------------------------

DIGIT_TAGS = ["O", "B-code", "B-person", "I-code", "I-person"]
FILLER = ["the", "a", "went", "to", "with", "today", "and", "saw", "we", "it"]


def _digit_data(n: int, seed: int, null: bool) -> list:
    """Sentences of filler words with entity words. Planted: the names are shared by both types and a code's
    name carries a digit ("rome7"), a person's none, so only the digit tells the types apart. Null: the types
    have names of their own and half of every type's names carry a digit."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.integers(2, 5)):
            words.append(str(rng.choice(FILLER)))
            tags.append("O")
            if rng.random() < 0.5:
                kind = ["person", "code"][rng.integers(2)]
                if null:
                    name = str(rng.choice(["alice", "bob"] if kind == "person" else ["paris", "rome"]))
                    digit = rng.random() < 0.5
                else:
                    name, digit = str(rng.choice(["alice", "bob", "paris", "rome"])), kind == "code"
                words.append(name + (str(rng.integers(2, 10)) if digit else ""))
                tags.append(f"B-{kind}")
        out.append(Sentence(words, tags))
    return out


def _digit_tagger(null: bool):
    import torch

    from probe.config import FinetuneConfig
    from probe.models.backbones import build_tagger, load_tokenizer
    from probe.tasks.tokens.objective import finetune_tagger

    torch.manual_seed(0)
    tok = load_tokenizer("tiny-bert")  # uncased, but it sees digits
    train, val, test = _digit_data(300, 0, null), _digit_data(40, 2, null), _digit_data(200, 1, null)
    model = build_tagger("tiny-bert", DIGIT_TAGS, seed=0)
    finetune_tagger(model, tok, train, val, DIGIT_TAGS, FinetuneConfig(epochs=6, learning_rate=1e-2, batch_size=16),
                    32, 0, torch.device("cpu"), progress=False)
    return model.eval(), tok, train, test


def _discover(model, tok, train, test):
    from probe.tasks.tokens.markers import discover_markers

    return discover_markers(model, tok, train, test, DIGIT_TAGS, max_length=32, min_count=5, n_examples=80,
                            controls=2, bootstrap=300, max_candidates=4)


def test_a_digit_that_decides_the_type_is_a_used_span_property(one_thread):
    model, tok, train, test = _digit_tagger(null=False)
    table = _discover(model, tok, train, test).set_index(["feature", "class"])
    row = table.loc[("span_digit=1", "code")]
    assert row["kind"] == "span property" and row["verdict"] == "used shortcut"
    assert row["n_insert"] >= 20 and row["override_effect_ci_low"] > 0.5 and row["override_control"] < 0.2
    examples = table.attrs["examples"]
    shown = examples[(examples.feature == "span_digit=1") & (examples.edit == "insert")].iloc[0]
    assert shown.text.split() != shown.before.split() and len(shown.text.split()) == len(shown.before.split())


def test_digits_at_equal_rates_in_every_type_are_not_used(one_thread):
    from probe.discovery.verdicts import verdict
    from probe.tasks.tokens.markers import _TypePredictor, _spans
    from probe.tasks.tokens.property_test import PropertyTester

    model, tok, train, test = _digit_tagger(null=True)
    table = _discover(model, tok, train, test)
    assert not ((table.kind == "span property") & table.verdict.isin(["used shortcut",
                                                                       "used, plausibly task-relevant"])).any()
    assert "span_digit=1" not in set(table.feature)  # no association, so not even a candidate
    # tested anyway, as if it were one: neither edit moves the types more than its control
    spans = _spans(test)
    predict = _TypePredictor(model, tok, DIGIT_TAGS, 32, 64, "cpu")
    clean = predict([list(test[i].words) for i, *_ in spans], [s for _, s, _, _ in spans])
    tester = PropertyTester(test, spans, clean, ["code", "person"], predict, tok, ["quietly"])
    row, _ = tester.span_row("span_digit=1", "code", 80, 300, np.random.default_rng(0))
    assert row["n_insert"] >= 20 and row["n_delete"] >= 20
    assert verdict({**row, "q_insert": row["p_insert"], "q_delete": row["p_delete"], "significant": False},
                   0.05, 0.1) == "not used"


def test_the_banner_does_not_offer_to_insert_or_plant_a_property():
    from probe.discovery.verdicts import sentence
    from probe.report.impact import banner

    row = {"feature": "span_digit=1", "kind": "span property", "class": "code", "verdict": "used shortcut",
           "n_insert": 80, "override_rate": 0.9, "override_control": 0.05, "q_value": 0.001}
    summary = {"name": "digits", "task": {"entity_types": ["code", "person"]},
               "discovered": [{**row, "sentence": sentence(row)}]}
    b = banner(summary, {}, "config.yaml")
    assert b["status"] == "relies" and "the token property span_digit=1" in b["verdict"] and "90%" in b["verdict"]
    assert "inserting" not in b["verdict"] and b["command"] == "" and "spurious=" not in b["why"]


def test_a_cased_tagger_whose_types_follow_capitalisation_uses_span_capitalised(one_thread):
    """The case path on a model that can see case: a tiny BERT over a cased word-level vocabulary, names shared by
    both types, a person's capitalised and a city's not."""
    import torch
    from transformers import AutoModelForTokenClassification

    from probe.config import FinetuneConfig
    from probe.tasks.tokens.markers import discover_markers
    from probe.tasks.tokens.objective import finetune_tagger
    from tests.test_hardening import _tiny_config

    tags = ["O", "B-city", "B-person", "I-city", "I-person"]
    names = ["alice", "bob", "paris", "rome"]

    def make(n: int, seed: int) -> list:
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            words, row = [], []
            for _ in range(rng.integers(2, 5)):
                words.append(str(rng.choice(FILLER)))
                row.append("O")
                if rng.random() < 0.5:
                    kind, name = ["person", "city"][rng.integers(2)], str(rng.choice(names))
                    words.append(name.capitalize() if kind == "person" else name)
                    row.append(f"B-{kind}")
            out.append(Sentence(words, row))
        return out

    vocab = FILLER + names
    tok = _cased_tokenizer(vocab + [w.capitalize() for w in vocab] + [w.upper() for w in vocab])
    config = _tiny_config(labels=tags)
    config.vocab_size = len(tok)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_config(config)
    train, test = make(300, 0), make(200, 1)
    finetune_tagger(model, tok, train, make(40, 2), tags, FinetuneConfig(epochs=6, learning_rate=1e-2, batch_size=16),
                    32, 0, torch.device("cpu"), progress=False)
    table = discover_markers(model.eval(), tok, train, test, tags, max_length=32, min_count=5, n_examples=80,
                             controls=2, bootstrap=300, max_candidates=6).set_index(["feature", "class"])
    row = table.loc[("span_capitalised=1", "person")]
    assert row["verdict"] == "used shortcut" and row["override_effect_ci_low"] > 0.5
    assert row["deletion_effect_ci_low"] > 0.5 and row["override_control"] < 0.2
