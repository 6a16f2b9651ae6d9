"""Text classification (and text pairs, whose kind reuses this) answered with label words (``model.head:
label-words``): the tables only such a model has. The pretrained LM answers the same prompt zero-shot (``zero_shot``: its accuracy and its behaviour on
the same counterfactual pairs, next to the fine-tuned model's ``behaviour``), both are read under format
variants of the template (``prompt_format``, :mod:`probe.analyses.prompt_format`), and with discovery on,
each template element is a candidate with an edit and a control edit (``discovery_prompt``,
:mod:`probe.discovery.prompt_elements`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from probe.engine.context import RunContext, log


def label_word_tables(ctx: RunContext, seed: int, model) -> dict[str, pd.DataFrame]:
    """``zero_shot`` and (``analyses.prompt_format``) ``prompt_format`` of one seed; ``model`` is the
    fine-tuned :class:`~probe.models.label_words.LabelWordModel`."""
    from probe.analyses.prompt_format import prompt_format_table
    from probe.models.batching import predict_logits
    from probe.tasks.sequence.analyses import behaviour_table

    config, data, a = ctx.config, ctx.data, ctx.config.analyses
    pretrained = ctx.pretrained_encoder(seed).eval().to(ctx.device)

    def predict(texts: list[str]) -> np.ndarray:
        return predict_logits(pretrained, ctx.tokenizer, texts, config.task.max_length, a.batch_size,
                              ctx.device).argmax(1)

    preds = {"clean": predict(data.test_texts)}
    for p in data.planted:
        preds[p.feature.label] = predict(p.inserted)
    zero = behaviour_table(config, data, preds, seed).assign(model="pretrained")
    acc = float((preds["clean"] == data.test_labels).mean())
    log(f"label words: pretrained zero-shot accuracy {acc:.3f}")
    tables = {"zero_shot": zero}
    if a.prompt_format:
        with ctx.timer.stage("prompt format"):
            tables["prompt_format"] = prompt_format_table(
                {"pretrained": pretrained.lm, "finetuned": model.lm}, ctx.tokenizer, data.test_texts,
                data.test_labels, ctx.kind.labels(data), config.task.max_length, a.batch_size, ctx.device,
                a.bootstrap_samples, seed)
    if config.discover.active(len(data.planted)):
        from probe.discovery.prompt_elements import template_discovery

        d = config.discover
        with ctx.timer.stage("discovery"):
            tables["discovery_prompt"] = template_discovery(
                model.lm, ctx.tokenizer, data.test_texts, ctx.kind.labels(data), config.task.max_length,
                a.batch_size, ctx.device, d.n_examples, d.bootstrap, d.q, d.min_effect, d.seed + seed)
    return tables


def label_word_summary(config, tables: dict[str, pd.DataFrame]) -> dict:
    """``summary.label_words``: the prompt and words, the pretrained model's zero-shot accuracy (pooled over
    seeds) and, with format variants, each model's accuracy spread across them."""
    from probe.analyses.aggregate import pooled_rows

    def record(df: pd.DataFrame, **match) -> dict | None:
        rows = pooled_rows(df)
        for k, v in match.items():
            rows = rows[rows[k] == v]
        if not len(rows):
            return None
        r = rows.iloc[0]
        return {"value": float(r.value), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high)}

    out = {"prompt": config.task.prompt, "label_words": config.task.label_words,
           "zero_shot_accuracy": record(tables["zero_shot"], property="task", metric="clean_accuracy")}
    if "prompt_format" in tables:
        out["format_spread"] = {m: record(tables["prompt_format"], model=m, metric="format_spread")
                                for m in ("pretrained", "finetuned")}
    return out
