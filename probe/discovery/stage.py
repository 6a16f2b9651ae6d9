"""The discovery stage of a run: :func:`probe.discovery.discover.discover` on the run's data and model.

Text classification: candidates from the fine-tuning data (``data.train_texts``: the training split as
the model saw it, planted tokens included), causal tests on the clean held-out test split, the
reference being the run's pretrained encoder through a probe head. The tables are ``discovery`` (one
row per feature) and ``discovery_examples`` (edited texts shown in the report). A kind with other
candidates has its own stage in its package (taggers: :func:`probe.tasks.tokens.markers.tagger_discovery`).
"""

from __future__ import annotations

import pandas as pd

from probe.engine.context import RunContext, log
from probe.engine.guard import guarded


@guarded("discovery")
def sequence_discovery(ctx: RunContext, model, seed: int) -> dict[str, pd.DataFrame]:
    """The ``discovery`` and ``discovery_examples`` tables of one fine-tuned classifier."""
    from probe.discovery.discover import discover

    config, data = ctx.config, ctx.data
    d, a = config.discover, config.analyses
    with ctx.timer.stage("discovery"):
        model.to(ctx.device).eval()
        reference = ctx.pretrained_encoder(seed).eval().to(ctx.device)
        table = discover(model, ctx.tokenizer, data.train_texts, data.train_labels, data.test_texts, data.test_labels,
                         data.classes, reference=reference, max_length=config.task.max_length,
                         planted={p.feature.token: data.classes[p.target] for p in data.planted},
                         hide_planted=d.hide_planted, min_count=d.min_count, alpha=d.alpha,
                         max_candidates=d.max_candidates, n_examples=d.n_examples, controls=d.controls, q=d.q,
                         bootstrap=d.bootstrap, seed=d.seed + seed, min_effect=d.min_effect,
                         batch_size=a.batch_size, device=ctx.device, vocabulary=d.vocabulary_on(ctx.given is not None),
                         vocabulary_k=d.vocabulary_k, vocabulary_texts=d.vocabulary_texts,
                         vocabulary_screen=d.vocabulary_screen, vocabulary_tested=d.vocabulary_tested,
                         progress=ctx.progress)
        reference.to("cpu")
    used = table[table.verdict.isin(["used shortcut", "used, plausibly task-relevant"])]
    log(f"discovery: {int(table.n_insert.notna().sum()) if 'n_insert' in table else 0} candidates tested, "
        f"{len(used)} used ({', '.join(used.feature.head(5))}) in {table.attrs['seconds']:.0f} s")
    if "vocabulary_seconds" in table.attrs:
        ctx.timer.seconds["discovery_vocabulary"] = round(table.attrs["vocabulary_seconds"], 3)  # part of discovery
        log(f"discovery: vocabulary search and its tests {table.attrs['vocabulary_seconds']:.0f} s")
    return {"discovery": table, "discovery_examples": table.attrs["examples"]}
