"""Issue 25 measurements on a finished run's fine-tuned model: discovery as it was (words only, causal tests
on the held-out test half, no *weakly used* verdict) against discovery now (property slices and position
templates tested by their edits, validation texts in the held-out pool, *weakly used*).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 flock /tmp/heavy.lock python benchmarks/bench_nonword.py \
        examples/default.yaml /work/runs/default/models/finetuned --hide-planted [--set k=v ...]

Prints the verdict counts of both, the seconds of each, and the non-word rows of the new table.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import pandas as pd

from probe.discovery.verdicts import LARGE_EFFECT, MIN_EXAMPLES


def verdict_before(row: dict, q_level: float, min_effect: float) -> str:
    """The verdict rule before issue 25 (no *weakly used*)."""
    ins_ok, del_ok = row["n_insert"] >= MIN_EXAMPLES, row["n_delete"] >= MIN_EXAMPLES
    if ins_ok and row["q_insert"] <= q_level and row["override_effect_ci_low"] > min_effect:
        return "used shortcut"
    if del_ok and row["q_delete"] <= q_level and row["deletion_effect_ci_low"] > min_effect:
        return "used, plausibly task-relevant"
    if ins_ok and del_ok and row["override_effect_ci_high"] < LARGE_EFFECT \
            and row["deletion_effect_ci_high"] < LARGE_EFFECT:
        return "correlated but not used" if row["source"] != "model" else "not used"  # model-only: not significant
    return "inconclusive"


def candidates(data, d) -> None:
    """The property slices and templates of the training split, with z, as discovery counts them."""
    from probe.discovery.candidates import mark_significant, property_association, word_association
    from probe.discovery.nonword import select_nonword
    from probe.discovery.templates import template_association

    parts = [f(data.train_texts, data.train_labels, data.classes, d.min_count)
             for f in (word_association, property_association, template_association)]
    table = mark_significant(pd.concat(parts, ignore_index=True), d.alpha)
    nonword = table[table.kind.isin(["property", "prefix", "suffix"])]
    print(f"{len(table)} (feature, class) rows, z threshold {table.z_threshold.iloc[0]:.2f}; templates in >= "
          f"{d.min_count} texts: {nonword[nonword.kind != 'property'].feature.nunique()}")
    print(nonword[nonword.significant].sort_values("z", ascending=False)[
        ["feature", "kind", "class", "count", "share", "z"]].to_string())
    print("tested:", select_nonword(table, max(1, d.max_candidates // 2)))


def main() -> None:
    import torch

    from probe.config.loading import load_config
    from probe.discovery.discover import discover
    from probe.models.backbones import load_encoder, load_tokenizer
    from probe.models.strategies import load_trained
    from probe.tasks.sequence.data import build_task_data

    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("model")
    p.add_argument("--hide-planted", action="store_true")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--only", choices=["before", "after"], help="run one of the two (default: both)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (2 to compare with a run's "
                   "fine-tuning seconds on this 2-core machine)")
    p.add_argument("--candidates", action="store_true", help="only the non-word candidates of the training data "
                   "(no model: seconds)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.set)
    data = build_task_data(config)
    if args.candidates:
        return candidates(data, config.discover)
    tok = load_tokenizer(config.model.backbone)
    model = load_trained(args.model, config.model.backbone, data.classes, config.finetune, seed=config.seed)
    d = config.discover
    common = dict(reference=load_encoder(config.model.backbone, config.seed).eval(), max_length=config.task.max_length,
                  planted={p.feature.token: data.classes[p.target] for p in data.planted},
                  hide_planted=args.hide_planted, min_count=d.min_count, alpha=d.alpha,
                  max_candidates=d.max_candidates, n_examples=d.n_examples, controls=d.controls, q=d.q,
                  bootstrap=d.bootstrap, seed=d.seed + config.seed, min_effect=d.min_effect, device="cpu")
    args_ = (model, tok, data.train_texts, data.train_labels, data.test_texts, data.test_labels, data.classes)
    t0 = time.perf_counter()
    if args.only != "after":
        before = discover(*args_, properties=False, templates=False, **common)
        tb = before[before.n_insert.notna()]
        old = Counter(verdict_before(r, d.q, d.min_effect) for r in tb.to_dict("records"))
        print(f"before (words, test half, old verdicts): {len(tb)} tested, {dict(old)}; "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    if args.only == "before":
        return
    t1 = time.perf_counter()
    after = discover(*args_, validation_texts=data.val_texts, validation_labels=data.val_labels, **common)
    t2 = time.perf_counter()
    ta = after[after.n_insert.notna()]
    words = ta[ta.kind.isin(["word", "bigram"])]
    print(f"after, words: {len(words)} tested, {dict(Counter(words.verdict))}")
    print(f"after, all: {len(ta)} tested, {dict(Counter(ta.verdict))}; {t2 - t1:.0f} s")
    nonword = after[after.kind.isin(["property", "prefix", "suffix"])]
    cols = ["feature", "kind", "class", "count", "z", "n_insert", "override_rate", "override_control",
            "n_delete", "deletion_drop", "deletion_control", "q_value", "verdict"]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_rows", 60):
        print(nonword[[c for c in cols if c in nonword]].to_string())
        print(ta[["feature", "kind", "class", "n_insert", "n_delete", "override_effect", "deletion_effect", "q_value",
                  "verdict"]].to_string())


if __name__ == "__main__":
    main()
