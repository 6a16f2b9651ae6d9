"""The analyses of a token-classification run, per fine-tuning seed (docs/design.md §5):

- ``entities``: entity-level precision / recall / F1 (seqeval, micro and per type) of the clean test
  split, bootstrap over sentences;
- ``behaviour``: per planted marker, span-level reliance (the predicted type of a span's first word,
  with and without the marker right before it; :mod:`probe.tasks.tokens.behaviour`);
- ``probing``: word-level probes (entity type on entity words, natural word properties on
  class-balanced samples, "follows the marker" on contrast pairs) on both models, with the
  word-type control task of Hewitt & Liang (2019) and sentence-level bootstrap intervals;
- ``cka``: per-layer CKA of the word vectors, pretrained vs fine-tuned;
- ``attribution`` / ``attribution_words``: what the predicted tag of an entity's first word looks
  at, with the marker's attribution share;
- ``erasure`` and ``ablation``: LEACE on the tagger's token activations against random directions,
  layer swaps and head ablation (:mod:`probe.causal.experiment`), through a :class:`SpanPredictor`;
- ``budgets`` (``analyses.precision: budget``): what the budgeted attributions, swaps and head scan used
  and why they stopped (docs/design.md §5, "Precision budgets").
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from probe.engine.context import RunContext, log
from probe.engine.guard import guarded

CKA_WORDS = 300  # words the per-layer CKA is computed on (a sample keeps the n × n Gram matrices small)
SCAN_EXAMPLES = 64  # conflicting spans the single-head scan ranks heads on


class ProbeSet:
    """The sentences whose words are probed: every clean test sentence and, per planted marker, the
    inserted version of one pair in half of the test sentences (drawn independently of the label, as
    for sequence runs). ``group[i]`` is the test sentence a probed sentence comes from, so the
    probes' train / test split keeps both versions of a sentence on one side. ``cue[feature]``:
    (inserted sentence, its span's first word, clean sentence, the same word there)."""

    def __init__(self, data, seed: int) -> None:
        self.words = [list(s.words) for s in data.test]
        self.tags = [list(s.tags) for s in data.test]
        self.group = list(range(len(data.test)))
        self.cue: dict[str, list[tuple[int, int, int, int]]] = {}
        rng = np.random.default_rng([seed, 41])
        for p in data.planted:
            self.cue[p.feature.label] = []
            first: dict[int, object] = {}
            for pair in p.pairs:
                if pair.kind != "no_entity":
                    first.setdefault(pair.sentence, pair)
            for i, pair in first.items():
                if rng.random() < 0.5:
                    self.words.append(list(pair.words))
                    self.tags.append(list(pair.tags))
                    self.group.append(i)
                    self.cue[p.feature.label].append((len(self.words) - 1, pair.inserted_start, i, pair.start))


# --- behaviour ------------------------------------------------------------------------------------

def behaviour_tables(ctx: RunContext, model, seed: int) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Entity-level scores on the clean test split, span-level reliance on every planted marker, and
    the per-span predictions (for ``probe compare``'s paired differences)."""
    from probe.tasks.tokens.behaviour import span_reliance_metrics
    from probe.tasks.tokens.entities import entity_table
    from probe.tasks.tokens.objective import decode_tags, predict_word_tags

    config, data, device = ctx.config, ctx.data, ctx.device
    ml, bs, n_boot = config.task.max_length, config.analyses.batch_size, config.analyses.bootstrap_samples
    model.to(device).eval()
    clean = predict_word_tags(model, ctx.tokenizer, [s.words for s in data.test], ml, bs, device)
    out = {"entities": entity_table([s.tags for s in data.test], decode_tags(clean, data.tags), n_boot, seed)}
    frames, preds = [], {}
    for p in data.planted:
        inserted = predict_word_tags(model, ctx.tokenizer, p.inserted_words(), ml, bs, device)
        frames.append(span_reliance_metrics(p, data.tags, clean, inserted, n_boot, seed))
        preds[p.feature.label] = (p, inserted)
    if frames:
        out["behaviour"] = pd.concat(frames, ignore_index=True)
    return out, _span_predictions(data, clean, preds, seed)


def _span_predictions(data, clean: list[np.ndarray], preds: dict, seed: int) -> pd.DataFrame:
    """One row per (partition, entity span of the test split): its gold type and the type predicted at
    its first word, clean (partition ``clean``) and with each marker before it (partition = the
    feature); types are indices into ``summary.task.entity_types``, -1 for no entity, -2 where the
    word was cut off by truncation. Spans are numbered in test order, the same in every run of the
    same test split."""
    from probe.tasks.tokens.tagging import entity_spans, tag_type

    index = {t: i for i, t in enumerate(data.entity_types)}

    def code(tag_id: int) -> int:
        if tag_id < 0:
            return -2
        t = tag_type(data.tags[tag_id])
        return index[t] if t is not None else -1

    spans = [(i, start, kind) for i, sent in enumerate(data.test) for start, _, kind in entity_spans(sent.tags)]
    labels = np.array([index[kind] for _, _, kind in spans], dtype=np.int64)
    rows = [pd.DataFrame({"seed": seed, "partition": "clean", "example": np.arange(len(spans)), "label": labels,
                          "prediction": [code(clean[i][start]) for i, start, _ in spans]})]
    for feature, (p, inserted) in preds.items():
        at = {(q.sentence, q.start): (j, q.inserted_start) for j, q in enumerate(p.pairs) if q.kind != "no_entity"}
        ins = [code(inserted[at[(i, start)][0]][at[(i, start)][1]]) for i, start, _ in spans]
        rows.append(pd.DataFrame({"seed": seed, "partition": feature, "example": np.arange(len(spans)),
                                  "label": labels, "prediction": ins}))
    return pd.concat(rows, ignore_index=True)


# --- word-level representations and probes ----------------------------------------------------------

def _word_labels(data, probe_set: ProbeSet, word_index: np.ndarray) -> tuple[dict, list[str], dict]:
    """Labels of every probed word: its entity type (the tag probe), natural word properties and, per
    planted marker, whether the word follows it."""
    from probe.tasks.tokens.properties import word_properties, word_types
    from probe.tasks.tokens.tagging import tag_type

    s_idx, w_idx = word_index[:, 0], word_index[:, 1]
    words = [probe_set.words[s][w] for s, w in zip(s_idx, w_idx)]
    types = ["O"] + data.entity_types
    labels = {"entity_type": np.array([types.index(tag_type(probe_set.tags[s][w]) or "O")
                                       for s, w in zip(s_idx, w_idx)])}
    props, skipped = word_properties(words, names="auto")  # analyses.properties names document properties
    labels.update(props)
    for p in data.planted:
        marker = p.feature.token
        labels[p.feature.label] = np.array([int(w > 0 and probe_set.words[s][w - 1] == marker)
                                            for s, w in zip(s_idx, w_idx)])
    return labels, word_types(words), skipped


def word_analyses(ctx: RunContext, probe_set: ProbeSet, pre: dict, fine: dict, seed: int) -> dict[str, pd.DataFrame]:
    """Word-level probes (with control tasks) and per-layer CKA of the word vectors of both models."""
    from probe.analyses.similarity import cka_by_layer

    a = ctx.config.analyses
    if not np.array_equal(pre["word_index"], fine["word_index"]):
        raise RuntimeError("pretrained and fine-tuned word vectors cover different words")
    word_index = pre["word_index"]
    out = {}
    if a.probing:
        frames = _word_probes(ctx, probe_set, pre, fine, seed)
        if frames:
            out["probing"] = pd.concat(frames, ignore_index=True)
    if a.similarity:
        rng = np.random.default_rng([seed, 42])
        n = word_index.shape[0]
        idx = np.sort(rng.choice(n, min(n, CKA_WORDS), replace=False))
        out["cka"] = cka_by_layer(pre["activations"][:, idx], fine["activations"][:, idx], debiased=a.cka_debiased)
    return out


def _word_probes(ctx: RunContext, probe_set: ProbeSet, pre: dict, fine: dict, seed: int) -> list[pd.DataFrame]:
    from probe.tasks.tokens.probing import token_probe_table

    a = ctx.config.analyses
    word_index = pre["word_index"]
    labels, types, skipped = _word_labels(ctx.data, probe_set, word_index)
    for name, why in skipped.items():
        log(f"probing: word property {name} skipped: {why}")
    groups = np.array(probe_set.group)[word_index[:, 0]]
    types = np.asarray(types, dtype=object)
    frames = []
    row = {(int(s_), int(w_)): i for i, (s_, w_) in enumerate(word_index)}
    for k, (name, y) in enumerate(labels.items()):
        if name in probe_set.cue:  # the same span's first word with and without the marker before it
            pairs = [(row[(a_, b_)], row[(c_, d_)]) for a_, b_, c_, d_ in probe_set.cue[name]
                     if (a_, b_) in row and (c_, d_) in row]
            y = np.zeros(len(word_index), dtype=np.int64)
            y[[q for q, _ in pairs]] = 1
            idx = np.sort(np.array([i for pq in pairs for i in pq], dtype=np.int64))
        else:
            idx = probe_words(name, y, a.max_probe_words, np.random.default_rng([seed, 45, k]))
        if idx.size == 0 or np.unique(y[idx]).size < 2:
            log(f"probing: word property {name} skipped: fewer than 2 classes to probe")
            continue
        df = token_probe_table({"pretrained": pre["activations"][:, idx], "finetuned": fine["activations"][:, idx]},
                               {name: y[idx]}, groups[idx], list(types[idx]), seed, C=a.probe_C,
                               n_boot=a.bootstrap_samples, max_words=None, control=a.control_tasks,
                               progress=ctx.progress)
        df.loc[df.metric == "type_overlap", "property"] = name
        frames.append(df)
    return frames


def probe_words(name: str, y: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """The words a property is probed on. Word labels are very unbalanced (97 % of tweet words are not
    @mentions; one word in a hundred follows the marker), and next to a 0.99 majority rate a probe's
    accuracy says nothing. So every class is sampled down to the rarest one's count (at most
    ``cap`` words in all), making the majority baseline 1/K; the entity-type probe is run on entity
    words only ("which type is this entity word"), with its natural type frequencies. (A planted
    cue is probed on contrast pairs instead: an entity's first word after the marker against the same
    word of the same sentence without it, so the word itself cannot give the answer away.)"""
    if name == "entity_type":
        idx = np.flatnonzero(y > 0)
        if idx.size > cap:
            idx = rng.choice(idx, cap, replace=False)
        return np.sort(idx)
    classes, counts = np.unique(y, return_counts=True)
    per_class = int(min(counts.min(), cap // max(classes.size, 1)))
    if classes.size < 2 or per_class < 2:
        return np.array([], dtype=np.int64)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in classes]))


# --- attribution ----------------------------------------------------------------------------------

@guarded("attribution")
def attribution_tables(ctx: RunContext, model, seed: int) -> dict[str, pd.DataFrame]:
    """Attributions of the predicted tag of a span's first word, on pairs with the marker inserted
    (conflicting and aligned); the marker's share for planted features. Under ``analyses.precision:
    budget`` each partition is attributed to the precision budget of the sequence kind
    (:func:`probe.analyses.budgeted_attribution.budgeted_partition`), with a ``budgets`` table."""
    from tqdm.auto import tqdm

    from probe.analyses.attribution_metrics import heatmap_rows, spurious_attribution_metrics, telling_examples
    from probe.analyses.budget import budget_rows

    config, data = ctx.config, ctx.data
    a = config.analyses
    rng = np.random.default_rng([seed, 43])
    jobs = []
    for p in data.planted:
        for kind in ("conflicting", "aligned"):
            pairs = [q for q in p.pairs if q.kind == kind]
            chosen = sorted(rng.choice(len(pairs), min(a.attribution_examples, len(pairs)), replace=False)) \
                if pairs else []
            jobs.append((kind, p.feature.label, p.feature.token, [pairs[i] for i in chosen]))
    rows, words, stops = [], [], []
    for kind, feature, token, pairs in tqdm(jobs, desc="attribution", disable=not ctx.progress, leave=False):
        if not pairs:
            continue
        for method, used, attrs in _tag_attributions(ctx, model, seed, (kind, feature, token), pairs, stops):
            df = spurious_attribution_metrics(attrs, token, model_name="finetuned", n_boot=a.bootstrap_samples,
                                              seed=seed, feature=feature)
            df.insert(df.columns.get_loc("metric") + 1, "partition", kind)
            rows.append(df)
            if method == "integrated_gradients":
                sub = [pairs[i] for i in used]
                explained = [f"{q.words[q.inserted_start]!s} (gold {q.tags[q.inserted_start]})" for q in sub]
                words.append(heatmap_rows(attrs, telling_examples(attrs, token), model="finetuned", partition=kind,
                                          feature=feature, examples=[q.sentence for q in sub], labels=explained,
                                          predictions=data.tags))
    out = {}
    if rows:
        out["attribution"] = pd.concat(rows, ignore_index=True)
    if words:
        out["attribution_words"] = pd.concat(words, ignore_index=True)
    if stops:
        out["budgets"] = budget_rows(stops)
    return out


def _tag_attributions(ctx: RunContext, model, seed: int, partition: tuple, pairs: list, stops: list):
    """``(method, indices into pairs, attributions)`` per configured method: every pair with
    ``analyses.ig_steps`` (``precision: full``), or the pairs and steps the budget chose (its stops are
    appended to ``stops``)."""
    from probe.analyses.budgeted_attribution import budgeted_partition
    from probe.tasks.tokens.attribution import tag_attributions

    config = ctx.config
    a = config.analyses
    sentences, positions = [q.words for q in pairs], [q.inserted_start for q in pairs]
    if a.precision == "budget":
        by_method, part_stops = budgeted_partition(config, model, "finetuned", (*partition, sentences,
                                                   np.arange(len(pairs))), ctx.tokenizer, seed, positions)
        stops += part_stops
        for method, (_, used, attrs) in by_method.items():
            yield method, used, attrs
        return
    for method in a.attribution_methods:
        yield method, np.arange(len(pairs)), tag_attributions(model, ctx.tokenizer, sentences, positions, method=method,
                                                              max_length=config.task.max_length, n_steps=a.ig_steps)


# --- causal tests ---------------------------------------------------------------------------------

class SpanPredictor:
    """Span-level behaviour of the (possibly edited) tagger on held-out pairs: one "example" per entity
    span, labelled with its type; its prediction is the predicted type of its first word, without
    (clean sentence) and with the marker. The :class:`probe.causal.experiment.Predictor` of taggers."""

    def __init__(self, model, tokenizer, data, planted_by_feature: dict, pairs_by_feature: dict, max_length: int,
                 batch_size: int, device) -> None:
        self.model, self.tokenizer, self.data = model, tokenizer, data
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.types = list(data.entity_types) + [None]
        self.pairs = pairs_by_feature
        self.targets = {f: self.types.index(p.target) for f, p in planted_by_feature.items()}
        self.features = list(pairs_by_feature)

    def _type_index(self, tag_id: int) -> int:
        from probe.tasks.tokens.tagging import tag_type

        return self.types.index(tag_type(self.data.tags[tag_id]) if tag_id >= 0 else None)

    def _predict(self, sentences: list[list[str]]) -> list[np.ndarray]:
        from probe.tasks.tokens.objective import predict_word_tags

        return predict_word_tags(self.model, self.tokenizer, sentences, self.max_length, self.batch_size,
                                 self.device)

    def _values(self, feature: str) -> dict[str, np.ndarray]:
        from probe.analyses.behaviour import metric_values

        pairs = self.pairs[feature]
        if not pairs:  # a batch of held-out pairs (a precision budget) past this feature's last pair
            return metric_values(*(np.zeros(0, dtype=np.int64),) * 3, self.targets[feature])
        sentences = sorted({q.sentence for q in pairs})
        clean_words = [self.data.test[i].words for i in sentences]
        pred = self._predict(clean_words + [q.words for q in pairs])
        where = {s: k for k, s in enumerate(sentences)}
        clean = np.array([self._type_index(pred[where[q.sentence]][q.start]) for q in pairs])
        ins = np.array([self._type_index(pred[len(clean_words) + j][q.inserted_start]) for j, q in enumerate(pairs)])
        labels = np.array([self.types.index(q.type) for q in pairs])
        return metric_values(clean, ins, labels, self.targets[feature])

    def __call__(self, features: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        return {f: self._values(f) for f in (self.features if features is None else features)}

    def clean_correct(self) -> np.ndarray:
        raise NotImplementedError("a tagger's causal tests always have planted markers")

    def scan(self, feature: str, seed: int):
        target = self.targets[feature]
        conflicting = [q for q in self.pairs[feature] if self.types.index(q.type) != target]
        if len(conflicting) > SCAN_EXAMPLES:
            pick = np.sort(np.random.default_rng([seed, 41]).choice(len(conflicting), SCAN_EXAMPLES, replace=False))
            conflicting = [conflicting[i] for i in pick]

        def s_only_error() -> float:
            pred = self._predict([q.words for q in conflicting])
            return float(np.mean([self._type_index(p[q.inserted_start]) == target for p, q in zip(pred, conflicting)]))

        return s_only_error, len(conflicting)


@guarded("causal tests")
def causal_tables(ctx: RunContext, model, seed: int) -> dict[str, pd.DataFrame]:
    """LEACE / INLP erasure of each marker's concept from the tagger's token activations, layer by layer,
    against random directions, then layer swaps and head ablation (:mod:`probe.causal.experiment`).
    Erasers are fitted on the pairs of half of the test sentences; everything is judged on the other half."""
    from probe.analyses.budget import budget_rows
    from probe.causal.experiment import ablation_table, erasure_table
    from probe.causal.hooks import KeptStates

    config, data = ctx.config, ctx.data
    c, a, ml = config.causal, config.analyses, config.task.max_length
    n_sent = len(data.test)
    fit_sent = set(np.random.default_rng([seed, 44]).permutation(n_sent)[: n_sent // 2].tolist())
    held = {p.feature.label: [q for q in p.pairs if q.kind != "no_entity" and q.sentence not in fit_sent]
            for p in data.planted}
    predict = SpanPredictor(model, ctx.tokenizer, data, {p.feature.label: p for p in data.planted}, held, ml,
                            a.batch_size, ctx.device)
    out: dict[str, pd.DataFrame] = {}
    kept = KeptStates()  # the unedited model's hidden states of the held-out batches, for every intervention
    with ctx.timer.stage("erasure"):
        t0 = time.perf_counter()
        frames = []
        for p in data.planted:
            fit = [q for q in p.pairs if q.kind != "no_entity" and q.sentence in fit_sent]
            fit_texts = [" ".join(q.words) for q in fit] + [" ".join(data.test[i].words) for i in sorted(fit_sent)]
            held_texts = [" ".join(q.words) for q in held[p.feature.label]] + [
                " ".join(data.test[i].words) for i in range(n_sent) if i not in fit_sent]
            frames.append(erasure_table(model, ctx.tokenizer, fit_texts, held_texts, predict, p.feature.label,
                                        p.feature.token, c, ml, a.batch_size, ctx.device, a.bootstrap_samples,
                                        seed, ctx.progress, kept))
        out["erasure"] = pd.concat(frames, ignore_index=True)
        log(f"causal: erasure sweep in {time.perf_counter() - t0:.0f} s")
    if c.layer_swap or c.head_ablation:
        with ctx.timer.stage("ablation"):
            t0 = time.perf_counter()
            pretrained = ctx.pretrained_encoder(seed).eval()  # stays on the CPU: swaps copy its weights
            budgeted = a.precision == "budget" and any(held.values())
            if budgeted:  # held-out batches until the intervals are narrow
                predict = _batched_predictor(model, ctx, held, seed)
            out["ablation"] = ablation_table(model, pretrained, predict, c, a.bootstrap_samples, seed, ctx.progress,
                                             kept)
            if budgeted:
                out["budgets"] = budget_rows(predict.stops(data.planted[0].feature.label))
            log(f"causal: layer swaps and head ablation in {time.perf_counter() - t0:.0f} s")
    return out


def _batched_predictor(model, ctx: RunContext, held: dict[str, list], seed: int):
    """Each feature's held-out pairs in a seeded random order, cut into ``causal.batch`` batches (batch b holds
    the b-th slice of every feature's pairs), behind a :class:`probe.causal.budget.BatchedPredictor` that
    stops at ``causal.interval_width`` (docs/design.md §5, "Precision budgets")."""
    from probe.analyses.budget import batches
    from probe.causal.budget import BatchedPredictor

    c, a, data = ctx.config.causal, ctx.config.analyses, ctx.data
    rng = np.random.default_rng([seed, 42])
    order = {f: [pairs[i] for i in rng.permutation(len(pairs))] for f, pairs in held.items()}
    n = max((len(pairs) for pairs in order.values()), default=0)
    planted = {p.feature.label: p for p in data.planted}
    parts = [SpanPredictor(model, ctx.tokenizer, data, planted, {f: pairs[b[0]: b[-1] + 1] for f, pairs in order.items()},
                           ctx.config.task.max_length, a.batch_size, ctx.device) for b in batches(n, c.batch)]
    return BatchedPredictor(parts, c.interval_width, SCAN_EXAMPLES, n)
