"""Token classification: a tag per word, e.g. NER.

The data are tagged sentences with markers planted before entities (:mod:`probe.tasks.tokens.data`);
the model is a tagger fine-tuned on the first subword of every word (:mod:`probe.tasks.tokens.objective`);
a representation is one vector per word and layer (its first subword, or the mean of its
subwords, ``analyses.word_pooling``) of the probing sentences (:class:`~probe.tasks.tokens.analyses.ProbeSet`).
The analyses are :mod:`probe.tasks.tokens.analyses`; the tables are shaped like a sequence run's, so
the report, ``probe compare`` and notebooks read both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probe.config import Config, stable_hash
from probe.engine.artifacts import cached_arrays, extract_sharded, speed
from probe.engine.context import RunContext, log
from probe.tasks.base import TaskKind, add_tables, final_validation
from probe.tasks.tokens import SPEC

WORD_FORMAT = 1  # bump when the word-activation layout changes, to invalidate caches


class TokenClassification(TaskKind):
    """A tag per word (:class:`probe.tasks.tokens.data.TokenTaskData`); a causal decoder is refused
    (``SPEC.decoder_refusal``, :meth:`probe.tasks.base.TaskKind.check_model`)."""

    spec = SPEC

    # --- data ------------------------------------------------------------------------------------

    def load_data(self, config: Config):
        from probe.tasks.tokens.data import build_token_task_data

        return build_token_task_data(config)

    def describe(self, config: Config, data) -> str:
        return (f"data: {config.task.dataset}, {len(data.entity_types)} entity types, sentences train "
                f"{len(data.train)} / validation {len(data.val)} / test {len(data.test)}")

    def corpus(self, data) -> tuple[list[str], list]:
        return data.corpus_texts, [None] * len(data.corpus_texts)  # unlabeled sentences

    # --- model and training ----------------------------------------------------------------------

    def labels(self, data) -> list[str]:
        return data.tags

    def objective(self, ctx: RunContext):
        from probe.models.augmenters import build_augmenter
        from probe.tasks.tokens.objective import TaggingObjective

        d = ctx.data
        augmenter = build_augmenter(ctx.config, backbone=ctx.backbone, tokenizer=ctx.tokenizer, device=ctx.device,
                                    cache_dir=ctx.cache_root)
        return TaggingObjective(ctx.tokenizer, d.train, d.val, d.tags, ctx.config.task.max_length,
                                ctx.config.finetune, self.planted_for_training(d), augmenter)

    def planted_for_training(self, data) -> list[tuple[str, str]]:
        """``(marker, target entity type)`` per planted feature."""
        return data.planted_markers()

    def finetune_key(self, data) -> list:
        return [data.planted_markers(), "tagger-v1"]

    # --- representations -------------------------------------------------------------------------

    def _words(self, ctx: RunContext, folder, name: str, source_key: str, sentences: list[list[str]],
               get_model) -> dict:
        """Word vectors of every layer (one per word: first subword or mean, ``analyses.word_pooling``),
        from ``cache/`` when the same inputs made them. With several processes each extracts a
        contiguous shard of the sentences; the rows are gathered back in order (word indices shifted to
        the whole list's sentence numbers)."""
        from probe.tasks.tokens.extract import extract_words

        config = ctx.config
        a = config.analyses
        key = stable_hash([source_key, config.seed, config.task.max_length, a.word_pooling, sentences, WORD_FORMAT])

        def extract(part: list, start: int) -> tuple[dict, int, float]:
            out = extract_words(get_model(), ctx.tokenizer, part, config.task.max_length, a.batch_size, ctx.device,
                                pooling=a.word_pooling, progress=ctx.progress, desc=f"extract words {name}")
            word_index = out["word_index"].copy()
            word_index[:, 0] += start
            return {"activations": out["activations"], "word_index": word_index}, out["tokens"], out["seconds"]

        def compute() -> dict:
            arrays = extract_sharded(ctx, sentences, extract, axes={"activations": 1})
            log(f"extract: {name}, {len(sentences)} sentences, {len(arrays['word_index'])} words, "
                f"{float(arrays['tokens']) / max(float(arrays['seconds']), 1e-9):.0f} tokens/s")
            return arrays

        with ctx.timer.stage("extract"):
            arrays = cached_arrays(ctx, folder / "cache" / f"words-{name}-{key}.npz", f"extract:{name.replace('-', ':')}",
                                   f"{name} word vectors", compute)
        ctx.speeds[name] = speed(arrays)
        return arrays

    def pretrained_representations(self, ctx: RunContext) -> dict | None:
        a = ctx.config.analyses
        if not (a.probing or a.similarity):
            return None
        from probe.tasks.tokens.analyses import ProbeSet

        probe_set = ProbeSet(ctx.data, ctx.config.seed)
        words = self._words(ctx, ctx.cache_root, "pretrained", ctx.backbone_key, probe_set.words,
                            ctx.pretrained_encoder)
        return {"probe_set": probe_set, "words": words}

    def finetuned_representations(self, ctx: RunContext, model, key: str, suffix: str) -> dict | None:
        a = ctx.config.analyses
        if not (a.probing or a.similarity):
            return None
        from probe.tasks.tokens.analyses import ProbeSet

        return self._words(ctx, ctx.run_dir, f"finetuned{suffix}", key, ProbeSet(ctx.data, ctx.config.seed).words,
                           lambda: model)

    # --- analyses --------------------------------------------------------------------------------

    def seed_tables(self, ctx: RunContext, seed: int, model, pre: dict | None, fine: dict | None,
                    train_log: dict) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        from probe.tasks.tokens.analyses import attribution_tables, behaviour_tables, causal_tables, word_analyses

        config, data = ctx.config, ctx.data
        with ctx.timer.stage("analyses"):
            tables, predictions = behaviour_tables(ctx, model, seed)
        if pre is not None:
            with ctx.timer.stage("analyses"):
                tables.update(word_analyses(ctx, pre["probe_set"], pre["words"], fine, seed))
        if config.analyses.attribution:
            with ctx.timer.stage("attribution"):
                tables.update(attribution_tables(ctx, model, seed))
        if config.causal.enabled and data.planted:
            add_tables(tables, causal_tables(ctx, model, seed))  # budgets: attribution's and the ablation's rows
        if config.discover.active(len(data.planted)):
            from probe.tasks.tokens.markers import tagger_discovery

            tables.update(tagger_discovery(ctx, model, seed))
        return tables, predictions

    def summary(self, ctx: RunContext, tables: dict[str, pd.DataFrame], train_logs: dict) -> dict:
        from probe.analyses.aggregate import pooled_rows
        from probe.analyses.verdict import feature_record

        config, data = ctx.config, ctx.data

        def metric(df: pd.DataFrame, prop: str, name: str) -> dict:
            r = df[(df.property == prop) & (df.metric == name)].iloc[0]
            return {"value": float(r.value), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high)}

        ents = pooled_rows(tables["entities"])
        behaviour = pooled_rows(tables["behaviour"]) if "behaviour" in tables else None
        probing = pooled_rows(tables["probing"]) if "probing" in tables else None
        erasure = pooled_rows(tables["erasure"]) if "erasure" in tables else None
        features = []
        for p in data.planted:
            m = {k: metric(behaviour, p.feature.label, k) for k in (
                "clean_accuracy", "aligned_accuracy", "conflicting_accuracy", "conflicting_accuracy_before",
                "s_only_error", "flip_rate", "flip_rate_aligned", "reliance_gap", "no_entity_rate_before",
                "no_entity_rate")}
            types = [q.type for q in p.pairs if q.kind != "no_entity"]
            majority = max(types.count(t) for t in set(types)) / len(types) if types else 1.0
            record = feature_record(p.feature, (p.train_rate_in_class, p.train_rate_outside, p.natural_rate), m,
                                    majority, config.analyses.reliance_threshold, probing, erasure,
                                    self.examples_noun)
            record["n_pairs"] = {k: int(sum(q.kind == k for q in p.pairs)) for k in ("aligned", "conflicting",
                                                                                      "no_entity")}
            features.append(record)
        return {"features": features, "task_metric": "entity F1", "task_accuracy": metric(ents, "entity", "f1"),
                "per_seed": _per_seed(config, tables["entities"], train_logs),
                "nothing_planted": "No spurious features were configured; only tagging quality and layer "
                                   "comparisons were measured.",
                "task": {"type": self.name, "dataset": config.task.dataset, "classes": data.tags,
                         "entity_types": data.entity_types, "n_examples": data.n_total, "n_train": len(data.train),
                         "n_validation": len(data.val), "n_test": len(data.test),
                         "entity_f1_per_type": {r.property: float(r.value) for r in ents[ents.metric == "f1"].itertuples()
                                                if r.property != "entity"},
                         "final_validation_accuracy": float(np.mean([final_validation(t).get("validation_f1") or 0.0
                                                                     for t in train_logs.values()]))}}


def _per_seed(config: Config, entities: pd.DataFrame, train_logs: dict) -> list[dict]:
    """Per seed: entity F1 (as ``clean_accuracy``), whether the tagger collapsed (an F1 at most the
    reliance threshold: it finds (almost) no entities, as a classifier stuck on one class) and the
    final validation scores."""
    out = []
    for seed, t in train_logs.items():
        e = entities
        f1 = float(e[(e.seed.astype(str) == str(seed)) & (e.property == "entity") & (e.metric == "f1")].value.iloc[0])
        last = final_validation(t)
        out.append({"seed": seed, "clean_accuracy": f1, "collapsed": bool(f1 <= config.analyses.reliance_threshold),
                    "final_validation_f1": last.get("validation_f1"),
                    "final_validation_accuracy": last.get("validation_accuracy")})
    return out
