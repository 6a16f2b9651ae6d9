"""What a discovery row means: its verdict, the sentence that says it, and ``summary.json["discovered"]``.

Verdicts (docs/design.md §8), with BH q-values over every p-value of the run's tested candidates:

- ``used shortcut``: the insertion test passes (q ≤ q_level) and the paired override effect's
  interval lies above ``min_effect``: one inserted word moves other-class documents to its class,
  whatever the word means;
- ``used, plausibly task-relevant``: the deletion test passes (q ≤ q_level, paired deletion effect's
  interval above ``min_effect``) but insertion does not: the model uses the word as evidence in
  context; whether that evidence is legitimate is the user's judgement;
- ``weakly used``: a test passes (q ≤ q_level, its effect's interval above :data:`NEGLIGIBLE`) but the
  interval does not clear ``min_effect``: the data show use, smaller than the effect probe calls a shortcut;
- ``correlated but not used``: the feature is label-associated in the training data, both tests ran
  on at least ``min_examples`` examples and both effects' intervals lie below ``LARGE_EFFECT``;
- ``not used``: the same for a candidate that came only from the model (no significant association); for
  a vocabulary word no held-out text contains (nothing to delete), the insertion test alone;
- ``inconclusive``: anything else: the data could not tell (too few examples, or an interval too wide to
  rule out a large effect);
- ``correlational``: a natural-property slice without an edit (:data:`probe.discovery.property_edits.NO_EDIT`),
  with its label association only, or whose edit the model cannot see (``unseen``: a case edit under an
  uncased tokenizer gives the same ids);
- ``not tested``: data-significant but beyond ``max_candidates``.
"""

from __future__ import annotations

import math

import pandas as pd

USED = ("used shortcut", "used, plausibly task-relevant")
FORMAT_USED = "format moves predictions"  # a template element of a label-word prompt (prompt_elements.py)
WEAK = "weakly used"
# an effect within this of 0 is no use: edits that change a text's length move probabilities by ~1e-7
# (padding and batching arithmetic) consistently enough for a sign-flip test to call it significant
NEGLIGIBLE = 0.01
LARGE_EFFECT = 0.1  # an effect interval reaching this high is not evidence of non-use
MIN_EXAMPLES = 20  # fewer examples in a direction and that test decides nothing
SUMMARY_KEYS = ("feature", "kind", "class", "verdict", "override_rate", "override_ci_low", "override_ci_high",
                "deletion_drop", "deletion_ci_low", "deletion_ci_high", "q_value", "count", "z", "source",
                "reference_override_rate")
# summary key -> table column
SUMMARY_COLUMNS = {"override_ci_low": "override_rate_ci_low", "override_ci_high": "override_rate_ci_high",
                   "deletion_ci_low": "deletion_drop_ci_low", "deletion_ci_high": "deletion_drop_ci_high"}


def verdict(row: dict, q_level: float, min_effect: float) -> str:
    """The verdict of one tested candidate (see the module docstring)."""
    if row.get("unseen") is True:
        return "correlational"
    ins_ok = row["n_insert"] >= MIN_EXAMPLES
    del_ok = row["n_delete"] >= MIN_EXAMPLES
    if ins_ok and row["q_insert"] <= q_level and row["override_effect_ci_low"] > min_effect:
        return "used shortcut"
    if del_ok and row["q_delete"] <= q_level and row["deletion_effect_ci_low"] > min_effect:
        return "used, plausibly task-relevant"
    if (ins_ok and row["q_insert"] <= q_level and row["override_effect_ci_low"] > NEGLIGIBLE) or \
            (del_ok and row["q_delete"] <= q_level and row["deletion_effect_ci_low"] > NEGLIGIBLE):
        return WEAK
    if ins_ok and del_ok and row["override_effect_ci_high"] < LARGE_EFFECT \
            and row["deletion_effect_ci_high"] < LARGE_EFFECT:
        return "correlated but not used" if row["significant"] else "not used"
    if ins_ok and row.get("source") == "vocabulary" and row["n_delete"] == 0 \
            and row["override_effect_ci_high"] < LARGE_EFFECT:
        return "not used"
    return "inconclusive"


def decisive_p(row: dict) -> tuple[float, float]:
    """The p- and q-value of the test behind the verdict: insertion for a shortcut, deletion for
    evidence in context, otherwise the smaller q of the two."""
    if row["verdict"] == "used shortcut":
        return row["p_insert"], row["q_insert"]
    if row["verdict"] == "used, plausibly task-relevant":
        return row["p_delete"], row["q_delete"]
    pairs = [(row["p_insert"], row["q_insert"]), (row["p_delete"], row["q_delete"])]
    pairs = [p for p in pairs if not math.isnan(p[1])]
    return min(pairs, key=lambda p: p[1]) if pairs else (float("nan"), float("nan"))


def describe(feature: str, kind: str) -> str:
    """How a sentence names a candidate: a word, a property slice or a position template."""
    if kind == "property":
        return f"the property slice {feature}"
    if kind in ("span property", "word shape"):
        return f"the token property {feature}"
    if kind == "prefix":
        return f'starting with "{feature[1:]}"'
    if kind == "suffix":
        return f'ending with "{feature[:-1]}"'
    return f'"{feature}"'


def sentence(row: dict) -> str:
    """One sentence that says what a finding means."""
    f, c, kind = row["feature"], row["class"], row.get("kind", "word")
    if kind not in ("word", "bigram", "marker"):
        return _edit_sentence(row, describe(f, kind))
    if row["verdict"] == "used shortcut":
        return (f'Inserting "{f}" once into {row["n_insert"]} held-out texts of other classes moves '
                f'{row["override_rate"]:.0%} of them to {c} (control words: {row["override_control"]:.0%}); '
                "a single word overriding the rest of a document is shortcut-like behaviour, whatever the word means."
                + _vocabulary_note(row))
    if row["verdict"] == "used, plausibly task-relevant":
        return (f'Removing "{f}" from {row["n_delete"]} held-out texts lowers P({c}) by {row["deletion_drop"]:.2f} '
                f'on average (random words: {row["deletion_control"]:.2f}), but inserting it alone rarely changes the '
                "prediction: the model uses it as evidence in context; whether that is task-relevant is your call.")
    if row["verdict"] == "correlated but not used":
        return (f'"{f}" is associated with {c} in the training data (z = {row["z"]:.1f}) but neither inserting nor '
                "removing it changes the predictions more than control words do.")
    return f'"{f}" ({c}): {row["verdict"]}.'


# what a tagger's edit is applied to: (the units, the units of the insertion direction); texts otherwise
UNITS = {"span property": ("entity spans", "entity spans of other types"),
         "word shape": ("words", "words outside entities")}


def _edit_sentence(row: dict, what: str) -> str:
    """The sentence of a candidate tested by an edit against a same-size control edit."""
    c, v = row["class"], row["verdict"]
    units, others = UNITS.get(row.get("kind"), ("texts", "texts of other classes"))
    if v == "used shortcut":
        return (f'Editing {int(row["n_insert"])} held-out {others} into {what} moves '
                f'{row["override_rate"]:.0%} of them to {c} (the same-size control edit: '
                f'{row["override_control"]:.0%}): the model uses {what} as a shortcut, whatever the content.')
    if v == "used, plausibly task-relevant":
        return (f'Editing {int(row["n_delete"])} held-out {units} out of {what} lowers P({c}) by '
                f'{row["deletion_drop"]:.2f} on average (the same-size control edit: {row["deletion_control"]:.2f}), '
                + (f"but editing {units} into it rarely changes the prediction" if row["n_insert"] else
                   "and no edit into it runs (see the note)") + ": the model uses it as evidence in context.")
    if v == "correlated but not used":
        return (f'{what} is associated with {c} in the training data (z = {row["z"]:.1f}) but editing texts into or '
                "out of it changes the predictions no more than the control edit does.")
    return f"{what} ({c}): {v}."


def _vocabulary_note(row: dict) -> str:
    """What a vocabulary trigger adds to its sentence: where it came from, and the reference's rate."""
    if row.get("source") != "vocabulary":
        return ""
    ref = row.get("reference_override_rate")
    before = "" if ref is None or ref != ref else f' The pretrained reference: {ref:.0%} (controls ' \
        f'{row.get("reference_override_control", float("nan")):.0%}).'
    return f" Found by searching the vocabulary: your texts need not contain it.{before}"


def discovered(table: pd.DataFrame) -> list[dict]:
    """``summary.json["discovered"]``: the used findings, ranked, with :data:`SUMMARY_KEYS` (and a sentence)."""
    out = []
    if table.empty:
        return out
    for row in table[table["verdict"].isin(USED)].to_dict("records"):
        rec = {k: _plain(row.get(SUMMARY_COLUMNS.get(k, k))) for k in SUMMARY_KEYS}
        rec["planted"] = bool(row.get("planted", False))
        rec["sentence"] = sentence(row)
        out.append(rec)
    return out


def discovered_templates(table: pd.DataFrame) -> list[dict]:
    """The template elements of a label-word prompt that move predictions (``tables/discovery_prompt.csv``,
    :mod:`probe.discovery.prompt_elements`), as ``summary.json["discovered"]`` records: kind ``template``, no
    class, the verdict :data:`FORMAT_USED`, the effect (flip rate under the variant minus under its control
    edit) with its interval, and a sentence."""
    out = []
    if table.empty or "verdict" not in table:
        return out
    for row in table[table["verdict"] == FORMAT_USED].to_dict("records"):
        rec = {k: _plain(row.get(k)) for k in ("feature", "verdict", "edit", "n", "flip_rate", "control_flip_rate",
                                                "effect", "effect_ci_low", "effect_ci_high")}
        rec.update({"kind": "template", "class": None, "q_value": _plain(row.get("q")), "planted": False,
                    "sentence": (f'Under the template variant "{str(rec["feature"]).removeprefix("template: ")}", '
                                 f'{rec["flip_rate"]:.0%} of {rec["n"]} held-out predictions change (the same-size '
                                 f'control edit, {row.get("control", "random words deleted")}: '
                                 f'{rec["control_flip_rate"]:.0%}): the answers depend on the prompt\'s format, '
                                 "not only on the text.")})
        out.append(rec)
    return out


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v
