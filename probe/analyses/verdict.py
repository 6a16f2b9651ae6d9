"""Headline verdicts drawn from intervals, never from a point estimate alone (docs/design.md §5)."""

from __future__ import annotations

import math

import pandas as pd


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _ci(m: dict) -> str:
    return f"{_fmt(m['value'])} [{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"


def reliance_verdict(
    metrics: dict[str, dict], token: str, target: str, threshold: float, majority_rate: float
) -> tuple[str, str]:
    """``(status, sentence)`` for one planted token from its behaviour metrics.

    ``relies`` needs the reliance gap's whole 95 % interval above ``threshold``; ``none``
    needs it wholly below *and* a model that learned the task (clean accuracy's interval
    above the majority rate + ``threshold``): a model stuck on one class shows no gap
    because it shows nothing. Anything else is ``inconclusive``.
    """
    gap = metrics["reliance_gap"]
    before, after, flips = metrics["conflicting_accuracy_before"], metrics["conflicting_accuracy"], metrics["flip_rate"]
    move = (f"Inserting it into examples of other classes changes their accuracy from {_ci(before)} "
            f"to {_ci(after)}; {flips['value'] * 100:.0f} % of predictions flip "
            f"(s-only error {_ci(metrics['s_only_error'])}).")
    if gap["ci_low"] > threshold:
        return "relies", f'Relies on planted token "{token}" → {target}. {move}'
    clean = metrics["clean_accuracy"]
    if gap["ci_high"] < threshold and clean["ci_low"] <= majority_rate + threshold:
        return "inconclusive", (f'Inconclusive for planted token "{token}" → {target}: the fine-tuned model barely '
                                f"beats the majority class (clean accuracy {_ci(clean)} vs {majority_rate:.2f}), so "
                                f"the absence of a reliance gap ({_ci(gap)}) says nothing. {move}")
    if gap["ci_high"] < threshold:
        return "none", (f'No reliance on planted token "{token}" → {target} found: the reliance gap is '
                        f"{_ci(gap)}, wholly below the {threshold:.2f} that matters. {move}")
    return "inconclusive", (f'Inconclusive for planted token "{token}" → {target}: the reliance gap '
                            f"{_ci(gap)} straddles the {threshold:.2f} that matters; a larger test_size "
                            f"narrows it. {move}")


def decodability_sentence(probing: pd.DataFrame, prop: str, margin: float = 0.05) -> str:
    """Where a property is decodable (probe interval above baseline + margin) and where fine-tuning changed that."""
    if probing is None or probing.empty or prop not in set(probing["property"]):
        return ""
    p = probing[probing["property"] == prop]
    acc = p[p.metric == "accuracy"].set_index(["model", "layer"])
    base = p[p.metric == "majority_baseline"].set_index(["model", "layer"])["value"]
    parts = []
    fine_layers = sorted(l for (m, l) in acc.index if m == "finetuned")
    decodable = [l for l in fine_layers if acc.loc[("finetuned", l), "ci_low"] > base.loc[("finetuned", l)] + margin]
    if decodable:
        parts.append(f"Decodable in the fine-tuned model at layers {layer_ranges(decodable)}")
    else:
        parts.append("Not decodable above the majority baseline in any fine-tuned layer")
    if ("pretrained", fine_layers[0]) in acc.index:
        more = [l for l in fine_layers if acc.loc[("finetuned", l), "ci_low"] > acc.loc[("pretrained", l), "ci_high"]]
        less = [l for l in fine_layers if acc.loc[("finetuned", l), "ci_high"] < acc.loc[("pretrained", l), "ci_low"]]
        if more:
            parts.append(f"fine-tuning made it more decodable at layers {layer_ranges(more)}")
        if less:
            parts.append(f"less decodable at layers {layer_ranges(less)}")
        if not more and not less:
            parts.append("fine-tuning did not change its decodability beyond the intervals")
    return "; ".join(parts) + "."


def layer_ranges(layers: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0–2, 5"``."""
    out, start, prev = [], None, None
    for l in layers:
        if start is None:
            start = prev = l
        elif l == prev + 1:
            prev = l
        else:
            out.append(f"{start}" if start == prev else f"{start}–{prev}")
            start = prev = l
    out.append(f"{start}" if start == prev else f"{start}–{prev}")
    return ", ".join(out)


def erasure_rule(min_gain: float, max_clean_cost: float = 0.03) -> str:
    """The rule :func:`erasure_sentence` applies, in words (the report prints it beside the table too)."""
    return (f"a layer counts when the erased − random difference in conflicting accuracy has its whole 95 % "
            f"interval above {min_gain:g} and clean accuracy drops by at most {max_clean_cost * 100:g} points")


def _n(frame: pd.DataFrame, metric: str) -> str:
    """``n = …`` of ``metric``'s rows (the examples it is computed on), or ``""`` when not recorded."""
    if "n" not in frame:
        return ""
    n = frame.loc[frame.metric == metric, "n"].dropna()
    return f"n = {int(n.iloc[0])}" if len(n) else ""


def erasure_sentence(erasure: pd.DataFrame, feature: str, token: str, min_gain: float,
                     max_clean_cost: float = 0.03) -> str:
    """Where erasing the token's concept raises conflicting accuracy at little cost to clean accuracy.

    A layer counts when the paired erased − random difference in conflicting accuracy has its
    whole 95 % interval above ``min_gain`` (the amnesic control, Elazar et al. 2021) and clean
    accuracy drops by at most ``max_clean_cost`` against the unedited model (:func:`erasure_rule`,
    stated in the sentence). One clause per (concept, method); where no layer counts, the clause
    names the largest difference and which half of the rule it misses, so it never reads as a
    contradiction of the table beside it.
    """
    if erasure is None or erasure.empty or feature not in set(erasure["property"]):
        return ""
    e = erasure[erasure["property"] == feature]
    base = e[e.condition == "none"].set_index("metric")["value"]
    parts = []
    for (concept, method), g in e[e.condition != "none"].groupby(["concept", "method"], sort=False):
        diff = g[(g.condition == "difference") & (g.metric == "conflicting_accuracy")].set_index("layer")
        erased = g[g.condition == "erased"].pivot_table(index="layer", columns="metric", values="value")
        random = g[g.condition == "random"].pivot_table(index="layer", columns="metric", values="value")
        cost = {layer: base["clean_accuracy"] - erased.loc[layer, "clean_accuracy"] for layer in erased.index}
        good = [int(layer) for layer, r in diff.iterrows()
                if r.ci_low > min_gain and cost.get(layer, float("inf")) <= max_clean_cost]
        name = f"{concept} concept with {method.upper()}"
        if not good:
            parts.append(f"erasing the {name} meets the rule at no layer{_miss(diff, cost, min_gain, max_clean_cost)}")
            continue
        best = max(good, key=lambda layer: diff.loc[layer, "value"])
        rnd = (f", random directions of the same rank {random.loc[best, 'conflicting_accuracy']:.2f}"
               if best in random.index else "")
        where = f"layer {good[0]}" if len(good) == 1 else f"layers {layer_ranges(good)}"
        parts.append(f"erasing the {name} meets it at {where} "
                     f"(best: layer {best}, conflicting accuracy "
                     f"{base['conflicting_accuracy']:.2f} → {erased.loc[best, 'conflicting_accuracy']:.2f}{rnd}; "
                     f"clean accuracy {base['clean_accuracy']:.2f} → {erased.loc[best, 'clean_accuracy']:.2f})")
    if not parts:
        return ""
    sizes = ", ".join(x for x in (_n(e, "conflicting_accuracy").replace("n", "n conflicting", 1),
                                  _n(e, "clean_accuracy").replace("n", "n clean", 1)) if x)
    sizes = f" ({sizes} held-out examples)" if sizes else ""
    rule = erasure_rule(min_gain, max_clean_cost)
    return f'Causal test for "{token}"{sizes}, where {rule}: ' + "; ".join(parts) + "."


def _miss(diff: pd.DataFrame, cost: dict, min_gain: float, max_clean_cost: float) -> str:
    """Why no layer counted: the largest difference with its interval, and the half of the rule it misses."""
    if diff.empty:
        return ""
    best = diff["value"].astype(float).idxmax()
    r = diff.loc[best]
    why = []
    if not r.ci_low > min_gain:
        why.append(f"its lower bound {r.ci_low:+.3f} is not above {min_gain:g}")
    if not cost.get(best, float("inf")) <= max_clean_cost:
        why.append(f"clean accuracy drops {cost.get(best, float('nan')) * 100:.1f} points")
    return (f" (largest difference {r.value:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] at layer {int(best)}: "
            f"{' and '.join(why)})")


def feature_record(planted, rates: tuple[float, float, float], metrics: dict[str, dict], majority_rate: float,
                   threshold: float, probing: pd.DataFrame | None, erasure: pd.DataFrame | None,
                   examples_noun: str = "examples") -> dict:
    """``summary.json["features"]`` entry of one planted feature: its settings, the rates achieved in
    training, its behaviour metrics (``clean_accuracy`` becomes ``task_accuracy``), the verdict
    (:func:`reliance_verdict`) and the decodability and causal sentences."""
    status, sentence = reliance_verdict(metrics, planted.token, planted.target_class, threshold, majority_rate)
    metrics = dict(metrics)
    return {
        "name": planted.label, "kind": "planted", "token": planted.token, "target_class": planted.target_class,
        "train_rate_in_class": rates[0], "train_rate_outside": rates[1], "natural_rate": rates[2],
        "task_accuracy": metrics.pop("clean_accuracy"), **metrics,
        "verdict_status": status, "verdict": sentence.replace("examples", examples_noun),
        "decodability": decodability_sentence(probing, planted.label) if probing is not None else "",
        "causal": erasure_sentence(erasure, planted.label, planted.token, threshold) if erasure is not None else "",
    }


def discovery_lead(discovered: list[dict] | None) -> str:
    """What discovery found, for a run with nothing declared (``""`` when discovery did not run): the used
    shortcuts (and a label-word prompt's template elements that move predictions) lead, so the page never
    says "only task quality was measured" beside a found shortcut."""
    if discovered is None:
        return ""
    used = [d for d in discovered if d.get("verdict") in ("used shortcut", "format moves predictions")]
    if used:
        names = ", ".join(f'"{d.get("feature")}"' + (f' → {d.get("class")}' if d.get("class") else "") for d in used)
        return (f"No spurious features were configured, but discovery found {len(used)} shortcut"
                f"{'s' if len(used) != 1 else ''} the model uses: {names} (see Shortcuts found).")
    return ("No spurious features were configured, and discovery found no shortcut the model uses; task quality "
            "and layer comparisons follow.")


def headline_verdict(features: list[dict], nothing_planted: str, discovered: list[dict] | None = None) -> str:
    """The run's one-paragraph verdict: the first sentence of each feature's verdict; with nothing declared,
    what discovery found (:func:`discovery_lead`), else ``nothing_planted``."""
    if not features:
        return discovery_lead(discovered) or nothing_planted
    return " ".join(f["verdict"].split(". ")[0].rstrip(".") + "." for f in features)
