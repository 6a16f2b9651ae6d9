"""Text classification: one label per text (the default task kind).

Representations are one vector per text and layer, pooled by the model adapter (the mean over real
tokens for encoders, the last real token for decoders), of the test texts, the same texts with each
planted token inserted, and the probing set (each test text with or without the token, drawn
independently of the label). The fine-tuned model's logits come from the same forward pass, so the
behaviour tables cost no extra pass. The analyses are :mod:`probe.tasks.sequence.analyses`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probe.config import Config, stable_hash
from probe.engine.artifacts import cached_arrays, extract_sharded, speed
from probe.engine.context import RunContext, log
from probe.engine.guard import guarded
from probe.tasks.base import TaskKind, add_tables, final_validation
from probe.tasks.sequence import SPEC

ACTIVATION_FORMAT = 1  # bump when the pooled-activation layout changes, to invalidate caches


def _unique(texts: list[str]) -> tuple[list[str], dict[str, int]]:
    index: dict[str, int] = {}
    for t in texts:
        index.setdefault(t, len(index))
    return list(index), index


class SequenceClassification(TaskKind):
    """One label per text (:class:`probe.tasks.sequence.data.TaskData`)."""

    spec = SPEC

    # --- data ------------------------------------------------------------------------------------

    def load_data(self, config: Config):
        from probe.tasks.sequence.data import build_task_data

        return build_task_data(config)

    def describe(self, config: Config, data) -> str:
        return (f"data: {config.task.dataset}, {len(data.classes)} classes, train {len(data.train_texts)} / "
                f"validation {len(data.val_texts)} / test {len(data.test_texts)}")

    def corpus(self, data) -> tuple[list[str], list]:
        return data.corpus_texts, data.corpus_labels

    # --- model and training ----------------------------------------------------------------------

    def labels(self, data) -> list[str]:
        return data.classes

    def objective(self, ctx: RunContext):
        from probe.models.augmenters import build_augmenter
        from probe.tasks.sequence.objective import SequenceObjective

        d = ctx.data
        augmenter = build_augmenter(ctx.config, backbone=ctx.backbone, tokenizer=ctx.tokenizer, device=ctx.device,
                                    cache_dir=ctx.cache_root)
        return SequenceObjective(ctx.tokenizer, d.train_texts, d.train_labels, d.val_texts, d.val_labels,
                                 ctx.config.task.max_length, ctx.config.finetune, self.planted_for_training(d),
                                 augmenter)

    def planted_for_training(self, data) -> list[tuple[str, int, int]]:
        """``(token, target class index, max_position)`` per planted feature."""
        return [(p.feature.token, p.target, p.feature.max_position) for p in data.planted]

    def finetune_key(self, data) -> list:
        return [[[p.feature.token, int(p.target), p.feature.max_position] for p in data.planted], "seqcls-v2"]

    # --- representations -------------------------------------------------------------------------

    def _extract(self, ctx: RunContext, folder, name: str, source_key: str, texts: list[str], get_model,
                 with_logits: bool) -> dict:
        """Pooled activations (and logits) of ``texts``, from ``cache/`` when the same inputs made them.

        With several processes each extracts a contiguous shard of ``texts`` and the rows are gathered
        back in order; tokens are summed and the seconds are the slowest shard's."""
        from probe.representations.extract import extract_pooled

        config = ctx.config
        key = stable_hash([source_key, config.seed, config.task.max_length, texts, ACTIVATION_FORMAT])

        def extract(part: list[str], start: int) -> tuple[dict, int, float]:
            out = extract_pooled(get_model(), ctx.tokenizer, part, config.task.max_length,
                                 config.analyses.batch_size, ctx.device, with_logits=with_logits,
                                 progress=ctx.progress, desc=f"extract {name}")
            local = {"activations": out["activations"]}
            if with_logits:
                local["logits"] = out["logits"]
            return local, out["tokens"], out["seconds"]

        def compute() -> dict:
            arrays = extract_sharded(ctx, texts, extract, axes={"activations": 1})
            log(f"extract: {name}, {len(texts)} texts, {float(arrays['tokens']) / float(arrays['seconds']):.0f} "
                "tokens/s")
            return arrays

        with ctx.timer.stage("extract"):
            arrays = cached_arrays(ctx, folder / "cache" / f"activations-{name}-{key}.npz",
                                   f"extract:{name.replace('-', ':')}", f"{name} activations", compute)
        ctx.speeds[name] = speed(arrays)
        return arrays

    def pretrained_representations(self, ctx: RunContext) -> np.ndarray:
        """``[layers, probing texts, d]`` pooled activations of the pretrained model (shared in a sweep)."""
        data = ctx.data
        texts, index = _unique(data.probe_texts)
        pre = self._extract(ctx, ctx.cache_root, "pretrained", ctx.backbone_key, texts, ctx.pretrained_encoder, False)
        return pre["activations"][:, [index[t] for t in data.probe_texts]]

    def finetuned_representations(self, ctx: RunContext, model, key: str, suffix: str) -> dict:
        """The fine-tuned model's pooled activations of the probing texts and its logits of the test texts,
        clean and with each token inserted."""
        data = ctx.data
        texts, index = _unique(data.test_texts + [t for p in data.planted for t in p.inserted] + data.probe_texts)
        fine = self._extract(ctx, ctx.run_dir, f"finetuned{suffix}", key, texts, lambda: model, True)
        preds = {"clean": fine["logits"][[index[t] for t in data.test_texts]].argmax(1)}
        for p in data.planted:
            preds[p.feature.label] = fine["logits"][[index[t] for t in p.inserted]].argmax(1)
        return {"activations": fine["activations"][:, [index[t] for t in data.probe_texts]], "predictions": preds}

    # --- analyses --------------------------------------------------------------------------------

    def seed_tables(self, ctx: RunContext, seed: int, model, pre: np.ndarray, fine: dict,
                    train_log: dict) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        from probe.tasks.sequence.analyses import analyse, causal_tables

        config, data = ctx.config, ctx.data
        with ctx.timer.stage("analyses"):
            tables = analyse(config, data, pre, fine["activations"], fine["predictions"], train_log, seed,
                             ctx.progress)
            predictions = prediction_rows(data, fine["predictions"], seed)
        self.attribution_and_invariance(ctx, seed, model, pre, tables)
        if config.model.head == "label-words":
            from probe.tasks.sequence.label_words import label_word_tables

            tables.update(label_word_tables(ctx, seed, model))
        if config.causal.enabled:
            add_tables(tables, causal_tables(ctx, model, seed))
        if config.discover.active(len(data.planted)):
            from probe.discovery.stage import sequence_discovery

            tables.update(sequence_discovery(ctx, model, seed))
        return tables, predictions

    #: pairs of texts: each invariance perturbation on each side (:func:`~probe.tasks.sequence.analyses.invariance_table`)
    invariance_sides: tuple = (None,)

    def pair_metrics(self, ctx: RunContext, seed: int):
        """The attribution metrics that replace the token metrics (pairs); ``None``: the sequence kind's."""
        return None

    def attribution_and_invariance(self, ctx: RunContext, seed: int, model, pre: np.ndarray,
                                   tables: dict[str, pd.DataFrame]) -> None:
        """Invariance rows (into ``behaviour``) and attribution tables, added to ``tables``."""
        a = ctx.config.analyses
        if not (a.attribution or a.invariance):
            return
        add_tables(tables, _attribution_stage(ctx, model, seed, pre, self.invariance_sides,
                                              self.pair_metrics(ctx, seed)))

    def summary(self, ctx: RunContext, tables: dict[str, pd.DataFrame], train_logs: dict) -> dict:
        from probe.analyses.aggregate import pooled_rows
        from probe.analyses.verdict import feature_record

        config, data = ctx.config, ctx.data
        a = config.analyses
        b = pooled_rows(tables["behaviour"])

        def metric(prop: str, name: str) -> dict:
            r = b[(b.property == prop) & (b.metric == name)].iloc[0]
            return {"value": float(r.value), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high)}

        majority_rate = _majority_rate(data.test_labels)
        features = []
        if a.behaviour:
            probing = pooled_rows(tables["probing"]) if "probing" in tables else None
            erasure = pooled_rows(tables["erasure"]) if "erasure" in tables else None
            for p in data.planted:
                metrics = {m: metric(p.feature.label, m) for m in (
                    "clean_accuracy", "aligned_accuracy", "conflicting_accuracy", "conflicting_accuracy_before",
                    "s_only_error", "flip_rate", "flip_rate_aligned", "reliance_gap")}
                features.append(feature_record(p.feature, (p.train_rate_in_class, p.train_rate_outside,
                                                           p.natural_rate),
                                               metrics, majority_rate, a.reliance_threshold, probing, erasure))
        behaviour = tables["behaviour"]
        per_seed = []
        for s in config.run_seeds:
            acc = float(behaviour[(behaviour.seed.astype(str) == str(s)) & (behaviour.property == "task")].value.iloc[0])
            per_seed.append({"seed": s, "clean_accuracy": acc,
                             "collapsed": bool(acc <= majority_rate + a.reliance_threshold),
                             "final_validation_accuracy": final_validation(train_logs[s]).get("validation_accuracy")})
        out = {
            "features": features, "task_metric": "accuracy", "task_accuracy": metric("task", "clean_accuracy"),
            "per_seed": per_seed, "majority_rate": majority_rate,
            "nothing_planted": "No spurious features were configured; only task quality and layer comparisons "
                               "were measured.",
            "task": {"dataset": config.task.dataset, "classes": data.classes, "n_examples": data.n_total,
                     "n_train": len(data.train_texts), "n_validation": len(data.val_texts),
                     "n_test": len(data.test_texts),
                     "final_validation_accuracy": float(np.mean([p["final_validation_accuracy"] for p in per_seed]))},
        }
        if "zero_shot" in tables:
            from probe.tasks.sequence.label_words import label_word_summary

            out["label_words"] = label_word_summary(config, tables)
        return out


@guarded("attribution")
def _attribution_stage(ctx: RunContext, model, seed: int, pre: np.ndarray, invariance_sides: tuple,
                       pair_metrics) -> dict[str, pd.DataFrame]:
    """Invariance rows (added to ``behaviour``) and the attribution tables, as configured; a failure is
    recorded and the run goes on (:func:`probe.engine.guard.guarded`)."""
    from probe.tasks.sequence.analyses import attribution_tables, invariance_table

    config, data, a = ctx.config, ctx.data, ctx.config.analyses
    extra = {}
    with ctx.timer.stage("attribution"):
        if a.invariance:
            extra["behaviour"] = invariance_table(config, data, model, ctx.tokenizer, seed, invariance_sides)
        if a.attribution:
            extra.update(attribution_tables(config, data, ctx.pretrained_encoder(), model, ctx.tokenizer, pre, seed,
                                            ctx.progress, pair_metrics))
    return extra


def _majority_rate(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent test class."""
    return float(np.bincount(labels).max() / len(labels))


def prediction_rows(data, preds: dict[str, np.ndarray], seed: int) -> pd.DataFrame:
    """Per test example: its label and the fine-tuned prediction on the clean text (partition
    ``clean``) and with each planted token inserted (partition = the feature's name); class indices
    into ``summary.task.classes``. ``probe compare`` pairs these across runs."""
    n = len(data.test_labels)
    return pd.concat([pd.DataFrame({"seed": seed, "partition": part, "example": np.arange(n),
                                    "label": data.test_labels, "prediction": np.asarray(p, dtype=np.int64)})
                      for part, p in preds.items()], ignore_index=True)
