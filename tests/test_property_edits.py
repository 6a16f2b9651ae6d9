"""Every property edit and its control (issue 25): the edit moves the property as documented, the control of
the same size does not, and the text's other words are kept; position templates likewise."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from probe.data.properties import available_properties
from probe.discovery.property_edits import EDITS, NO_EDIT, NUMBERS, EditContext

NEUTRAL = ["table", "window", "paper", "garden", "letter"]
TRAIN = [" ".join(["w"] * n) for n in [4, 5, 6, 8, 10, 12, 20, 25, 30]]  # length tertiles: <= 6, 8-12, >= 20
TEXT = "Prices rose, said the minister; markets were calm on friday and traders waited."


@pytest.fixture
def ctx():
    return EditContext.fit(TRAIN, NEUTRAL, max_position=5)


def _kept(original: str, edited: str, added: set[str] = frozenset()) -> bool:
    """Every word of ``edited`` that is not ``added`` comes from ``original``, in order (a subsequence)."""
    src = iter(original.split())
    return all(any(w == s for s in src) for w in edited.split() if w not in added)


def test_every_registered_property_declares_an_edit_or_why_not():
    assert set(available_properties()) == set(EDITS) | set(NO_EDIT)
    assert not set(EDITS) & set(NO_EDIT)


@pytest.mark.parametrize("n, v", [(25, 0), (25, 1), (5, 1), (5, 2), (10, 0), (10, 2)])
def test_length_edit_moves_the_bucket_and_its_control_keeps_it(ctx, n, v):
    text = " ".join(f"x{i}" for i in range(n))
    pe, rng = EDITS["length_bucket"], np.random.default_rng(0)
    before = pe.value(text, ctx)
    into, out_of = pe.directions(v, ctx)
    out = into(text, rng)
    if out is None:  # only a lengthening whose control would replace the whole text
        assert n <= 5
        return
    edited, control = out
    assert pe.value(edited, ctx) == v and pe.value(control, ctx) == before
    assert len(control.split()) == n
    assert _kept(text, edited, set(NEUTRAL)) and _kept(text, control, set(NEUTRAL))
    back = out_of(edited, rng)
    if back is not None:
        assert pe.value(back[0], ctx) != v and pe.value(back[1], ctx) == v


@pytest.mark.parametrize("name, text_without, text_with", [
    ("contains_digit", TEXT, "Prices rose 3 points, said the minister in 2024 and traders waited."),
    ("has_exclamation", TEXT, "Prices rose, said the minister; markets were calm on friday and traders waited!!"),
    ("has_mention", TEXT, "Prices rose, said @minister; markets were calm on friday and traders waited."),
    ("has_hashtag", TEXT, "Prices rose, said the minister; #markets were calm on friday and traders waited."),
    ("has_url", TEXT, "Prices rose, said the minister; see www.markets.com today and traders waited."),
])
def test_flag_edits_move_the_property_and_controls_do_not(ctx, name, text_without, text_with):
    pe, rng = EDITS[name], np.random.default_rng(1)
    into, out_of = pe.directions(1, ctx)
    assert pe.value(text_without, ctx) == 0 and pe.value(text_with, ctx) == 1
    edited, control = into(text_without, rng)
    assert pe.value(edited, ctx) == 1 and pe.value(control, ctx) == 0
    assert len(edited.split()) == len(control.split())  # the same size
    if name != "has_exclamation":  # one word inserted, the same position in edit and control; the rest kept
        new = Counter(edited.split()) - Counter(text_without.split())
        assert sum(new.values()) == 1 and _kept(text_without, edited, set(new))
        assert [w for w in edited.split() if w not in new] == text_without.split()
    edited, control = out_of(text_with, rng)
    assert pe.value(edited, ctx) == 0 and pe.value(control, ctx) == 1
    if name in ("contains_digit", "has_url"):  # words deleted: the rest kept, in order, as many in the control
        assert _kept(text_with, edited) and _kept(text_with, control)
        assert len(edited.split()) == len(control.split()) < len(text_with.split())
    else:  # a mark removed: the same words without it; the control removes as many other marks
        def bare(t):
            return [w for w in (x.strip("!@#.,;") for x in t.split()) if w]
        assert bare(edited) == bare(text_with) == bare(control)
        assert len(edited) == len(control) < len(text_with)
    assert into(text_with, rng) is None and out_of(text_without, rng) is None  # only texts outside / inside
    # slice 0 is the mirror image: into 0 takes the property away
    into0, out0 = pe.directions(0, ctx)
    assert pe.value(into0(text_with, rng)[0], ctx) == 0 and pe.value(out0(text_without, rng)[0], ctx) == 1


def test_flag_edits_keep_the_other_words(ctx):
    rng = np.random.default_rng(2)
    words = TEXT.split()
    edited, control = EDITS["contains_digit"].directions(1, ctx)[0](TEXT, rng)
    assert [w for w in edited.split() if not w.isdigit()] == words
    (digit,) = set(edited.split()) - set(words)
    assert control.split() == [NUMBERS[int(digit)] if w == digit else w for w in edited.split()]
    edited, control = EDITS["has_exclamation"].directions(1, ctx)[0](TEXT, rng)
    assert edited.split()[:-1] == words[:-1] and edited.endswith("waited.!!") and control.endswith("waited...")
    text = "Prices rose 3 points, said the minister in 2024 and traders waited."
    edited, control = EDITS["contains_digit"].directions(1, ctx)[1](text, rng)
    assert edited.split() == [w for w in text.split() if not any(c.isdigit() for c in w)]
    assert len(control.split()) == len(edited.split()) and "3" in control.split() and "2024" in control.split()
    edited, control = EDITS["has_mention"].directions(1, ctx)[1]("hello @minister, markets: calm.", rng)
    assert edited == "hello minister, markets: calm." and "@minister" in control and len(control) == len(edited)


def test_templates_edit_and_control(ctx):
    from probe.discovery import templates

    texts = ["LONDON (Reuters) - shares fell", "London (Reuters) - oil rose", "the cat sat down"]
    assert ("^london reuters", "prefix") in templates.template_features(texts[0])
    assert ("fell$", "suffix") in templates.template_features(texts[0])
    assert templates.surfaces(texts, {"^london reuters"})["^london reuters"] in ("LONDON (Reuters)", "London (Reuters)")
    assert templates.has_template(texts[1], "^london reuters") and not templates.has_template(texts[2], "^london reuters")
    added = templates.add(texts[2], "LONDON (Reuters) -", "prefix")
    assert templates.has_template(added, "^london reuters") and added.endswith(texts[2])
    rng = np.random.default_rng(0)
    edited, control = templates.remove("LONDON (Reuters) - shares fell sharply in early trade today", "^london reuters",
                                       rng)
    assert edited == "- shares fell sharply in early trade today"
    assert control.startswith("LONDON (Reuters)") and len(control.split()) == len(edited.split())
    assert templates.remove(texts[2], "^london reuters", rng) is None
    edited, control = templates.remove("we met at noon and then left, best regards", "best regards$", rng)
    assert edited == "we met at noon and then left," and control.endswith("best regards")


def test_control_templates_are_unassociated_and_frequency_matched():
    from probe.discovery.templates import control_templates

    data = pd.DataFrame({"feature": ["^a b", "^a b", "^c d", "^c d", "^e", "^e", "^f g", "^f g"],
                         "kind": ["prefix"] * 8, "class": ["x", "y"] * 4, "count": [40, 40, 38, 38, 40, 40, 400, 400],
                         "z": [5.0, -5.0, 0.2, -0.2, 0.1, -0.1, 0.3, -0.3]})
    assert control_templates(data, "^a b", 40, 1, {"^a b"}, np.random.default_rng(0)) == ["^c d"]


def test_nested_templates_are_tested_once_and_slices_without_an_edit_not_at_all():
    from probe.discovery.nonword import select_nonword
    from probe.discovery.templates import nested

    assert nested("^london reuters", "^london") and nested("best regards$", "regards$")
    assert not nested("^london", "^reuters london") and not nested("^best", "best$")
    data = pd.DataFrame({"feature": ["^london reuters", "^london", "casing_ratio_bucket=2", "length_bucket=0",
                                     "^paris"],
                         "kind": ["prefix", "prefix", "property", "property", "prefix"],
                         "class": ["x", "x", "x", "y", "x"], "z": [9.0, 8.0, 7.0, 6.0, 5.0],
                         "significant": [True] * 5})
    assert [f for f, *_ in select_nonword(data, 5)] == ["^london reuters", "length_bucket=0", "^paris"]
    assert [f for f, *_ in select_nonword(data, 1)] == ["^london reuters"]
    data.loc[1, "z"] = 9.0  # the same texts: the longer template is the boilerplate
    assert [f for f, *_ in select_nonword(data, 1)] == ["^london reuters"]


def test_weakly_used_needs_a_significant_effect_above_negligible_and_below_min_effect():
    from probe.discovery.verdicts import verdict

    base = {"n_insert": 50, "n_delete": 50, "q_insert": 0.01, "q_delete": 1.0, "override_effect_ci_low": 0.05,
            "override_effect_ci_high": 0.18, "deletion_effect_ci_low": -0.01, "deletion_effect_ci_high": 0.02,
            "significant": True}
    assert verdict(base, 0.05, 0.1) == "weakly used"  # the 0.115 [0.05, 0.18], q 0.013
    assert verdict({**base, "override_effect_ci_low": 0.11}, 0.05, 0.1) == "used shortcut"
    assert verdict({**base, "q_insert": 0.2}, 0.05, 0.1) == "inconclusive"  # not significant, too wide
    tiny = {**base, "override_effect_ci_low": 2e-8, "override_effect_ci_high": 5e-8}
    assert verdict(tiny, 0.05, 0.1) == "correlated but not used"  # significant but negligible
    assert verdict({**base, "n_insert": 10}, 0.05, 0.1) == "inconclusive"  # too few texts
