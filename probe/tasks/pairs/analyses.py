"""The analyses of a text-pair run, per fine-tuning seed.

What the sequence kind runs on pooled representations and predictions runs unchanged
(:func:`probe.tasks.sequence.analyses.analyse`: behaviour and reliance on each planted token, probing
with control tasks, MDL, CKA), the natural properties computed on the two texts joined; probing adds
the relational properties (:mod:`probe.tasks.pairs.relations`). Then, particular to pairs:

- ``partial_input``: the model without its first or second text (:mod:`probe.tasks.pairs.partial`), on
  the clean test pairs (partition ``clean``) and, per planted token, on the other-class test pairs with
  the token inserted (partition = the feature; ``target_rate``: the share predicted as its class, so a
  rate that stays high with the other text emptied says the token's side alone decides; a replaced
  side comes from another clean pair, so replacing the token's side removes the token); a label-word run
  adds the pretrained LM answering zero-shot (model ``pretrained``) on the clean pairs;
- ``relations``: each relational property's edit against its control (:mod:`probe.tasks.pairs.discovery`),
  with discovery's verdicts; with discovery on, ``discovery`` also holds the per-side word candidates;

Attribution, invariance, concept erasure and ablation are the sequence kind's, run on pairs by
:class:`probe.tasks.pairs.kind.TextPairClassification`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from probe.engine.context import RunContext, log
from probe.tasks.pairs.data import PairTable
from probe.tasks.pairs.task import joined

def pair_scorer(model, tokenizer, max_length: int, batch_size: int, device):
    """``(firsts, seconds) -> P(class) [N, K]`` of a pair classifier."""
    from probe.models.batching import predict_logits

    def score(firsts: list[str], seconds: list[str]) -> np.ndarray:
        logits = predict_logits(model, tokenizer, list(zip(firsts, seconds)), max_length, batch_size, device)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return score


def representation_tables(ctx: RunContext, seed: int, pre: np.ndarray, fine: dict, train_log: dict) -> dict:
    """The sequence kind's behaviour, probing, MDL and CKA tables, plus probes for the relational properties."""
    from probe.analyses.control_tasks import document_type
    from probe.analyses.probing import probe_split, probe_suite
    from probe.tasks.pairs.relations import relation_labels, relation_values
    from probe.tasks.sequence.analyses import analyse

    config, data = ctx.config, ctx.data
    a = config.analyses
    view = replace(data, test_texts=[joined(p) for p in data.test_texts],
                   probe_texts=[joined(p) for p in data.probe_texts])
    tables = analyse(config, view, pre, fine["activations"], fine["predictions"], train_log, seed, ctx.progress)
    if a.probing:
        test = data.tables["test"]
        values = relation_values([p[0] for p in data.probe_texts], [p[1] for p in data.probe_texts],
                                 test.first_source or None, test.second_source or None)
        labels = {n: y for n, y in relation_labels(values)[0].items() if np.unique(y).size > 1}
        if labels:
            train_idx, test_idx = probe_split(data.test_labels, seed)
            rows = probe_suite({"pretrained": pre, "finetuned": fine["activations"]}, labels,
                               [document_type(t) for t in view.test_texts], train_idx, test_idx,
                               a.probe_family, a.probe_C, a.probe_max_iter, a.bootstrap_samples, seed,
                               a.control_tasks, ctx.progress)
            tables["probing"] = pd.concat([tables["probing"], rows], ignore_index=True)
    return tables


def pair_tests(ctx: RunContext, model, seed: int) -> dict[str, pd.DataFrame]:
    """``partial_input``, ``relations`` and (with discovery on) ``discovery`` of one fine-tuned model."""
    from probe.tasks.pairs.discovery import discover_pairs
    from probe.tasks.pairs.partial import partial_input_table

    config, data = ctx.config, ctx.data
    a, d = config.analyses, config.discover
    model.to(ctx.device).eval()
    score = pair_scorer(model, ctx.tokenizer, config.task.max_length, a.batch_size, ctx.device)
    test = data.tables["test"]
    out = {}
    with ctx.timer.stage("partial input"):
        frames = [partial_input_table(score, test.firsts, test.seconds, test.labels, n_boot=a.bootstrap_samples,
                                      seed=seed).assign(partition="clean")]
        for p in data.planted:  # other-class pairs with the token: how many still go to its class, per condition
            idx = np.flatnonzero(data.test_labels != p.target)
            if idx.size < 2:
                continue
            pairs = [p.inserted[i] for i in idx]
            clean = ([test.firsts[i] for i in idx], [test.seconds[i] for i in idx])  # a replaced side loses the token
            rows = partial_input_table(score, [x for x, _ in pairs], [y for _, y in pairs], np.full(idx.size, p.target),
                                       n_boot=a.bootstrap_samples, seed=seed, donors=clean)
            rows["metric"] = rows["metric"].replace({"accuracy": "target_rate"})
            frames.append(rows[rows.metric != "retained"].assign(partition=p.feature.label))
        if config.model.head == "label-words":  # the reference, the pretrained LM answering zero-shot, alike
            zero = pair_scorer(ctx.pretrained_encoder(seed).eval().to(ctx.device), ctx.tokenizer,
                               config.task.max_length, a.batch_size, ctx.device)
            frames.append(partial_input_table(zero, test.firsts, test.seconds, test.labels, n_boot=a.bootstrap_samples,
                                              seed=seed, model="pretrained").assign(partition="clean"))
        out["partial_input"] = pd.concat(frames, ignore_index=True)
    src = data.tables["train"]
    train = PairTable([p[0] for p in data.train_texts], [p[1] for p in data.train_texts], data.train_labels,
                      data.classes, src.first_source, src.second_source, src.groups, src.articles)
    active = config.discover.active(len(data.planted))
    with ctx.timer.stage("discovery" if active else "relations"):
        table = discover_pairs(
            score, train, test, planted={f"{p.feature.side}:{p.feature.token}": data.classes[p.target]
                                         for p in data.planted},
            hide_planted=d.hide_planted if active else True, min_count=d.min_count, alpha=d.alpha,
            max_candidates=d.max_candidates if active else 0, n_examples=d.n_examples, controls=d.controls, q=d.q,
            bootstrap=d.bootstrap, seed=d.seed + seed, min_effect=d.min_effect)
    relations = table[table.kind == "relation"].reset_index(drop=True) if "kind" in table else table
    out["relations"] = relations
    if active:
        out["discovery"] = table
        out["discovery_examples"] = table.attrs["examples"]
    used = relations[relations.verdict.isin(["used shortcut", "used, plausibly task-relevant"])]
    log(f"pairs: partial input and {len(relations)} relational tests; used: {', '.join(used.feature) or 'none'}")
    return out

