"""Text pairs: a sequence classifier whose input is two texts.

Everything the sequence kind does with texts it does with pairs, because the shared tokenizer encodes a
``(first, second)`` tuple as a pair (:mod:`probe.models.pair_tokens`): fine-tuning, pooled
representations (one vector per pair and layer), predictions and the causal predictor. What differs is
the data (:mod:`probe.tasks.pairs.task`), the analyses that need words of one text
(:mod:`probe.tasks.pairs.analyses`), the tests particular to pairs (partial input, relational
properties and discovery per side), attribution split by side (:mod:`probe.tasks.pairs.attribution`;
ERASER faithfulness re-predicts pairs, :mod:`probe.analyses.faithfulness`), invariance perturbations on
each side in turn, and concept erasure with the planted token's pieces taken on its side only. A causal LM
answering with label words reads each pair as a prompt with ``{text}`` and ``{text_pair}``
(:mod:`probe.models.label_words`) and adds the sequence kind's label-word tables
(:mod:`probe.tasks.sequence.label_words`).
"""

from __future__ import annotations

import pandas as pd

from probe.config import Config
from probe.engine.context import RunContext, log
from probe.tasks.pairs import SPEC
from probe.tasks.base import add_tables
from probe.tasks.sequence.kind import SequenceClassification, prediction_rows


class TextPairClassification(SequenceClassification):
    """One label per pair of texts (:class:`probe.tasks.pairs.task.PairData`)."""

    spec = SPEC

    def load_data(self, config: Config):
        from probe.tasks.pairs.task import build_pair_data

        return build_pair_data(config)

    def describe(self, config: Config, data) -> str:
        return (f"data: {config.task.dataset}, pairs, {len(data.classes)} classes, train {len(data.train_texts)} / "
                f"validation {len(data.val_texts)} / test {len(data.test_texts)}")

    def finetune_key(self, data) -> list:
        return [[[p.feature.token, p.feature.side, int(p.target), p.feature.max_position] for p in data.planted],
                "pairs-v1"]

    invariance_sides = ("first", "second")

    def pair_metrics(self, ctx: RunContext, seed: int):
        from probe.tasks.pairs.attribution import pair_metrics_for

        return pair_metrics_for(ctx.data, ctx.config.analyses.bootstrap_samples, seed)

    def seed_tables(self, ctx: RunContext, seed: int, model, pre, fine: dict,
                    train_log: dict) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        from probe.tasks.pairs.analyses import pair_tests, representation_tables
        from probe.tasks.sequence.analyses import causal_tables

        config = ctx.config
        with ctx.timer.stage("analyses"):
            tables = representation_tables(ctx, seed, pre, fine, train_log)
            predictions = prediction_rows(ctx.data, fine["predictions"], seed)
        self.attribution_and_invariance(ctx, seed, model, pre, tables)
        if config.model.head == "label-words":
            from probe.tasks.sequence.label_words import label_word_tables

            tables.update(label_word_tables(ctx, seed, model))
        tables.update(pair_tests(ctx, model, seed))
        if config.causal.enabled:
            add_tables(tables, causal_tables(ctx, model, seed))  # budgets: attribution's and the ablation's rows
        return tables, predictions

    def summary(self, ctx: RunContext, tables: dict[str, pd.DataFrame], train_logs: dict) -> dict:
        from probe.analyses.aggregate import pooled_rows

        out = super().summary(ctx, tables, train_logs)
        partial = pooled_rows(tables["partial_input"])
        partial = partial[(partial.partition == "clean") & (partial.model == "finetuned")]
        out["partial_input"] = {r.property: {"value": float(r.value), "ci_low": float(r.ci_low),
                                             "ci_high": float(r.ci_high)}
                                for r in partial[partial.metric == "accuracy"].itertuples()}
        rel = tables["relations"]
        out["relations"] = [{"feature": r.feature, "class": r["class"], "verdict": r.verdict}
                            for _, r in rel.drop_duplicates("feature").iterrows()] if "verdict" in rel else []
        from probe.models.pair_tokens import cut_sides

        used = [r["feature"] for r in out["relations"] if r["verdict"] in ("used shortcut",
                                                                          "used, plausibly task-relevant")]
        out["nothing_planted"] = ("No spurious features were configured; task quality, layer comparisons, partial-input "
                                  "and relational tests were measured; relational properties used: "
                                  f"{', '.join(used) or 'none'}.")
        if "attribution" in tables:  # where the fine-tuned model looks on clean pairs, per method
            att = pooled_rows(tables["attribution"])
            att = att[(att.model == "finetuned") & (att.partition == "clean") & (att.metric == "first_side_share")]
            out["attribution_first_side_share"] = {r.method: {"value": float(r.value), "ci_low": float(r.ci_low),
                                                              "ci_high": float(r.ci_high)} for r in att.itertuples()}
        out["task"]["pair_negatives"] = ctx.config.task.pair_negatives
        cut = cut_sides(ctx.tokenizer, ctx.data.tables["test"].pairs, ctx.config.task.max_length)
        out["task"]["test_pairs_cut"] = cut  # pairs whose first / second text lost tokens to truncation
        if cut["first"] or cut["second"]:
            log(f"pairs: truncation at task.max_length {ctx.config.task.max_length} cut the first text of "
                f"{cut['first']} and the second of {cut['second']} of the {len(ctx.data.test_texts)} test pairs")
        return out
