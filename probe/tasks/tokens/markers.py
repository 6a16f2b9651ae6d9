"""Discovery for taggers: marker words, the word right before an entity (docs/design.md §8), and the
run's discovery stage for taggers (:func:`tagger_discovery`).

Candidates: :func:`probe.discovery.candidates.marker_counts` on the training sentences (z per word
type and entity type, Bonferroni at ``alpha``), most significant first. The causal test works on entity
spans of held-out sentences, reading the predicted type of a span's first word (argmax tag):

- insertion: w is inserted right before spans whose gold type is not T, that the tagger does not already
  type as T and that w does not already precede; override = the span's first word is now typed T. Each
  control word (no marker association, similar frequency) goes to the same place;
- deletion: w is removed before spans of type T that it precedes; drop = [typed T before] − [typed T
  after], compared with deleting a random other word before the span.

Paired bootstrap intervals, sign-flip p-values and Benjamini–Hochberg as for text classification
(:mod:`probe.discovery.causal_test`); model-side candidates (attribution amplification) are not drawn
for taggers. A capitalised word and the token-level properties of a span (capitalised, all caps, a digit, first in
the sentence) are candidates too, tested by edits against control edits (:mod:`probe.tasks.tokens.property_test`),
in the same Bonferroni and Benjamini–Hochberg families. With ``vocabulary``, whole words the tagger's gradient
ranks as triggers before an entity join with source "vocabulary" (:mod:`probe.tasks.tokens.vocabulary`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from probe.discovery.candidates import mark_significant, marker_counts, word_key
from probe.discovery.causal_test import NO_CONTROLS, paired_interval, sign_flip_pvalue
from probe.engine.context import RunContext, log
from probe.engine.guard import guarded
from probe.tasks.tokens.property_test import EXAMPLE_COLUMNS, PropertyTester, property_rows
from probe.tasks.tokens.reference import reference_marker_rates
from probe.tasks.tokens.span_edits import span_counts
from probe.tasks.tokens.vocabulary import marker_vocabulary, ranking_split, screened_by_type, vocabulary_rows
from probe.tasks.tokens.word_shape import shape_counts


def _spans(sentences) -> list[tuple[int, int, str]]:
    from probe.tasks.tokens.tagging import entity_spans

    return [(i, s, e, t) for i, sent in enumerate(sentences) for s, e, t in entity_spans(sent.tags)]


class _TypePredictor:
    def __init__(self, model, tokenizer, tags: Sequence[str], max_length: int, batch_size: int, device) -> None:
        self.args = (model, tokenizer)
        self.tags, self.max_length, self.batch_size, self.device = list(tags), max_length, batch_size, device

    def __call__(self, sentences: list[list[str]], positions: Sequence[int]) -> list[str | None]:
        """The predicted entity type of word ``positions[i]`` of sentence i (None: O or cut off)."""
        from probe.tasks.tokens.objective import predict_word_tags
        from probe.tasks.tokens.tagging import tag_type

        if not sentences:
            return []
        pred = predict_word_tags(*self.args, sentences, self.max_length, self.batch_size, self.device)
        return [tag_type(self.tags[p[k]]) if p[k] >= 0 else None for p, k in zip(pred, positions)]


def _test_marker(w: str, t: str, test, spans, clean_types, controls: list[str], predict, n_examples: int,
                 n_boot: int, rng: np.random.Generator) -> dict:
    """Insertion and deletion effects of marker ``w`` for entity type ``t`` (module docstring)."""
    keys = [[word_key(x) for x in s.words] for s in test]
    ins = [k for k, (i, s, _, typ) in enumerate(spans)
           if typ != t and clean_types[k] != t and not (s > 0 and keys[i][s - 1] == w)]
    ins = ins[: n_examples] if len(ins) <= n_examples else sorted(rng.choice(ins, n_examples, replace=False))
    dele = [k for k, (i, s, _, typ) in enumerate(spans) if typ == t and s > 0 and keys[i][s - 1] == w][: n_examples]

    def insert(k: int, word: str) -> list[str]:
        i, s = spans[k][:2]
        return list(test[i].words[:s]) + [word] + list(test[i].words[s:])

    texts = [insert(k, x) for x in [w] + controls for k in ins]
    types = predict(texts, [spans[k][1] + 1 for _ in range(len(controls) + 1) for k in ins])
    hit = (np.array(types) == t).astype(float).reshape(len(controls) + 1, len(ins))
    override, ctrl = hit[0], hit[1:].mean(0) if controls else np.zeros(len(ins))
    dl, dc, pos, cpos = [], [], [], []
    for k in dele:
        i, s, e, _ = spans[k]
        words = list(test[i].words)
        dl.append(words[: s - 1] + words[s:])
        pos.append(s - 1)
        before_span = [j for j in range(s - 1) if keys[i][j] != w]
        pool = before_span or list(range(e, len(words)))  # else a word after the span
        j = int(rng.choice(pool)) if pool else None
        dc.append(words if j is None else words[:j] + words[j + 1:])
        cpos.append(s - 1 if j is not None and j < s else s)
    after = np.array([x == t for x in predict(dl + dc, pos + cpos)], dtype=float)
    before = np.array([clean_types[k] == t for k in dele], dtype=float)
    drop, ctrl_drop = before - after[: len(dele)], before - after[len(dele):]
    out = {"n_insert": len(ins), "n_delete": len(dele), "controls": " ".join(controls)}
    out.update(paired_interval("override_rate", override, n_boot, rng))
    out["override_control"] = float(ctrl.mean()) if len(ins) else float("nan")
    out.update(paired_interval("override_effect", override - ctrl, n_boot, rng))
    out.update(paired_interval("deletion_drop", drop, n_boot, rng))
    out["deletion_control"] = float(ctrl_drop.mean()) if len(dele) else float("nan")
    out.update(paired_interval("deletion_effect", drop - ctrl_drop, n_boot, rng))
    out["p_insert"] = sign_flip_pvalue(override - ctrl, n_boot, rng) if len(ins) else float("nan")
    out["p_delete"] = sign_flip_pvalue(drop - ctrl_drop, n_boot, rng) if len(dele) else float("nan")
    return out


def discover_markers(model, tokenizer, train, test, tags: Sequence[str], *, max_length: int = 64,
                     planted: dict[str, str] | None = None, hide_planted: bool = False, min_count: int = 20,
                     alpha: float = 0.01, max_candidates: int = 20, n_examples: int = 150, controls: int = 5,
                     q: float = 0.05, bootstrap: int = 1000, seed: int = 0, min_effect: float = 0.1,
                     batch_size: int = 64, device=None, vocabulary: bool = False, vocabulary_sentences=None,
                     reference=None, progress: bool = False, **search) -> pd.DataFrame:
    """Marker words of a tagger (module docstring): tested rows ranked by override effect, then the
    untested significant markers. ``train`` / ``test``: tagged sentences (``words``, BIO ``tags``). With
    ``vocabulary``, whole words that the tagger's gradient ranks as triggers before an entity join with source
    "vocabulary" (:mod:`probe.tasks.tokens.vocabulary`; ``search``: its ``k``, ``n_texts``, ``n_screen``,
    ``per_class``, ``min_screen``), ranked and screened on ``vocabulary_sentences`` (held-out sentences the
    tests do not use; None: half of ``test``); a used one gets the pretrained ``reference``'s override rate
    (:mod:`probe.tasks.tokens.reference`)."""
    import time

    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 73])
    types = sorted({t for _, _, _, t in _spans(train)})
    starts = []
    for sent in train:
        row: list[str | None] = [None] * len(sent.words)
        for s, _, t in ((s, e, t) for _, s, e, t in _spans([sent])):
            row[s] = t
        starts.append(row)
    words = [s.words for s in train]
    data = mark_significant(pd.concat([marker_counts(words, starts, types, min_count),
                                       shape_counts(words, starts, types, min_count),
                                       span_counts(train, types, min_count)], ignore_index=True), alpha)
    planted = {word_key(k): v for k, v in (planted or {}).items()}
    sig = data[data.significant & (data.kind == "marker")].sort_values("z", ascending=False).drop_duplicates("feature")
    chosen = [] if hide_planted else [(w, t) for w, t in planted.items()]
    chosen += [(w, t) for w, t in zip(sig.feature, sig["class"]) if w not in dict(chosen)]
    chosen = chosen[:max_candidates]
    device = next(model.parameters()).device if device is None else device
    predict = _TypePredictor(model, tokenizer, tags, max_length, batch_size, device)
    if vocabulary:
        v_rng, t_vocab = np.random.default_rng([seed, 79]), time.perf_counter()
        ranking, test = ranking_split(test, vocabulary_sentences, v_rng)
        found, vocab = marker_vocabulary(model, tokenizer, ranking, tags, types, max_length=max_length,
                                         batch_size=batch_size, device=device, rng=v_rng, progress=progress,
                                         exclude={w for w, _ in chosen}, **search)
        t_vocab = time.perf_counter() - t_vocab
    spans = _spans(test)
    clean_types = predict([list(test[i].words) for i, *_ in spans], [s for _, s, _, _ in spans])
    stats = data.groupby("feature").agg(count=("count", "first"), zmax=("z", lambda z: np.abs(z).max()))
    quiet = stats[(stats.zmax < 1) & stats.index.str.isalpha() & ~stats.index.isin([w for w, _ in chosen])]
    rows = []
    for w, t in chosen:
        count = stats["count"].get(w, min_count)
        near = quiet.index[np.abs(np.log2(quiet["count"].to_numpy(dtype=float) / count)) <= 1].tolist() or quiet.index.tolist()
        ctrl = sorted(rng.choice(near, min(controls, len(near)), replace=False).tolist()) if near else []
        source = "planted" if w in planted and not hide_planted else "data"
        if not ctrl:  # nothing to compare with: not tested, inconclusive (as for text classification)
            rows.append({"feature": w, "kind": "marker", "class": t, "source": source, "controls": "", "n_insert": 0,
                         "n_delete": 0, "p_insert": np.nan, "p_delete": np.nan, "note": NO_CONTROLS})
            continue
        rows.append({"feature": w, "kind": "marker", "class": t, "source": source,
                     **_test_marker(w, t, test, spans, clean_types, ctrl, predict, n_examples, bootstrap, rng)})
    if vocabulary:  # triggers from the vocabulary, against whole words of their tokenizer-rank band
        chosen, t_rows = chosen + [(w, types[c]) for w, c in zip(found.word, found["class"])], time.perf_counter()
        rows += vocabulary_rows(found, vocab, types, {w for w, _ in chosen}, controls, lambda w, t, ctrl: _test_marker(
            w, t, test, spans, clean_types, ctrl, predict, n_examples, bootstrap, rng))
        t_vocab += time.perf_counter() - t_rows
    tester = PropertyTester(test, spans, clean_types, types, predict, tokenizer, quiet.index.tolist())
    more, more_rows, examples = property_rows(data, tester, max_candidates, n_examples, bootstrap, rng)  # issue 25
    chosen += more
    rows += more_rows
    table = _marker_table(rows, data, chosen, planted, q, min_effect)
    table.attrs["examples"] = pd.DataFrame(examples, columns=EXAMPLE_COLUMNS)
    if vocabulary:
        t_ref = time.perf_counter()
        table = reference_marker_rates(table, reference, tokenizer, train, test, tags, types, max_length,
                                       batch_size, device, seed)
        table.attrs["vocabulary_seconds"] = t_vocab + time.perf_counter() - t_ref
        table.attrs["vocabulary_screen"] = screened_by_type(found, types)
    table.attrs["seconds"] = time.perf_counter() - t0
    return table


def _marker_table(rows: list[dict], data: pd.DataFrame, chosen, planted: dict[str, str], q: float,
                  min_effect: float) -> pd.DataFrame:
    from probe.discovery.discover import ORDER, score_tested

    tested = score_tested(pd.DataFrame(rows), data, q, min_effect)
    done = set(chosen)
    rest = data[data.significant & ~pd.Series([(f, c) in done for f, c in zip(data.feature, data["class"])],
                                              index=data.index, dtype=bool)].sort_values("z", ascending=False)
    rest = rest.assign(source="data", verdict="not tested").drop(columns=["z_threshold"])
    table = pd.concat([tested, rest], ignore_index=True)
    table["amplification"] = np.nan
    table["planted"] = table.feature.isin(list(planted))
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table[[c for c in ORDER if c in table] + [c for c in ("controls", "note") if c in table]]


@guarded("discovery")
def tagger_discovery(ctx: RunContext, model, seed: int) -> dict[str, pd.DataFrame]:
    """The ``discovery`` table of one tagger: marker words before entities of a type."""
    config, data = ctx.config, ctx.data
    d = config.discover
    search = d.vocabulary_on(ctx.given is not None)
    with ctx.timer.stage("discovery"):
        model.to(ctx.device).eval()
        reference = ctx.pretrained_encoder(seed).eval().to(ctx.device) if search else None
        table = discover_markers(model, ctx.tokenizer, data.train, data.test, data.tags,
                                 max_length=config.task.max_length,
                                 planted={p.feature.token: p.target for p in data.planted},
                                 hide_planted=d.hide_planted, min_count=d.min_count, alpha=d.alpha,
                                 max_candidates=d.max_candidates, n_examples=d.n_examples, controls=d.controls,
                                 q=d.q, bootstrap=d.bootstrap, seed=d.seed + seed, min_effect=d.min_effect,
                                 batch_size=config.analyses.batch_size, device=ctx.device,
                                 vocabulary=search, vocabulary_sentences=data.val, reference=reference,
                                 progress=ctx.progress, k=d.vocabulary_k, n_texts=d.vocabulary_texts,
                                 n_screen=d.vocabulary_screen, per_class=d.vocabulary_tested)
        if reference is not None:
            reference.to("cpu")
    used = table[table.verdict.isin(["used shortcut", "used, plausibly task-relevant"])]
    log(f"discovery: {int(table.n_insert.notna().sum()) if 'n_insert' in table else 0} marker candidates tested, "
        f"{len(used)} used ({', '.join(used.feature.head(5))}) in {table.attrs['seconds']:.0f} s")
    if "vocabulary_seconds" in table.attrs:
        ctx.timer.seconds["discovery_vocabulary"] = round(table.attrs["vocabulary_seconds"], 3)  # part of discovery
    return {"discovery": table, "discovery_examples": table.attrs["examples"]}
