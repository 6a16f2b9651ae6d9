"""The impact banner at the top of the report: the verdict in one sentence, what it costs in plain
per-class counts, and the next step as a ready command.

The next step is the remedy README measured to work for that kind of finding ("Comparing remedies":
counterfactual augmentation took the default run's reliance gap from 0.87 to 0.02 and its clean accuracy
from 0.75 to 0.93, 3 seeds, while linear probing, LP-FT, LoRA, L2-SP, FGM and synonym replacement did not
remove the shortcut), with the caveat that it was measured on probe's own planted-token example.
Every sentence is built from the summary and the tables the page shows, so the banner cannot
disagree with them; strings are plain text, escaped by Jinja.
"""

from __future__ import annotations

import shlex

import pandas as pd

from probe.report.tables import number

#: what README measured, quoted in the banner's caveat
MEASURED = ("On probe's own example (README, \"Comparing remedies\") counterfactual augmentation took the "
            "reliance gap from 0.87 to 0.02 and clean accuracy from 0.75 to 0.93 (3 seeds); linear probing, "
            "LP-FT, LoRA, L2-SP, FGM and synonym replacement did not remove the shortcut. That was measured on "
            "a planted token; check it on your model with the run below.")
SWEEP = "or compare recipes side by side with a compare: sweep, as examples/remedies.yaml does"


def _counts(confusion: pd.DataFrame | None, cls: str, noun: str) -> str:
    """``k of n <cls> <noun> are classified as <cls>; m go to X, …`` from a confusion matrix's row."""
    if confusion is None or cls not in confusion.index:
        return ""
    row = confusion.loc[cls]
    n, k = int(row.sum()), int(row.get(cls, 0))
    others = row.drop(cls, errors="ignore")
    others = others[others > 0].sort_values(ascending=False)
    where = ", ".join(f"{int(v)} to {c}" for c, v in others.head(3).items())
    verb = "is" if k == 1 else "are"
    return f"{k} of {n} {cls} {noun} {verb} classified as {cls}" + (f" ({where})" if where else "")


def _into(confusion: pd.DataFrame | None, cls: str, noun: str) -> str:
    """``k of n <noun> of other classes are classified as <cls>`` (a conflicting confusion matrix)."""
    if confusion is None or cls not in confusion.columns:
        return ""
    n, k = int(confusion.to_numpy().sum()), int(confusion[cls].sum())
    return f"{k} of {n} {noun} of other classes {'is' if k == 1 else 'are'} classified as {cls}"


def command(config_path: str, name: str, overrides: list[str]) -> str:
    """``probe run CONFIG --set name=… --set …``, each argument shell-quoted."""
    args = ["probe", "run", config_path, "--set", f"name={name}"]
    for o in overrides:
        args += ["--set", o]
    return " ".join(shlex.quote(a) for a in args)


def _planted(f: dict, confusions: dict, noun: str, config_path: str, name: str) -> dict:
    target, token = f.get("target_class", ""), f.get("token", "")
    s = f.get("s_only_error") or {}
    share = f"{s['value'] * 100:.0f} %" if _known(s.get("value")) else "n/a"
    conflicting = confusions.get(f"conflicting: {f.get('name')}")
    n = f", n = {int(conflicting.to_numpy().sum())}" if conflicting is not None else ""
    verdict = (f'The model relies on the planted token "{token}" → {target}: inserted into {noun} of other classes, '
               f"it makes {share} of them {target} (s-only error {number(s.get('value'), 2)} "
               f"[{number(s.get('ci_low'), 2)}, {number(s.get('ci_high'), 2)}]{n}).")
    without = _counts(confusions.get("clean"), target, noun)
    inserted = _into(conflicting, target, noun)
    costs = ([f"Without the token, {without}."] if without else []) + \
        ([f"With it inserted, {inserted}."] if inserted else [])
    return {"status": "relies", "verdict": verdict, "costs": costs,
            "command": command(config_path, f"{name}-counterfactual",
                               ["finetune.augmentation.counterfactual_rate=0.5"]),
            "why": f"Next step: counterfactual augmentation, planting \"{token}\" into half of the other classes' "
                   f"training examples (labels unchanged), {SWEEP}.", "caveat": MEASURED}


def _discovered(d: dict, confusions: dict, noun: str, config_path: str, name: str) -> dict:
    word, cls = str(d.get("feature", "")), str(d.get("class", ""))
    if d.get("kind") not in (None, "word", "bigram", "marker"):  # moved by an edit: nothing to insert or plant
        clean = _counts(confusions.get("clean"), cls, noun)
        return {"status": "relies", "verdict": f"Discovery found a shortcut nobody declared. {d.get('sentence', '')}",
                "costs": [f"In the clean test set, {clean}."] if clean else [], "command": "",
                "why": "Next step: read the before/after examples under Shortcuts found; counterfactual augmentation "
                       "plants words only, so a property or template is removed by editing the training data "
                       "(the same edit, labels unchanged).", "caveat": ""}
    n = f" (n = {int(d['n_insert'])})" if _known(d.get("n_insert")) else ""
    verdict = (f'Discovery found a shortcut nobody declared: inserting "{word}" once moves '
               f"{number(d.get('override_rate'), 2)} [{number(d.get('override_ci_low'), 2)}, "
               f"{number(d.get('override_ci_high'), 2)}] of held-out {noun} of other classes to {cls}{n}, "
               f"more than frequency-matched control words (q = {number(d.get('q_value'), 3)}).")
    clean = _counts(confusions.get("clean"), cls, noun)
    declare = f"spurious=[{{token: {word}, target_class: {cls}, rate_in_class: 0, rate_outside: 0}}]"
    return {"status": "relies", "verdict": verdict, "costs": [f"In the clean test set, {clean}."] if clean else [],
            "command": command(config_path, f"{name}-counterfactual",
                               [declare, "finetune.augmentation.counterfactual_rate=0.5"]),
            "why": f"Next step: declare \"{word}\" as a spurious feature (so the behaviour tests measure it) and "
                   f"train with counterfactual augmentation, {SWEEP}.", "caveat": MEASURED}


def _known(v) -> bool:
    return isinstance(v, (int, float)) and v == v


def banner(summary: dict, confusions: dict[str, pd.DataFrame], config_path: str) -> dict:
    """``{"status", "verdict", "costs": [sentences], "command", "why", "caveat"}`` for the most severe finding:
    a planted feature the model relies on (the largest reliance gap), else a discovered used shortcut (the
    highest override rate), else a prompt template element that moves predictions (the largest effect), else
    what was found or what to run next. ``confusions``: ``clean`` and
    ``conflicting: <feature>`` confusion matrices (:func:`probe.analyses.class_report.confusion`)."""
    tagger = bool((summary.get("task") or {}).get("entity_types"))  # a tagger's summary names its entity types
    noun = "entity spans" if tagger else "test examples"
    name = str(summary.get("name", "run"))
    features = summary.get("features") or []
    relies = sorted((f for f in features if f.get("verdict_status") == "relies"),
                    key=lambda f: -float((f.get("reliance_gap") or {}).get("value") or 0))
    if relies:
        return _planted(relies[0], confusions, noun, config_path, name)
    used = sorted((d for d in summary.get("discovered") or [] if d.get("verdict") == "used shortcut"),
                  key=lambda d: -float(d.get("override_rate") or 0))
    if used:
        return _discovered(used[0], confusions, noun, config_path, name)
    formats = sorted((d for d in summary.get("discovered") or [] if d.get("kind") == "template"),
                     key=lambda d: -float(d.get("effect") or 0))
    if formats:  # a label-word prompt's template element that moves predictions
        return {"status": "relies", "verdict": f'Discovery found that the prompt\'s format moves predictions: '
                f'{formats[0].get("sentence", "")}', "costs": [], "command": "",
                "why": "Next step: compare the pretrained model under the same variant in the prompt-format table "
                       "(a sensitivity it already had came with pretraining), and report accuracy under the "
                       "template the model will be used with.", "caveat": ""}
    inconclusive = [f for f in features if f.get("verdict_status") == "inconclusive"]
    if inconclusive:
        n = int((summary.get("task") or {}).get("n_test") or 0)
        return {"status": "inconclusive", "verdict": inconclusive[0].get("verdict", "").split(". ")[0] + ".",
                "costs": [], "command": command(config_path, f"{name}-larger", [f"task.test_size={max(2 * n, 400)}"]),
                "why": "Next step: more held-out examples narrow the intervals that left the verdict open.",
                "caveat": ""}
    if features:
        names = ", ".join(f'"{f.get("token") or f.get("name")}"' for f in features)
        return {"status": "none", "verdict": f"No reliance found on {names}: every reliance gap's interval lies "
                "below the threshold and the model learned the task.", "costs": [],
                "command": "" if summary.get("discovered") is not None else
                command(config_path, f"{name}-discover", ["discover.enabled=true"]),
                "why": "Next step: look for shortcuts nobody planted." if summary.get("discovered") is None else "",
                "caveat": ""}
    if summary.get("discovered") is not None:
        return {"status": "none", "verdict": "Discovery found no shortcut: no candidate word passed the "
                "false-discovery control with an effect above its threshold.", "costs": [], "command": "",
                "why": "", "caveat": "Untested or inconclusive candidates are not evidence of absence."}
    return {"status": "inconclusive", "verdict": "Nothing was tested for reliance: no spurious feature was "
            "declared and discovery did not run.", "costs": [],
            "command": command(config_path, f"{name}-discover", ["discover.enabled=true"]),
            "why": "Next step: look for shortcuts nobody planted.", "caveat": ""}
