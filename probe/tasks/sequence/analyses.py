"""The analyses of a text-classification run, per fine-tuning seed (docs/design.md §5).

- :func:`analyse`: behaviour (clean accuracy, reliance on each planted token), probing with control
  tasks and MDL on pooled activations of both models, and CKA;
- :func:`invariance_table` and :func:`attribution_tables`: invariance tests, captum attributions
  with ERASER faithfulness for both models (the pretrained one through a linear probe head on its
  frozen last layer, so that both answer the same task), and word heatmaps;
- :func:`causal_tables`: erasure and layer swaps / head ablation (:mod:`probe.causal.experiment`)
  on the held-out half of the probing set, through a :class:`SequencePredictor`.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from probe.config import Config
from probe.engine.context import RunContext, log
from probe.engine.guard import guarded

SCAN_EXAMPLES = 64  # conflicting examples the single-head scan ranks heads on (72 heads × 1 pass each for minilm)


def analyse(config: Config, data, pre_acts: np.ndarray, fine_acts: np.ndarray, preds: dict[str, np.ndarray],
            train_log: dict, seed: int, progress: bool) -> dict[str, pd.DataFrame]:
    """Training curve, probing (+ MDL), CKA and behaviour of one seed; tidy tables without the seed column."""
    from probe.analyses.similarity import cka_by_layer, cka_matrix, cka_matrix_table

    a = config.analyses
    tables: dict[str, pd.DataFrame] = {}
    if train_log["epochs"]:  # a given checkpoint has no training curve
        tables["training"] = pd.DataFrame([{**{k: e[k] for k in ("epoch", "train_loss", "validation_accuracy")},
                                            **{k: v for k, v in e.items() if k.startswith("augmented_")}}  # texts changed
                                           for e in train_log["epochs"]])
    acts = {"pretrained": pre_acts, "finetuned": fine_acts}
    if a.probing:
        tables.update(_probing(config, data, acts, seed, progress))
    if a.similarity:
        tables["cka"] = cka_by_layer(pre_acts, fine_acts, debiased=a.cka_debiased)
        matrices = [cka_matrix_table(cka_matrix(pre_acts, fine_acts), metric="linear_cka")]
        if a.cka_debiased:
            matrices.append(cka_matrix_table(cka_matrix(pre_acts, fine_acts, debiased=True),
                                             metric="debiased_linear_cka"))
        tables["cka_matrix"] = pd.concat(matrices, ignore_index=True)
    tables["behaviour"] = behaviour_table(config, data, preds, seed)
    return tables


def behaviour_table(config: Config, data, preds: dict[str, np.ndarray], seed: int) -> pd.DataFrame:
    from probe.analyses.behaviour import reliance_metrics
    from probe.analyses.stats import bootstrap_mean, metric_row

    a = config.analyses
    rows = [metric_row(bootstrap_mean((preds["clean"] == data.test_labels).astype(float), a.bootstrap_samples,
                                      np.random.default_rng([seed, 5, 0])),
                       model="finetuned", layer=None, property="task", metric="clean_accuracy",
                       n=len(data.test_labels))]
    frames = [pd.DataFrame(rows)]
    if a.behaviour:
        for p in data.planted:
            frames.append(reliance_metrics(preds["clean"], preds[p.feature.label], data.test_labels, p.target,
                                           a.bootstrap_samples, seed, p.feature.label))
    return pd.concat(frames, ignore_index=True)


def _probing(config: Config, data, acts: dict[str, np.ndarray], seed: int, progress: bool) -> dict[str, pd.DataFrame]:
    from probe.analyses.control_tasks import document_type
    from probe.analyses.probing import probe_split, probe_suite
    from probe.data.properties import compute_properties

    a = config.analyses
    properties = {"task": data.test_labels}
    for p in data.planted:
        properties[p.feature.label] = p.probe_has_token.astype(int)
    names = None if a.properties == "auto" else a.properties
    natural, skipped = compute_properties(data.probe_texts, names, min_count=10, return_skipped=True)
    for name, reason in skipped.items():
        log(f"probing: property {name} skipped: {reason}")
    properties.update(natural)
    types = [document_type(t) for t in data.test_texts]
    train_idx, test_idx = probe_split(data.test_labels, seed)
    out = {"probing": probe_suite(acts, properties, types, train_idx, test_idx, a.probe_family, a.probe_C,
                                  a.probe_max_iter, a.bootstrap_samples, seed, a.control_tasks, progress)}
    if a.mdl:
        out["mdl"] = mdl_table(config, data, acts, properties, types, seed)
    return out


def mdl_table(config: Config, data, acts: dict[str, np.ndarray], properties: dict[str, np.ndarray],
              types: list[str], seed: int) -> pd.DataFrame:
    """Online codelength (Voita & Titov 2020) of the task, each planted feature and their control
    tasks for every (model, layer), plus relative extractability (Lovering et al. 2021) of each
    planted feature against its target class on balanced binary probes."""
    from probe.analyses.control_tasks import control_labels
    from probe.analyses.mdl import online_codelength_layers
    from probe.analyses.stats import bootstrap_indices

    n_boot = config.analyses.bootstrap_samples
    models = list(acts)
    L = acts[models[0]].shape[0]
    designs = np.concatenate([acts[m] for m in models])  # [models * L, n, d]
    keys = [(m, l) for m in models for l in range(L)]
    names = ["task"] + [p.feature.label for p in data.planted]
    labels = {}
    for i, name in enumerate(names):
        labels[name] = properties[name]
        control = control_labels(types, properties[name], np.random.default_rng([seed, 6, i]))
        if np.unique(control).size > 1:  # too few document types give a constant control: no control
            labels[f"control:{name}"] = control
    bits = online_codelength_layers(designs, labels, seed=seed)
    n = designs.shape[1]
    boot = bootstrap_indices(n, n_boot, np.random.default_rng([seed, 9]))
    rows = []

    def add(model, layer, prop, metric, value, samples):
        lo, hi = np.quantile(samples, [0.025, 0.975]) if samples is not None else (np.nan, np.nan)
        rows.append({"model": model, "layer": layer, "property": prop, "metric": metric, "value": float(value),
                     "ci_low": float(lo), "ci_high": float(hi)})

    for name in names:
        uniform = n * np.log2(len(np.unique(labels[name])))
        for g, (m, l) in enumerate(keys):
            for prefix in ("", "control_"):
                if prefix and f"control:{name}" not in bits:
                    continue
                b = bits[("control:" if prefix else "") + name][g]
                total, samples = b.sum(), b[boot].sum(axis=1)
                add(m, l, name, f"{prefix}codelength_bits", total, samples)
                add(m, l, name, f"{prefix}compression", uniform / total, uniform / samples)
    for p in data.planted:
        _extractability_rows(designs, keys, properties[p.feature.label], (data.test_labels == p.target).astype(int),
                             p.feature.label, n_boot, seed, add)
    return pd.DataFrame(rows)


def _extractability_rows(designs: np.ndarray, keys: list, s_lab: np.ndarray, t_lab: np.ndarray, feature: str,
                         n_boot: int, seed: int, add) -> None:
    """Relative extractability codelength(s) / codelength(t) per (model, layer), each on its own
    balanced binary sample of the same size, with a bootstrap interval."""
    from probe.analyses.mdl import online_codelength_layers
    from probe.analyses.stats import bootstrap_indices

    rng = np.random.default_rng([seed, 10])
    n = len(s_lab)
    per_class = int(min(s_lab.sum(), n - s_lab.sum(), t_lab.sum(), n - t_lab.sum()))
    idx = {k: np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                                      for c in (0, 1)])) for k, y in (("s", s_lab), ("t", t_lab))}
    bs = online_codelength_layers(designs[:, idx["s"]], {"s": s_lab[idx["s"]]}, seed=seed)["s"]
    bt = online_codelength_layers(designs[:, idx["t"]], {"t": t_lab[idx["t"]]}, seed=seed)["t"]
    boot2 = bootstrap_indices(2 * per_class, n_boot, np.random.default_rng([seed, 12]))
    boot3 = bootstrap_indices(2 * per_class, n_boot, np.random.default_rng([seed, 13]))
    for g, (m, l) in enumerate(keys):
        add(m, l, feature, "relative_extractability", bs[g].sum() / bt[g].sum(),
            bs[g][boot2].sum(axis=1) / bt[g][boot3].sum(axis=1))


# --- invariance and attribution -------------------------------------------------------------------

def invariance_table(config: Config, data, model, tokenizer, seed: int, sides: tuple = (None,)) -> pd.DataFrame:
    """CheckList invariance of the fine-tuned model on a sample of test texts (Ribeiro et al. 2020). Pairs
    of texts pass ``sides=("first", "second")``: each perturbation on each text in turn, the property
    named ``first: lowercase``, ``second: lowercase`` and so on."""
    from probe.analyses.invariance import invariance_metrics

    a = config.analyses
    rng = np.random.default_rng([seed, 15])
    idx = np.sort(rng.choice(len(data.test_texts), min(a.invariance_examples, len(data.test_texts)), replace=False))
    frames = []
    for side in sides:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the uncased-tokenizer note is kept in the identical_inputs column
            rows = invariance_metrics(model, tokenizer, [data.test_texts[i] for i in idx],
                                      max_length=config.task.max_length, labels=data.test_labels[idx],
                                      n_boot=a.bootstrap_samples, seed=seed,
                                      side=None if side is None else ("first", "second").index(side))
        frames.append(rows if side is None else rows.assign(property=side + ": " + rows.property))
    return pd.concat(frames, ignore_index=True)


def attribution_tables(config: Config, data, pretrained, model, tokenizer, pre_acts: np.ndarray, seed: int,
                       progress: bool, pair_metrics=None) -> dict[str, pd.DataFrame]:
    """What the prediction looks at (captum attributions, ERASER faithfulness) for both models, on
    clean, conflicting and aligned examples. The pretrained model is explained through a linear
    probe head fitted on its frozen last layer (docs/design.md §5), so both answer the same task.
    Pairs of texts pass ``pair_metrics(attributions, feature, token, model) -> rows`` (the mass per side,
    :mod:`probe.tasks.pairs.attribution`), which replaces the token metrics; their faithfulness re-predicts
    pairs without their top words, overall and, for the first of ``analyses.faithfulness_methods``, per side
    (:mod:`probe.analyses.faithfulness`)."""
    from tqdm.auto import tqdm

    from probe.analyses.faithfulness import TextProbabilities
    from probe.analyses.probing import probe_split
    from probe.models.compute import keep_one_on
    from probe.models.probe_head import fit_probe_head_on_features

    a = config.analyses
    train_idx, _ = probe_split(data.test_labels, seed)
    head = pretrained if getattr(pretrained, "answers_task", False) else fit_probe_head_on_features(
        pretrained, pre_acts[-1][train_idx], data.test_labels[train_idx], num_labels=len(data.classes), seed=seed,
        id2label=dict(enumerate(data.classes)))  # a label-word LM answers zero-shot: no probe head
    models = {"pretrained": head, "finetuned": model}
    probabilities = {m: TextProbabilities(models[m], tokenizer, config.task.max_length) for m in models}
    partitions = _attribution_partitions(data, a.attribution_examples, seed)
    rows, words = [], []
    device = next(model.parameters()).device
    jobs = [(m, method, part) for m in models for method in a.attribution_methods for part in partitions]
    budgeted, stops = {}, []
    if a.precision == "budget":  # per model and partition: the examples its headline interval needs
        from probe.analyses.budget import budget_rows
        from probe.analyses.budgeted_attribution import budgeted_partition

        for mname, part in tqdm([(m, p) for m in models for p in partitions if p[3]], desc="attribution",
                                disable=not progress, leave=False):
            keep_one_on(device, models[mname], models.values())
            by_method, part_stops = budgeted_partition(config, models[mname], mname, part, tokenizer, seed)
            for method, (texts, idx, attrs) in by_method.items():
                budgeted[(mname, method, part[0], part[1])] = (part[:3] + (texts, idx), attrs)
            stops += part_stops
    for mname, method, part in tqdm(jobs, desc="ERASER" if budgeted else "attribution", disable=not progress,
                                    leave=False):
        keep_one_on(device, models[mname], models.values())  # one model on the accelerator at a time
        part, attrs = budgeted.get((mname, method, part[0], part[1]), (part, None))
        frames, heat = _attribute(config, data, models[mname], mname, method, part, tokenizer, seed,
                                  probabilities[mname], attrs, pair_metrics)
        rows += frames
        if heat is not None:
            words.append(heat)
    keep_one_on(device, model, models.values())
    # every faithfulness method reports the same random-order ERASER baseline (same examples, same seed): keep it once
    out = {"attribution": pd.concat(rows, ignore_index=True).drop_duplicates(ignore_index=True) if rows
           else pd.DataFrame()}
    if words:
        out["attribution_words"] = pd.concat(words, ignore_index=True)
    if stops:
        out["budgets"] = budget_rows(stops)
    return out


def _attribution_partitions(data, k: int, seed: int) -> list[tuple[str, str | None, str | None, list[str], np.ndarray]]:
    """``(partition, feature, token, texts, test indices)``: up to ``k`` clean examples, and per planted
    feature up to ``k`` conflicting and ``k`` aligned examples with the token inserted."""
    rng = np.random.default_rng([seed, 14])
    labels = data.test_labels

    def pick(mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        return np.sort(rng.choice(idx, min(k, idx.size), replace=False))

    clean_idx = pick(np.ones(len(labels), bool))
    partitions = [("clean", None, None, [data.test_texts[i] for i in clean_idx], clean_idx)]
    for p in data.planted:
        for part, mask in (("conflicting", labels != p.target), ("aligned", labels == p.target)):
            idx = pick(mask)
            partitions.append((part, p.feature.label, p.feature.token, [p.inserted[i] for i in idx], idx))
    return partitions


def _attribute(config: Config, data, model, mname: str, method: str, partition, tokenizer, seed: int,
               probabilities, attrs=None, pair_metrics=None) -> tuple[list[pd.DataFrame], pd.DataFrame | None]:
    """The metric rows and (integrated gradients) heatmap rows of one model, method and partition;
    ``probabilities``: the model's :class:`probe.analyses.faithfulness.TextProbabilities`, shared by its
    methods and partitions (their ERASER texts overlap). ``attrs``: the partition's attributions when
    already measured (a precision budget), else computed here with ``analyses.ig_steps``."""
    from probe.analyses.attribution import word_attributions
    from probe.analyses.attribution_metrics import heatmap_rows, spurious_attribution_metrics, telling_examples
    from probe.analyses.faithfulness import faithfulness_metrics

    a = config.analyses
    part, feature, token, texts, idx = partition
    if not texts:
        return [], None
    if attrs is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            attrs = word_attributions(model, tokenizer, texts, method, max_length=config.task.max_length,
                                      n_steps=a.ig_steps)
        if any("convergence" in str(w.message).lower() for w in caught):
            log(f"attribution: {mname} {method} on {part}: large convergence delta; raise analyses.ig_steps")
    frames = []
    if pair_metrics is not None:
        frames.append(pair_metrics(attrs, feature, token, mname))
    elif token is not None:
        frames.append(spurious_attribution_metrics(attrs, token, model_name=mname, n_boot=a.bootstrap_samples,
                                                   seed=seed, feature=feature))
    if method in a.faithfulness_methods:
        frames.append(faithfulness_metrics(model, tokenizer, attrs, model_name=mname, feature=feature or "task",
                                           max_length=config.task.max_length, n_boot=a.bootstrap_samples, seed=seed,
                                           probabilities=probabilities, sides=method == a.faithfulness_methods[0]))
    for df in frames:
        df.insert(df.columns.get_loc("metric") + 1, "partition", part)
    heat = None
    if method == "integrated_gradients":
        heat = heatmap_rows(attrs, telling_examples(attrs, token), model=mname, partition=part, feature=feature,
                            examples=idx, labels=[data.classes[data.test_labels[i]] for i in idx],
                            predictions=data.classes)
    return frames, heat


# --- causal tests ---------------------------------------------------------------------------------

class SequencePredictor:
    """Predictions of the (possibly edited) classifier on held-out counterfactual pairs: the clean
    texts and, per planted feature, the same texts with its token inserted (one forward pass per
    call). The :class:`probe.causal.experiment.Predictor` of text classification."""

    def __init__(self, model, tokenizer, data, held: np.ndarray, max_length: int, batch_size: int, device) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.clean = [data.test_texts[i] for i in held]
        self.labels = data.test_labels[held]
        self.inserted = {p.feature.label: [p.inserted[i] for i in held] for p in data.planted}
        self.targets = {p.feature.label: p.target for p in data.planted}
        self.features = list(self.inserted)

    def _predict(self, texts: list[str]) -> np.ndarray:
        from probe.models.batching import predict_logits

        return predict_logits(self.model, self.tokenizer, texts, self.max_length, self.batch_size,
                              self.device).argmax(1)

    def __call__(self, features: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        from probe.analyses.behaviour import metric_values

        features = self.features if features is None else features
        pred = self._predict(list(self.clean) + [t for f in features for t in self.inserted[f]])
        n = len(self.clean)
        return {f: metric_values(pred[:n], pred[n * (i + 1): n * (i + 2)], self.labels, self.targets[f])
                for i, f in enumerate(features)}

    def clean_correct(self) -> np.ndarray:
        return (self._predict(self.clean) == self.labels).astype(float)

    def scan(self, feature: str, seed: int):
        target = self.targets[feature]
        conflicting = [t for t, y in zip(self.inserted[feature], self.labels) if y != target]
        if len(conflicting) > SCAN_EXAMPLES:  # the scan only ranks heads; the top ones get every metric
            pick = np.sort(np.random.default_rng([seed, 41]).choice(len(conflicting), SCAN_EXAMPLES, replace=False))
            conflicting = [conflicting[i] for i in pick]
        return (lambda: float((self._predict(conflicting) == target).mean())), len(conflicting)


def causal_strata(data) -> np.ndarray:
    """What the causal stage's halves are stratified on: the class and, with planted features, whether
    the probing text holds each token. The guarantee check compares a fresh probe on the held-out half
    with the training half's majority class, which is only the best constant prediction when both
    halves hold the concept at the same rate."""
    strata = data.test_labels.astype(np.int64)
    for p in data.planted:
        strata = strata * 2 + p.probe_has_token.astype(np.int64)
    return strata


@guarded("causal tests")
def causal_tables(ctx: RunContext, model, seed: int) -> dict[str, pd.DataFrame]:
    """Erasure and ablation tables of one fine-tuned classifier (:mod:`probe.causal.experiment`), timed as
    two stages. The probing texts are halved (stratified by :func:`causal_strata`): erasers are fitted on
    the first half; every intervention is judged on the other half's counterfactual pairs."""
    from probe.analyses.probing import probe_split
    from probe.causal.experiment import ablation_table, erasure_table
    from probe.analyses.budget import budget_rows
    from probe.causal.hooks import KeptStates

    config, data = ctx.config, ctx.data
    c, a, ml = config.causal, config.analyses, config.task.max_length
    fit_idx, held_idx = probe_split(causal_strata(data), seed)
    model.to(ctx.device).eval()
    predict = SequencePredictor(model, ctx.tokenizer, data, held_idx, ml, a.batch_size, ctx.device)
    out: dict[str, pd.DataFrame] = {}
    kept = KeptStates()  # the unedited model's hidden states of the held-out batches, for every intervention
    if data.planted:
        with ctx.timer.stage("erasure"):
            t0 = time.perf_counter()
            out["erasure"] = pd.concat([erasure_table(
                model, ctx.tokenizer, [data.probe_texts[i] for i in fit_idx], [data.probe_texts[i] for i in held_idx],
                predict, p.feature.label, p.feature.token, c, ml, a.batch_size, ctx.device, a.bootstrap_samples,
                seed, ctx.progress, kept, side=p.feature.side) for p in data.planted], ignore_index=True)
            log(f"causal: erasure sweep in {time.perf_counter() - t0:.0f} s")
    if c.layer_swap or (c.head_ablation and data.planted):
        with ctx.timer.stage("ablation"):
            t0 = time.perf_counter()
            pretrained = ctx.pretrained_encoder(seed).eval()  # fine-tuning's starting point; stays on the CPU
            if a.precision == "budget" and data.planted:  # held-out batches until the intervals are narrow
                predict = _batched_predictor(model, ctx, held_idx, seed)
            out["ablation"] = ablation_table(model, pretrained, predict, c, a.bootstrap_samples, seed, ctx.progress,
                                             kept)
            if a.precision == "budget" and data.planted:
                out["budgets"] = budget_rows(predict.stops(data.planted[0].feature.label))
            log(f"causal: layer swaps and head ablation in {time.perf_counter() - t0:.0f} s")
    return out


def _batched_predictor(model, ctx: RunContext, held_idx: np.ndarray, seed: int):
    """The held-out pairs in a seeded random order, cut into ``causal.batch`` batches, behind a
    :class:`probe.causal.budget.BatchedPredictor` that stops at ``causal.interval_width``."""
    from probe.analyses.budget import batches
    from probe.causal.budget import BatchedPredictor

    c, a = ctx.config.causal, ctx.config.analyses
    order = np.random.default_rng([seed, 42]).permutation(held_idx)
    parts = [SequencePredictor(model, ctx.tokenizer, ctx.data, order[b], ctx.config.task.max_length, a.batch_size,
                               ctx.device) for b in batches(len(order), c.batch)]
    return BatchedPredictor(parts, c.interval_width, SCAN_EXAMPLES, len(order))
