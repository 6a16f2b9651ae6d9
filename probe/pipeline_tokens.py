"""The flow of a token-classification run (``task.type: token-classification``, issue 8):
data -> pretrain (optional) -> fine-tune a tagger -> predict -> word-level extraction -> analyses ->
attribution -> erasure -> report.

The same run directory contract as a sequence run (DESIGN.md §3), with tables shaped the same way
so that the report, ``probe compare`` and notebooks read both:

- ``entities``: entity-level precision / recall / F1 (seqeval, micro and per type) of the clean test
  split, bootstrap over sentences;
- ``behaviour``: per planted marker, span-level reliance (the predicted type of a span's first word,
  with and without the marker right before it; :mod:`probe.analyses.span_behaviour`);
- ``probing``: word-level probes (entity type on entity words, natural word properties on
  class-balanced samples, "follows the marker" on contrast pairs) on both models, with the
  word-type control task of Hewitt & Liang (2019) and sentence-level bootstrap intervals;
- ``cka``: per-layer CKA of the word vectors, pretrained vs fine-tuned;
- ``attribution`` / ``attribution_words``: what the predicted tag of an entity's first word looks
  at, with the marker's attribution share;
- ``erasure``: LEACE on the tagger's token activations against random directions.

Everything expensive is keyed and cached as in :mod:`probe.pipeline`; ``seeds`` repeat fine-tuning
and every analysis. Under ``accelerate launch`` pretraining, fine-tuning and word extraction run
data-parallel; the analyses run on the main process.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from probe.config import Config, stable_hash
from probe.rundir import Run, atomic_write_json

WORD_FORMAT = 1  # bump when the word-activation layout changes, to invalidate caches
CKA_WORDS = 300  # words the per-layer CKA is computed on (its leave-one-out jackknife costs O(n³) per layer)


def execute_tokens(config: Config, progress: bool = True, shared_dir: Path | None = None) -> Run:
    """Run every stage of a token-classification config; see the module docstring."""
    from probe.data.token_task import build_token_task_data
    from probe.distributed import current
    from probe.models.backbones import load_tokenizer
    from probe.pipeline import _Timer, log, run_device, run_lifecycle

    dist = current()
    progress = progress and dist.is_main
    timer = _Timer()
    t_start = time.perf_counter()
    with timer.stage("data"):
        data = build_token_task_data(config)
        data.corpus_labels = [None] * len(data.corpus_texts)  # pretraining corpus "task": unlabeled sentences
        tokenizer = load_tokenizer(config.model.backbone)
        device = run_device(config)
    log(f"data: {config.task.dataset}, {len(data.entity_types)} entity types, sentences train {len(data.train)} / "
        f"validation {len(data.val)} / test {len(data.test)}")
    return run_lifecycle(config, timer, t_start, lambda run_dir: _stages(
        config, data, tokenizer, device, run_dir, timer, progress, shared_dir))


def _stages(config: Config, data, tokenizer, device, run_dir: Path, timer, progress: bool,
            shared_dir: Path | None) -> dict | None:
    from probe.distributed import current
    from probe.models.backbones import load_encoder
    from probe.pipeline import begin_stages, log, write_seed_tables
    from probe.report.render import render_report

    dist = current()
    reused: list[str] = []
    backbone, backbone_key, pretraining = begin_stages(config, data, tokenizer, device, run_dir, timer,
                                                       shared_dir, progress, reused)
    probe_set = _probe_sentences(data, config.seed)
    a = config.analyses
    pre = None
    if a.probing or a.similarity:
        with timer.stage("extract"):
            pre = _words_cached(config, shared_dir or run_dir, "pretrained", backbone_key, probe_set.words,
                                lambda: load_encoder(backbone, config.seed), tokenizer, device, progress, reused)
    per_seed: dict[str, list[pd.DataFrame]] = {}
    predictions: list[pd.DataFrame] = []
    train_logs = {}
    for seed in config.run_seeds:
        suffix = "" if len(config.run_seeds) == 1 else f"-seed{seed}"
        with timer.stage("finetune"):
            model, train_log, ft_key = _tagger_cached(config, data, tokenizer, device, run_dir, seed, suffix,
                                                      progress, reused, backbone, backbone_key)
        train_logs[seed] = train_log
        if pre is not None:
            with timer.stage("extract"):
                fine = _words_cached(config, run_dir, f"finetuned{suffix}", ft_key, probe_set.words, lambda: model,
                                     tokenizer, device, progress, reused)
        if not dist.is_main:
            continue  # the analyses run on the main process only
        with timer.stage("analyses"):
            tables, span_preds = _behaviour_tables(config, data, model, tokenizer, device, seed)
            predictions.append(span_preds)
        if pre is not None:
            with timer.stage("analyses"):
                tables.update(_word_analyses(config, data, probe_set, pre, fine, seed, progress))
        if a.attribution:
            with timer.stage("attribution"):
                tables.update(_attribution(config, data, model, tokenizer, seed, progress))
        if config.causal.enabled and data.planted:
            with timer.stage("erasure"):
                t0 = time.perf_counter()
                tables["erasure"] = _erasure(config, data, model, tokenizer, device, seed, progress)
                log(f"causal: erasure sweep in {time.perf_counter() - t0:.0f} s")
        for name, df in tables.items():
            df.insert(0, "seed", seed)
            per_seed.setdefault(name, []).append(df)
    if not dist.is_main:
        return None
    with timer.stage("analyses"):
        tables = write_seed_tables(run_dir, per_seed, predictions)
    summary = _summary(config, data, tables, train_logs, reused, device, pretraining)
    with timer.stage("report"):
        render_report(run_dir, summary_override={**summary, "status": "complete", "timings": timer.seconds})
    return summary


# --- fine-tuning ---------------------------------------------------------------------------------

def _tagger_cached(config, data, tokenizer, device, run_dir: Path, seed: int, suffix: str, progress: bool,
                   reused: list[str], backbone: str, backbone_key: str):
    """The fine-tuned tagger for ``seed``: from ``models/finetuned<suffix>`` when its key matches."""
    from probe.distributed import current
    from probe.models.strategies import for_analysis, load_trained, prepare_model, save_trained
    from probe.models.tagger import build_tagger, finetune_tagger
    from probe.pipeline import log

    dist = current()
    ft_key = stable_hash([backbone_key, config.finetune.model_dump(), config.task.max_length, seed,
                          data.fingerprint(), data.planted_markers(), "tagger-v1"])
    model_dir = run_dir / "models" / f"finetuned{suffix}"
    key_file = model_dir / "probe_key.json"
    if dist.agree(key_file.is_file() and json.loads(key_file.read_text()).get("key") == ft_key):
        reused.append(f"finetune{suffix.replace('-', ':')}")
        log(f"finetune: reused checkpoint {model_dir} (key {ft_key})")
        model = load_trained(model_dir, backbone, data.tags, config.finetune, seed=seed,
                             task_type="token-classification")
        return for_analysis(model), json.loads((model_dir / "training.json").read_text()), ft_key
    log(f"finetune: tagger on {config.model.backbone}, {config.finetune.strategy}, {config.finetune.epochs} epochs "
        f"on {device.type}, seed {seed}")
    model = prepare_model(build_tagger(backbone, data.tags, seed), config.finetune)
    tl = finetune_tagger(model, tokenizer, data.train, data.val, data.tags, config.finetune, config.task.max_length,
                         seed, device, progress, planted=data.planted_markers())
    train_log = tl.to_dict()
    if dist.is_main:
        tmp = model_dir.with_name(f".{model_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_trained(model, tmp, config.finetune)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "training.json", train_log)
        atomic_write_json(tmp / "probe_key.json", {"key": ft_key})
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp.rename(model_dir)
    return for_analysis(model), train_log, ft_key


# --- behaviour -----------------------------------------------------------------------------------

def _behaviour_tables(config, data, model, tokenizer, device, seed: int) -> tuple[dict[str, pd.DataFrame],
                                                                                pd.DataFrame]:
    """Entity-level scores on the clean test split, span-level reliance on every planted marker, and
    the per-span predictions (for ``probe compare``'s paired differences)."""
    from probe.analyses.entity_metrics import entity_table
    from probe.analyses.span_behaviour import span_reliance_metrics
    from probe.models.tagger import decode_tags, predict_word_tags

    ml, bs, n_boot = config.task.max_length, config.analyses.batch_size, config.analyses.bootstrap_samples
    model.to(device).eval()
    clean = predict_word_tags(model, tokenizer, [s.words for s in data.test], ml, bs, device)
    out = {"entities": entity_table([s.tags for s in data.test], decode_tags(clean, data.tags), n_boot, seed)}
    frames, preds = [], {}
    for p in data.planted:
        inserted = predict_word_tags(model, tokenizer, p.inserted_words(), ml, bs, device)
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
    from probe.data.token_task import entity_spans, tag_type

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


# --- word-level representations and probes -------------------------------------------------------

class _ProbeSet:
    """The sentences whose words are probed: every clean test sentence and, per planted marker, the
    inserted version of one pair in half of the test sentences (drawn independently of the label, as
    for sequence runs). ``group[i]`` is the test sentence a probed sentence comes from, so the
    probes' train / test split keeps both versions of a sentence on one side."""

    def __init__(self, words: list[list[str]], tags: list[list[str]], group: list[int],
                 cue: dict[str, list[tuple[int, int, int, int]]]) -> None:
        self.words, self.tags, self.group = words, tags, group
        #: per planted feature: (inserted sentence, its span's first word, clean sentence, the same word there)
        self.cue = cue


def _probe_sentences(data, seed: int) -> _ProbeSet:
    words = [list(s.words) for s in data.test]
    tags = [list(s.tags) for s in data.test]
    group = list(range(len(data.test)))
    cue: dict[str, list[tuple[int, int, int, int]]] = {}
    rng = np.random.default_rng([seed, 41])
    for p in data.planted:
        cue[p.feature.label] = []
        first: dict[int, object] = {}
        for pair in p.pairs:
            if pair.kind != "no_entity":
                first.setdefault(pair.sentence, pair)
        for i, pair in first.items():
            if rng.random() < 0.5:
                words.append(list(pair.words))
                tags.append(list(pair.tags))
                group.append(i)
                cue[p.feature.label].append((len(words) - 1, pair.inserted_start, i, pair.start))
    return _ProbeSet(words, tags, group, cue)


def _words_cached(config, run_dir: Path, name: str, source_key: str, sentences: list[list[str]], get_model,
                  tokenizer, device, progress: bool, reused: list[str]) -> dict:
    """Word vectors of every layer (one per word: first subword or mean, ``analyses.word_pooling``).

    With several processes each extracts a contiguous shard of the sentences; the rows are gathered
    back in order (word indices shifted to the whole list's sentence numbers)."""
    from probe.distributed import current
    from probe.pipeline import _load_npz, _save_npz, log
    from probe.representations.word_extract import extract_words

    dist = current()
    a = config.analyses
    key = stable_hash([source_key, config.seed, config.task.max_length, a.word_pooling, sentences, WORD_FORMAT])
    path = run_dir / "cache" / f"words-{name}-{key}.npz"
    if dist.agree(path.is_file() and _load_npz(path) is not None):
        reused.append(f"extract:{name.replace('-', ':')}")
        log(f"extract: reused cached {name} word vectors {path.name}")
        return _load_npz(path)
    sharded = dist.enabled and len(sentences) >= dist.world
    part = list(dist.shard(sentences)) if sharded else sentences
    out = extract_words(get_model(), tokenizer, part, config.task.max_length, a.batch_size, device,
                        pooling=a.word_pooling, progress=progress, desc=f"extract words {name}")
    word_index = out["word_index"].copy()
    if sharded:
        word_index[:, 0] += dist.rank * len(sentences) // dist.world  # where this shard starts
    arrays = {"activations": out["activations"], "word_index": word_index}
    if sharded:
        arrays = dist.gather_rows(arrays, axes={"activations": 1})
    arrays["tokens"] = np.array(int(dist.sum(out["tokens"]) if sharded else out["tokens"]))
    arrays["seconds"] = np.array(dist.max(out["seconds"]))
    if dist.is_main:
        _save_npz(path, **arrays)
    log(f"extract: {name}, {len(sentences)} sentences, {len(arrays['word_index'])} words, "
        f"{float(arrays['tokens']) / max(float(arrays['seconds']), 1e-9):.0f} tokens/s")
    return arrays


def _word_labels(data, probe_set: _ProbeSet, word_index: np.ndarray, config) -> tuple[dict, list[str], dict]:
    """Labels of every probed word: its entity type (the tag probe), natural word properties and, per
    planted marker, whether the word follows it."""
    from probe.data.token_properties import word_properties, word_types
    from probe.data.token_task import tag_type

    sent_tags = probe_set.tags
    s_idx, w_idx = word_index[:, 0], word_index[:, 1]
    words = [probe_set.words[s][w] for s, w in zip(s_idx, w_idx)]
    types = ["O"] + data.entity_types
    labels = {"entity_type": np.array([types.index(tag_type(sent_tags[s][w]) or "O") for s, w in zip(s_idx, w_idx)])}
    props, skipped = word_properties(words, names="auto")  # analyses.properties names document properties
    labels.update(props)
    for p in data.planted:
        marker = p.feature.token
        labels[p.feature.label] = np.array([int(w > 0 and probe_set.words[s][w - 1] == marker)
                                            for s, w in zip(s_idx, w_idx)])
    return labels, word_types(words), skipped


def _word_analyses(config, data, probe_set: _ProbeSet, pre: dict, fine: dict, seed: int,
                   progress: bool) -> dict[str, pd.DataFrame]:
    from probe.analyses.similarity import cka_by_layer
    from probe.analyses.token_probing import token_probe_table
    from probe.pipeline import log

    a = config.analyses
    if not np.array_equal(pre["word_index"], fine["word_index"]):
        raise RuntimeError("pretrained and fine-tuned word vectors cover different words")
    word_index = pre["word_index"]
    out = {}
    if a.probing:
        labels, types, skipped = _word_labels(data, probe_set, word_index, config)
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
                idx = _probe_words(name, y, a.max_probe_words, np.random.default_rng([seed, 45, k]))
            if idx.size == 0 or np.unique(y[idx]).size < 2:
                log(f"probing: word property {name} skipped: fewer than 2 classes to probe")
                continue
            df = token_probe_table({"pretrained": pre["activations"][:, idx], "finetuned": fine["activations"][:, idx]},
                                   {name: y[idx]}, groups[idx], list(types[idx]), seed, C=a.probe_C,
                                   n_boot=a.bootstrap_samples, max_words=None, control=a.control_tasks,
                                   progress=progress)
            df.loc[df.metric == "type_overlap", "property"] = name
            frames.append(df)
        if frames:
            out["probing"] = pd.concat(frames, ignore_index=True)
    if a.similarity:
        rng = np.random.default_rng([seed, 42])
        n = word_index.shape[0]
        idx = np.sort(rng.choice(n, min(n, CKA_WORDS), replace=False))
        out["cka"] = cka_by_layer(pre["activations"][:, idx], fine["activations"][:, idx], debiased=a.cka_debiased)
    return out


def _probe_words(name: str, y: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
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


# --- attribution ---------------------------------------------------------------------------------

def _attribution(config, data, model, tokenizer, seed: int, progress: bool) -> dict[str, pd.DataFrame]:
    """Attributions of the predicted tag of a span's first word, on pairs with the marker inserted
    (conflicting and aligned) and on clean sentences; the marker's share for planted features."""
    from tqdm.auto import tqdm

    from probe.analyses.attribution import spurious_attribution_metrics
    from probe.analyses.token_attribution import tag_attributions

    a = config.analyses
    rng = np.random.default_rng([seed, 43])
    jobs = []
    for p in data.planted:
        for kind in ("conflicting", "aligned"):
            pairs = [q for q in p.pairs if q.kind == kind]
            chosen = sorted(rng.choice(len(pairs), min(a.attribution_examples, len(pairs)), replace=False)) \
                if pairs else []
            jobs.append((kind, p.feature.label, p.feature.token, [pairs[i] for i in chosen]))
    rows, words = [], []
    methods = list(a.attribution_methods)
    for kind, feature, token, pairs in tqdm(jobs, desc="attribution", disable=not progress, leave=False):
        if not pairs:
            continue
        for method in methods:
            attrs = tag_attributions(model, tokenizer, [q.words for q in pairs], [q.inserted_start for q in pairs],
                                     method=method, max_length=config.task.max_length, n_steps=a.ig_steps)
            df = spurious_attribution_metrics(attrs, token, model_name="finetuned", n_boot=a.bootstrap_samples,
                                              seed=seed, feature=feature)
            df.insert(df.columns.get_loc("metric") + 1, "partition", kind)
            rows.append(df)
            if method == "integrated_gradients":
                words.append(_heatmap_rows(attrs, pairs, kind, feature, token, data.tags))
    out = {}
    if rows:
        out["attribution"] = pd.concat(rows, ignore_index=True)
    if words:
        out["attribution_words"] = pd.concat(words, ignore_index=True)
    return out


def _heatmap_rows(attrs, pairs, partition: str, feature: str, token: str, tags: list[str]) -> pd.DataFrame:
    """Word scores of the examples with the highest and the lowest marker share (the explained word is
    marked with brackets in ``label``)."""
    from probe.analyses.attribution import token_positions

    shares = []
    for at in attrs:
        pos = token_positions(at.words, token)
        total = np.abs(at.scores).sum()
        shares.append(np.abs(at.scores)[pos].sum() / total if pos.size and total > 0 else np.nan)
    chosen = {0: "example"}
    if np.isfinite(shares).any():
        chosen = {int(np.nanargmax(shares)): "highest spurious share", int(np.nanargmin(shares)): "lowest spurious share"}
    rows = []
    for i, why in chosen.items():
        at, q = attrs[i], pairs[i]
        explained = f"{q.words[q.inserted_start]!s} (gold {q.tags[q.inserted_start]})"
        for position, (word, score) in enumerate(zip(at.words, at.scores)):
            rows.append({"model": "finetuned", "partition": partition, "property": feature, "example": int(q.sentence),
                         "selection": why, "label": explained, "prediction": tags[at.prediction],
                         "position": position, "word": word, "score": float(score)})
    return pd.DataFrame(rows)


# --- erasure -------------------------------------------------------------------------------------

def _erasure(config, data, model, tokenizer, device, seed: int, progress: bool) -> pd.DataFrame:
    """LEACE / INLP erasure of each marker's concept from the tagger's token activations, layer by
    layer, against random directions (probe.causal.experiment.erasure_table with a span predictor).
    Erasers are fitted on the pairs of half of the test sentences and judged on the other half."""
    from probe.causal.experiment import erasure_table

    frames = []
    ml, bs = config.task.max_length, config.analyses.batch_size
    n_sent = len(data.test)
    rng = np.random.default_rng([seed, 44])
    fit_sent = set(rng.permutation(n_sent)[: n_sent // 2].tolist())
    for p in data.planted:
        entity_pairs = [q for q in p.pairs if q.kind != "no_entity"]
        fit = [q for q in entity_pairs if q.sentence in fit_sent]
        held = [q for q in entity_pairs if q.sentence not in fit_sent]
        fit_texts = [" ".join(q.words) for q in fit] + [" ".join(data.test[i].words) for i in sorted(fit_sent)]
        held_texts = [" ".join(q.words) for q in held] + [" ".join(data.test[i].words)
                                                          for i in range(n_sent) if i not in fit_sent]
        predictor = _SpanPredictor(model, tokenizer, data, p, held, ml, bs, device)
        frames.append(erasure_table(model, tokenizer, fit_texts, held_texts, None, p.feature.label, p.feature.token,
                                    config.causal, ml, bs, device, config.analyses.bootstrap_samples, seed, progress,
                                    predict=predictor))
    return pd.concat(frames, ignore_index=True)


class _SpanPredictor:
    """Span-level behaviour of the (possibly edited) tagger on held-out pairs, for the erasure sweep:
    one "example" per entity span, labelled with its type; prediction = the predicted type of its
    first word, without (clean sentence) and with the marker."""

    def __init__(self, model, tokenizer, data, planted, pairs, max_length: int, batch_size: int, device) -> None:
        self.model, self.tokenizer, self.data, self.pairs = model, tokenizer, data, pairs
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.types = list(data.entity_types) + [None]
        self.labels = np.array([self.types.index(q.type) for q in pairs])
        self.target = self.types.index(planted.target)
        self.feature = planted.feature.label
        self.sentences = sorted({q.sentence for q in pairs})

    def _type_index(self, tag_id: int) -> int:
        from probe.data.token_task import tag_type

        return self.types.index(tag_type(self.data.tags[tag_id]) if tag_id >= 0 else None)

    def __call__(self, features: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        from probe.analyses.behaviour import metric_values
        from probe.models.tagger import predict_word_tags

        clean_words = [self.data.test[i].words for i in self.sentences]
        ins_words = [q.words for q in self.pairs]
        pred = predict_word_tags(self.model, self.tokenizer, clean_words + ins_words, self.max_length,
                                 self.batch_size, self.device)
        where = {s: k for k, s in enumerate(self.sentences)}
        clean = np.array([self._type_index(pred[where[q.sentence]][q.start]) for q in self.pairs])
        ins = np.array([self._type_index(pred[len(clean_words) + j][q.inserted_start])
                        for j, q in enumerate(self.pairs)])
        return {self.feature: metric_values(clean, ins, self.labels, self.target)}


# --- summary -------------------------------------------------------------------------------------

def _summary(config, data, tables: dict[str, pd.DataFrame], train_logs: dict, reused: list[str], device,
             pretraining: dict | None) -> dict:
    from probe.analyses.verdict import decodability_sentence, erasure_sentence, reliance_verdict
    from probe.pipeline import _first_int, _versions

    def pooled(df: pd.DataFrame) -> pd.DataFrame:
        seeds = df.seed.astype(str)
        return df[seeds == "all"] if (seeds == "all").any() else df

    def metric(df: pd.DataFrame, prop: str, name: str) -> dict:
        r = df[(df.property == prop) & (df.metric == name)].iloc[0]
        return {"value": float(r.value), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high)}

    ents = pooled(tables["entities"])
    f1 = metric(ents, "entity", "f1")
    behaviour = pooled(tables["behaviour"]) if "behaviour" in tables else None
    probing = tables.get("probing")
    if probing is not None:
        probing = pooled(probing)
    erasure = tables.get("erasure")
    if erasure is not None:
        erasure = pooled(erasure)
    features = []
    for p in data.planted:
        name = p.feature.label
        m = {k: metric(behaviour, name, k) for k in (
            "clean_accuracy", "aligned_accuracy", "conflicting_accuracy", "conflicting_accuracy_before",
            "s_only_error", "flip_rate", "flip_rate_aligned", "reliance_gap", "no_entity_rate_before",
            "no_entity_rate")}
        types = [q.type for q in p.pairs if q.kind != "no_entity"]
        majority = max(types.count(t) for t in set(types)) / len(types) if types else 1.0
        status, sentence = reliance_verdict(m, p.feature.token, p.feature.target_class,
                                            config.analyses.reliance_threshold, majority)
        features.append({
            "name": name, "kind": "planted", "token": p.feature.token, "target_class": p.feature.target_class,
            "train_rate_in_class": p.train_rate_in_class, "train_rate_outside": p.train_rate_outside,
            "natural_rate": p.natural_rate, "task_accuracy": m.pop("clean_accuracy"), **m,
            "verdict_status": status, "verdict": sentence.replace("examples", "entity spans"),
            "decodability": decodability_sentence(probing, name) if probing is not None else "",
            "causal": erasure_sentence(erasure, name, p.feature.token, config.analyses.reliance_threshold)
            if erasure is not None else "",
            "n_pairs": {k: int(sum(q.kind == k for q in p.pairs)) for k in ("aligned", "conflicting", "no_entity")},
        })
    first = features[0] if features else {}
    verdict = (" ".join(f["verdict"].split(". ")[0].rstrip(".") + "." for f in features) if features else
               "No spurious features were configured; only tagging quality and layer comparisons were measured.")
    per_type = {r.property: float(r.value) for r in ents[ents.metric == "f1"].itertuples() if r.property != "entity"}
    speeds = [t["tokens_per_second"] for t in train_logs.values() if t.get("tokens_per_second")]
    e = tables["entities"]
    per_seed = []
    for seed, t in train_logs.items():
        seed_f1 = float(e[(e.seed.astype(str) == str(seed)) & (e.property == "entity") & (e.metric == "f1")].value.iloc[0])
        # a tagger that finds (almost) no entities has collapsed, as a classifier stuck on one class has
        per_seed.append({"seed": seed, "clean_accuracy": seed_f1,
                         "collapsed": bool(seed_f1 <= config.analyses.reliance_threshold),
                         "final_validation_f1": t["epochs"][-1].get("validation_f1"),
                         "final_validation_accuracy": t["epochs"][-1].get("validation_accuracy")})
    summary = {
        "status": "running", "name": config.name, "config_hash": config.hash(), "verdict": verdict,
        "task_metric": "entity F1", "task_accuracy": f1,
        **{k: first.get(k) for k in ("aligned_accuracy", "conflicting_accuracy", "s_only_error", "flip_rate",
                                     "reliance_gap")},
        "features": features, "seeds": config.run_seeds,
        "per_seed": per_seed,
        "probe_family": config.analyses.probe_family,
        "task": {"type": "token-classification", "dataset": config.task.dataset, "classes": data.tags,
                 "entity_types": data.entity_types, "n_examples": data.n_total, "n_train": len(data.train),
                 "n_validation": len(data.val), "n_test": len(data.test), "entity_f1_per_type": per_type,
                 "final_validation_accuracy": float(np.mean([t["epochs"][-1].get("validation_f1") or 0.0
                                                             for t in train_logs.values()]))},
        "model": {"backbone": config.model.backbone},
        "throughput": {"train_tokens_per_second": float(np.mean(speeds)) if speeds else None},
        "training": {"strategy": config.finetune.strategy,
                     "trainable_parameters": _first_int(train_logs, "trainable_parameters"),
                     "total_parameters": _first_int(train_logs, "total_parameters"),
                     "seconds": float(sum(t.get("seconds", 0.0) for t in train_logs.values()))},
        "reused_stages": reused, "device": str(device), "seed": config.seed, "versions": _versions(),
    }
    if pretraining is not None:
        summary["pretraining"] = pretraining
    return summary
