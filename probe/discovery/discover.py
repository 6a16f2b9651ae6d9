"""``probe.discover``: candidates from the data and the model, a causal test of each, verdicts.

The run's discovery stage (:func:`probe.tasks.sequence.analyses.discovery_tables`) calls the same
function as a notebook does::

    table = probe.discover(model, tokenizer, train_texts, train_labels, test_texts, test_labels,
                           classes, reference=pretrained_encoder, max_length=64)
    table[table.verdict == "used shortcut"]
    table.attrs["examples"]      # up to three edited texts per tested candidate
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from probe.discovery.candidates import mark_significant, property_association, word_association, word_key
from probe.discovery.causal_test import (DELETION_CONTROLS, NO_CONTROLS, InsertionPool, benjamini_hochberg,
                                         candidate_effects)
from probe.discovery.nonword import NonwordTester, select_nonword
from probe.discovery.property_edits import has_edit
from probe.discovery.templates import template_association
from probe.discovery.verdicts import decisive_p, verdict
from probe.engine.context import log
from probe.discovery.vocabulary import SCREEN_MIN, reference_rates, vocabulary_candidates, vocabulary_controls

PROBE_HEAD_TEXTS = 400  # training texts the reference's probe head is fitted on, at most
ORDER = ["rank", "feature", "kind", "class", "source", "planted", "count", "z", "pmi", "amplification",
         "override_rate", "override_rate_ci_low", "override_rate_ci_high", "override_control", "override_effect",
         "override_effect_ci_low", "override_effect_ci_high", "delta_p", "delta_p_ci_low", "delta_p_ci_high",
         "deletion_drop", "deletion_drop_ci_low", "deletion_drop_ci_high", "deletion_control", "deletion_effect",
         "deletion_effect_ci_low", "deletion_effect_ci_high", "n_insert", "n_delete", "p_insert", "q_insert",
         "p_delete", "q_delete", "p_value", "q_value", "verdict", "reference_override_rate",
         "reference_override_control"]


def scorer(model, tokenizer, max_length: int, batch_size: int, device):
    """``texts -> P(class) [N, K]`` for a sequence classifier, batched under the run's token budget."""
    from probe.models.batching import predict_logits

    def score(texts: list[str]) -> np.ndarray:
        logits = predict_logits(model, tokenizer, list(texts), max_length, batch_size, device)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return score


def _reference_head(reference, tokenizer, texts, labels, k: int, max_length: int, batch_size: int, seed: int):
    """The reference as a classifier: a given classifier as it is, a bare encoder through a probe head
    fitted on (at most :data:`PROBE_HEAD_TEXTS`) training texts."""
    if reference is None or getattr(reference, "answers_task", False) or \
            hasattr(getattr(reference, "config", None), "id2label") and \
            type(reference).__name__.endswith(("ForSequenceClassification", "Classifier")):
        return reference  # a classifier, or a label-word LM answering zero-shot
    from probe.models.probe_head import fit_probe_head

    rng = np.random.default_rng([seed, 53])
    idx = np.sort(rng.choice(len(texts), min(PROBE_HEAD_TEXTS, len(texts)), replace=False))
    labels = np.asarray(labels)[idx]
    if np.unique(labels).size < k:
        return None  # the sample misses a class: no probe head over every class
    return fit_probe_head(reference, tokenizer, [texts[i] for i in idx], labels, max_length=max_length,
                          batch_size=batch_size, num_labels=k)


def _select(data: pd.DataFrame, amp: pd.DataFrame, planted: dict[str, str], hide_planted: bool,
            max_candidates: int) -> list[tuple[str, str, str, str]]:
    """``(feature, kind, class, source)`` to test, most promising first: planted tokens (unless hidden),
    then data-significant words and bigrams by z and model candidates by amplification, alternately."""
    feats = data[data.kind.isin(["word", "bigram"])]
    by_z = dict(by=["z", "feature", "class"], ascending=[False, True, True], kind="stable")  # ties: by name
    sig = feats[feats.significant].sort_values(**by_z).drop_duplicates("feature")
    words = feats[feats.kind == "word"].sort_values(**by_z).drop_duplicates("feature")
    best_class = dict(zip(words.feature, words["class"]))
    col = "amplification" if amp["amplification"].notna().any() else "ratio_finetuned"
    model_side = amp[amp.word.isin(best_class) & (amp[col] > 1)].sort_values(
        [col, "word"], ascending=[False, True], kind="stable")
    amplified = set(model_side.word.head(max_candidates))
    data_list = list(zip(sig.feature, sig.kind, sig["class"]))
    model_list = [(w, "word", best_class[w]) for w in model_side.word]
    chosen: dict[str, tuple[str, str, str, str]] = {}
    if not hide_planted:
        for token, cls in planted.items():
            chosen[token] = (token, "word", cls, "planted")
    sig_set = set(sig.feature)
    for i in range(max(len(data_list), len(model_list))):
        for lst in (data_list, model_list):
            if i < len(lst) and len(chosen) < max_candidates and lst[i][0] not in chosen:
                f, kind, cls = lst[i]
                source = "both" if f in sig_set and f in amplified else ("data" if f in sig_set else "model")
                chosen[f] = (f, kind, cls, source)
    return list(chosen.values())


def _controls(data: pd.DataFrame, exclude: set[str], count: int, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` control words: letters only, |z| < 1 for every class, training count within a factor of 2 of
    ``count`` (the centre of a candidate's frequency band; the closest counts where too few), drawn at random."""
    words = data[(data.kind == "word")]
    stats = words.groupby("feature").agg(count=("count", "first"), zmax=("z", lambda z: np.abs(z).max()))
    ok = stats[(stats.zmax < 1) & stats.index.str.isalpha() & ~stats.index.isin(list(exclude))]
    if ok.empty:
        return []
    dist = np.abs(np.log2(ok["count"].to_numpy(dtype=float) / count))
    near = ok.index[dist <= 1].tolist()
    if len(near) < n:
        near = ok.index[np.argsort(dist, kind="stable")[: max(n, 1)]].tolist()
    return sorted(rng.choice(near, min(n, len(near)), replace=False).tolist())


def discover(model, tokenizer, train_texts: Sequence[str], train_labels, test_texts: Sequence[str], test_labels,
             classes: Sequence[str] | None = None, *, reference=None, max_length: int = 64,
             planted: dict[str, str] | None = None, hide_planted: bool = False, min_count: int = 20,
             alpha: float = 0.01, max_candidates: int = 20, n_examples: int = 150, controls: int = 5,
             q: float = 0.05, bootstrap: int = 1000, seed: int = 0, min_effect: float = 0.1,
             max_position: int = 5, batch_size: int = 64, properties: bool = True, templates: bool = True,
             validation_texts: Sequence[str] = (), validation_labels=None, device=None,
             vocabulary: bool = False, vocabulary_k: int = 10, vocabulary_texts: int = 8,
             vocabulary_screen: int = 8, vocabulary_tested: int = 1, vocabulary_min_screen: float = SCREEN_MIN,
             progress: bool = True) -> pd.DataFrame:
    """Shortcuts nobody planted (docs/design.md §8): one row per tested candidate, ranked by the override
    effect, then the untested data-significant features and property slices.

    ``model``: the fine-tuned sequence classifier; ``reference``: its pretrained encoder (explained
    through a probe head fitted on the training texts) or a classifier, or None (no amplification).
    Candidates come from ``train_texts`` (Gardner et al. 2021 z, Bonferroni at ``alpha``); the
    held-out ``test_texts`` are halved at random: model candidates are ranked by attribution on up to
    ``n_examples`` texts of one half, and every causal test runs on the other half, so a candidate is
    never tested on the texts that selected it; ``validation_texts`` join the tested half. ``templates``: templates
    too (:mod:`probe.discovery.nonword`). ``planted``: ``{token: class}`` of planted features, always tested and
    flagged unless ``hide_planted``. With ``vocabulary``, whole words of the tokenizer's vocabulary that the model's
    gradient ranks as triggers (:mod:`probe.discovery.vocabulary`, ``vocabulary_k`` per class screened by insertion on
    the ranking half, ``vocabulary_tested`` per class tested if they override at least ``vocabulary_min_screen`` of
    the screen) join with source "vocabulary". The planned number of edited texts and an estimate of the time are
    logged before the tests, which show a progress bar (``progress``). The table's ``attrs`` hold ``examples`` (edited
    texts), ``seconds``, and with ``vocabulary`` ``vocabulary_seconds`` and ``vocabulary_screen`` (every screened
    word: gradient score and rank, screened override rate and ΔP)."""
    from probe.discovery.model_candidates import amplification_table

    t0 = time.perf_counter()
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    classes = list(classes) if classes is not None else [str(i) for i in range(int(train_labels.max()) + 1)]
    planted = {word_key(k): v for k, v in (planted or {}).items()}
    device = next(model.parameters()).device if device is None else device
    rng = np.random.default_rng([seed, 71])
    data = word_association(train_texts, train_labels, classes, min_count)
    if properties:
        data = pd.concat([data, property_association(train_texts, train_labels, classes, min_count)],
                         ignore_index=True)
    if templates:
        data = pd.concat([data, template_association(train_texts, train_labels, classes, min_count)],
                         ignore_index=True)
    data = mark_significant(data, alpha)
    # held-out halves: model candidates are ranked on one and tested on the other (no double dipping)
    order = rng.permutation(len(test_texts))
    ranked, tested = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])
    sample = ranked[np.sort(rng.choice(ranked.size, min(n_examples, ranked.size), replace=False))]
    head = _reference_head(reference, tokenizer, list(train_texts), train_labels, len(classes), max_length,
                           batch_size, seed)
    amp = amplification_table(model, head, tokenizer, [test_texts[i] for i in sample], max_length)
    chosen = _select(data, amp, planted, hide_planted, max_candidates)
    score = scorer(model, tokenizer, max_length, batch_size, device)
    t_vocab, vocab = time.perf_counter(), None
    if vocabulary:
        found, vocab = vocabulary_candidates(
            model, tokenizer, score, [test_texts[i] for i in ranked], test_labels[ranked], len(classes),
            k=vocabulary_k, n_texts=vocabulary_texts, n_screen=vocabulary_screen, per_class=vocabulary_tested,
            min_screen=vocabulary_min_screen,
            max_length=max_length, max_position=max_position, batch_size=batch_size, device=device, rng=rng,
            exclude={f for f, *_ in chosen}, progress=progress)
        chosen += [(w, "word", classes[c], "vocabulary") for w, c in zip(found.word, found["class"])]
        t_search, screened = time.perf_counter() - t_vocab, found.attrs.get("screened")
    held, held_labels = _held(test_texts, test_labels, tested, validation_texts, validation_labels)
    rows, examples, pool = _test_all(chosen, data, score, held, held_labels, classes, n_examples, controls,
                                     max_position, bootstrap, rng, vocab, progress)
    other, more, more_examples = _test_nonword(max(1, max_candidates // 2), chosen, data, train_texts, score, held,
                                               held_labels, classes, n_examples, controls, max_position, bootstrap, rng)
    rows, examples, chosen = rows + more, examples + more_examples, chosen + other
    table = _assemble(rows, data, amp, chosen, planted, q, min_effect)
    if vocabulary:  # the search, the vocabulary words' tests and the reference's rates
        t_ref = time.perf_counter()
        table = _reference_columns(table, head, tokenizer, pool, classes, max_length, batch_size)
        table.attrs["vocabulary_seconds"] = time.perf_counter() - t_ref + t_search + sum(
            r["seconds"] for r in rows if r["source"] == "vocabulary")
        if screened is not None:
            table.attrs["vocabulary_screen"] = screened.assign(**{"class": [classes[c] for c in screened["class"]]})
    table.attrs["examples"] = pd.DataFrame(examples, columns=["feature", "class", "edit", "text", "before",
                                                              "p_before", "p_after"])
    table.attrs["seconds"] = time.perf_counter() - t0
    return table


def _held(test_texts, test_labels: np.ndarray, tested: np.ndarray, validation_texts, validation_labels):
    """The held-out texts the causal tests draw from: the tested half of the test split and the validation
    split (never training texts), with their labels."""
    extra = np.asarray(validation_labels if validation_labels is not None else [], dtype=test_labels.dtype)
    return [test_texts[i] for i in tested] + list(validation_texts), np.concatenate([test_labels[tested], extra])


def _test_nonword(cap: int, chosen, data: pd.DataFrame, train_texts, score, held: list[str], held_labels: np.ndarray,
                  classes: list[str], n_examples: int, n_controls: int, max_position: int, n_boot: int,
                  rng: np.random.Generator) -> tuple[list, list[dict], list[dict]]:
    """Shortcuts that are not words (issue 25): up to ``cap`` property slices and templates, tested by their
    edits; ``(chosen, rows, examples)``."""
    other = select_nonword(data, cap)
    if not other:
        return [], [], []
    log(f"discovery: {len(other)} property and template candidates to test by their edits, at most "
        f"{len(other) * 4 * n_examples} edited texts to score (an edit and its control, in each direction)")
    taken = {f for f, *_ in chosen}
    tester = NonwordTester(data, train_texts, lambda count, n: _controls(data, taken, count, n, rng), n_controls,
                           max_position, {f for f, *_ in other})
    return (other, *tester.test(other, score, held, held_labels, score(held), classes, n_examples, n_boot, rng))


def _reference_columns(table: pd.DataFrame, head, tokenizer, pool: InsertionPool, classes: list[str],
                       max_length: int, batch_size: int) -> pd.DataFrame:
    """``reference_override_rate`` and ``reference_override_control`` (the same control words) of every used
    vocabulary trigger: whether the pretrained reference already had it (docs/design.md §8)."""
    table = table.assign(reference_override_rate=np.nan, reference_override_control=np.nan)
    used = table.index[(table.source == "vocabulary") & table.verdict.isin(["used shortcut"])]
    if head is None or not len(used):
        return table
    ref_score = scorer(head, tokenizer, max_length, batch_size, next(head.parameters()).device)
    base = ref_score(pool.texts)  # a reference of its own kind: the texts it predicts as c differ
    for i in used:
        c = classes.index(table.at[i, "class"])
        rates = reference_rates(ref_score, pool, table.at[i, "feature"], c, table.at[i, "controls"].split(), base)
        table.loc[i, ["reference_override_rate", "reference_override_control"]] = [
            rates["reference_override_rate"], rates["reference_override_control"]]
    return table


def _test_all(chosen, data: pd.DataFrame, score, test_texts: list[str], test_labels: np.ndarray,
              classes: list[str], n_examples: int, n_controls: int, max_position: int, n_boot: int,
              rng: np.random.Generator, vocab: pd.DataFrame | None = None, progress: bool = False) -> tuple[list[dict], list[dict],
                                                                                   InsertionPool]:
    """The causal test of every chosen candidate against the controls of its frequency band (a vocabulary
    candidate's: of its tokenizer-rank band, :func:`probe.discovery.vocabulary.vocabulary_controls`),
    widened to the closest training counts where the band has too few; a candidate without any control
    word is not tested: its row says why, and its verdict is inconclusive."""
    t0 = time.perf_counter()
    base = score(test_texts)
    pool = InsertionPool(test_texts, test_labels, base, n_examples, max_position, rng)
    _announce(len(chosen), len(pool.texts), n_examples, n_controls, len(test_texts), time.perf_counter() - t0)
    counts = data[data.kind.isin(["word", "bigram"])].drop_duplicates("feature").set_index("feature")["count"]
    min_count = int(counts.min()) if len(counts) else 1
    exclude = {f for f, *_ in chosen}
    rows, examples = [], []
    ranks = {} if vocab is None else dict(zip(vocab.word, vocab["rank"]))
    for feature, kind, cls, source in tqdm(chosen, desc="discovery: causal tests", unit="candidate",
                                           disable=not progress):
        t0, c = time.perf_counter(), classes.index(cls)
        if source == "vocabulary":
            band, words = vocabulary_controls(vocab, int(ranks[feature]), exclude, n_controls)
            band = ("vocabulary", band)
        else:
            count = int(counts.get(feature, min_count))
            band = int(np.floor(np.log(max(count, 1) / max(min_count, 1)) / np.log(4)))  # powers of 4 above min_count
            words = _controls(data, exclude, min_count * 4 ** (band + 0.5), n_controls, np.random.default_rng(band))
        if not words:
            rows.append({"feature": feature, "kind": kind, "class": cls, "source": source, "controls": "",
                         "n_insert": 0, "n_delete": 0, "p_insert": np.nan, "p_delete": np.nan, "note": NO_CONTROLS,
                         "seconds": time.perf_counter() - t0})
            continue
        control = pool.control_probs(band, words, score)
        out, ex = candidate_effects(feature, c, pool, control, test_texts, base, score, n_examples, n_boot, rng)
        rows.append({"feature": feature, "kind": kind, "class": cls, "source": source,
                     "controls": " ".join(words), **out, "seconds": time.perf_counter() - t0})
        examples += [{"feature": feature, "class": cls, **e} for e in ex]
    return rows, examples, pool


def _announce(n_candidates: int, pool: int, n_examples: int, n_controls: int, n_base: int, seconds: float) -> None:
    """Log the planned number of edited texts (at most: insertions into the pool, deletions with their
    random-word controls, control words per frequency band) and the time they take at the speed of
    the unedited pass that has just run."""
    edits = n_candidates * (pool + n_examples * (1 + DELETION_CONTROLS) + n_controls * pool)
    rate = n_base / seconds if seconds > 0 else float("inf")
    log(f"discovery: {n_candidates} candidates to test, at most {edits} edited texts to score, about "
        f"{edits / rate:.0f} s at {rate:.0f} texts/s (discover.max_candidates and discover.n_examples bound it)")


def _assemble(rows: list[dict], data: pd.DataFrame, amp: pd.DataFrame, chosen, planted: dict[str, str], q: float,
              min_effect: float) -> pd.DataFrame:
    """Tested rows with q-values and verdicts, ranked; then the untested significant rows."""
    tested = score_tested(pd.DataFrame(rows), data, q, min_effect)
    amplification = dict(zip(amp.word, amp.amplification))
    done = {(f, c) for f, _, c, _ in chosen}
    rest = data[data.significant & ~pd.Series([(f, c) in done for f, c in zip(data.feature, data["class"])],
                                              index=data.index, dtype=bool)].sort_values("z", ascending=False)
    no_edit = [k == "property" and not has_edit(f) for f, k in zip(rest.feature, rest.kind)]
    rest = rest.assign(source="data", verdict=np.where(np.array(no_edit, dtype=bool), "correlational", "not tested"))
    table = pd.concat([tested, rest.drop(columns=["z_threshold"])], ignore_index=True)
    table["amplification"] = [amplification.get(f, np.nan) for f in table.feature]
    table["planted"] = table.feature.isin(list(planted))
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table[[c for c in ORDER if c in table] + [c for c in ("controls", "note") if c in table]]


def score_tested(tested: pd.DataFrame, data: pd.DataFrame, q: float, min_effect: float) -> pd.DataFrame:
    """Tested candidates with their data statistics, BH q-values over every p-value (insertion and
    deletion of every candidate), verdicts and the decisive p / q, ranked by override effect."""
    if tested.empty:
        return tested
    stats = data.set_index(["feature", "class"])
    qs = benjamini_hochberg(np.concatenate([tested.p_insert.to_numpy(), tested.p_delete.to_numpy()]))
    tested["q_insert"], tested["q_delete"] = qs[: len(tested)], qs[len(tested):]
    for col in ("count", "z", "pmi", "significant"):
        tested[col] = [stats[col].get((f, c), np.nan) for f, c in zip(tested.feature, tested["class"])]
    tested["significant"] = tested["significant"].eq(True)  # NaN (a vocabulary word not in the data): False
    tested["verdict"] = [verdict(r, q, min_effect) for r in tested.to_dict("records")]
    pq = [decisive_p(r) for r in tested.to_dict("records")]
    tested["p_value"], tested["q_value"] = [p for p, _ in pq], [v for _, v in pq]
    order = [c for c in ("override_effect", "delta_p", "deletion_effect") if c in tested]
    return tested.sort_values(order, ascending=False, na_position="last", kind="stable")
