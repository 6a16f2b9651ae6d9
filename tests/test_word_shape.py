"""Taggers' token-level property (issue 25): a capitalised word, its case edits and their controls, the
candidate statistic by hand, and the test on a tagger that cannot see case (an uncased tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest

from probe.tasks.tokens.word_shape import capitalise, decapitalise, is_capitalised, shape_counts


@pytest.mark.parametrize("word", ["market", "london", "ok"])
def test_capitalise_moves_the_property_and_its_control_does_not(word):
    edited, control = capitalise(word)
    assert is_capitalised(edited) and not is_capitalised(control)
    assert edited.lower() == control.lower() == word  # the same word: one letter's case changed in each
    assert sum(a != b for a, b in zip(edited, word)) == sum(a != b for a, b in zip(control, word)) == 1


@pytest.mark.parametrize("word", ["London", "Market", "Ok"])
def test_decapitalise_moves_the_property_and_its_control_does_not(word):
    edited, control = decapitalise(word)
    assert not is_capitalised(edited) and is_capitalised(control)
    assert edited.lower() == control.lower() == word.lower()
    assert sum(a != b for a, b in zip(edited, word)) == sum(a != b for a, b in zip(control, word)) == 1


def test_shape_statistic_by_hand():
    sentences = [["we", "met", "Alice"], ["Bob", "saw", "it"], ["Paris", "is", "big"]]
    starts = [[None, None, "person"], ["person", None, None], ["city", None, None]]
    rows = shape_counts(sentences, starts, ["city", "person"], min_count=1).set_index(["feature", "class"])
    row = rows.loc[("capitalised=1", "person")]
    # 9 words, 3 capitalised; 2 of those begin a person (p0 = 2/9)
    assert row["count"] == 3 and row["class_count"] == 2 and row["p0"] == pytest.approx(2 / 9)
    assert row["z"] == pytest.approx((2 / 3 - 2 / 9) / np.sqrt(2 / 9 * 7 / 9 / 3))
    assert "(none)" not in set(rows.index.get_level_values("class"))


def test_an_uncased_tagger_cannot_see_capitalisation_and_the_table_says_so():
    """Entities are capitalised in every sentence, but tiny-bert's tokenizer lower-cases: the case edit changes
    nothing the tagger sees (the same ids), so capitalisation is associated in the data and *correlational*, with
    the reason, rather than "not used" on the strength of an effect of 0 that could not be anything else."""
    import torch

    from probe.config import FinetuneConfig
    from probe.models.backbones import build_tagger, load_tokenizer
    from probe.tasks.tokens.markers import discover_markers
    from probe.tasks.tokens.objective import finetune_tagger
    from tests.test_tagger import LEX_TAGS, _lexical

    def cased(sentences):
        for s in sentences:
            s.words = [w.capitalize() if t != "O" else w for w, t in zip(s.words, s.tags)]
        return sentences

    torch.manual_seed(0)
    tok = load_tokenizer("tiny-bert")
    train, test = cased(_lexical(200, 0)), cased(_lexical(120, 1))
    model = build_tagger("tiny-bert", LEX_TAGS, seed=0)
    finetune_tagger(model, tok, train, test[:20], LEX_TAGS, FinetuneConfig(epochs=3, learning_rate=5e-3,
                                                                          batch_size=16), 32, 0, torch.device("cpu"),
                    progress=False)
    table = discover_markers(model, tok, train, test, LEX_TAGS, max_length=32, min_count=5, n_examples=60,
                             controls=2, bootstrap=200, max_candidates=4)
    shape = table[(table.kind == "word shape") & table.n_insert.notna()].set_index(["feature", "class"])
    row = shape.loc[("capitalised=1", "person")]
    assert row["z"] > 3  # associated with person in the data
    assert row["verdict"] == "correlational" and "uncased" in row["note"] and row["n_insert"] == 0
