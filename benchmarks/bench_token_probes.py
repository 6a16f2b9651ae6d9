"""Token-level probing: probe's word extraction and batched probes vs the plain way.

On WNUT-16 sentences (``probe.data.sources.load_wnut16``; words = ``sentence.tokens``):

(a) word vectors of every layer (first subword of each word): a per-sentence forward pass with
    a Python loop mapping pieces to words, vs :func:`extract_words` (length-sorted batches under
    a token budget, gathered with index tensors); both must agree;
(b) probes for every (layer, label set) — the word properties of :mod:`probe.tasks.tokens.properties`,
    the BIO tag and entity / not-entity — on the same sentence-grouped split and fixed C:
    ``make_pipeline(StandardScaler(), LogisticRegression(lbfgs))`` fitted per layer and per property,
    vs :func:`token_probe_table` (batched solves; its time includes the bootstrap intervals) and
    :func:`fit_probes_batched` alone; test accuracies side by side (they agree within ~1 point).
    C chosen by cross-validation, with the control task, is timed once on its own.

Timings are medians of ``--repeats`` alternating runs. Do not run it on a busy machine.

    python benchmarks/bench_token_probes.py --sentences 1000 --repeats 3 --out benchmarks/RESULTS_token_probes.md
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import time
from contextlib import redirect_stdout

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from probe.analyses.probing import fit_probes_batched
from probe.data.sources import load_wnut16
from probe.models.backbones import load_encoder, load_tokenizer
from probe.tasks.tokens.extract import extract_words, words_at
from probe.tasks.tokens.probing import token_probe_split, token_probe_table
from probe.tasks.tokens.properties import word_properties, word_types
from sklearn_reference import sklearn_probe_accuracy


def plain_word_vectors(model, tokenizer, sentences: list[list[str]], max_length: int) -> np.ndarray:
    """What a notebook usually does: one sentence at a time, each word's first piece found in a loop."""
    vectors = []
    with torch.inference_mode():
        for words in sentences:
            enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden = model(**enc, output_hidden_states=True).hidden_states
            seen = set()
            for pos, w in enumerate(enc.word_ids(0)):
                if w is None or w in seen:
                    continue
                seen.add(w)
                vectors.append(torch.stack([h[0, pos] for h in hidden]))
    return torch.stack(vectors, 1).numpy()


def sklearn_probes(acts: np.ndarray, labels: dict[str, np.ndarray], train: np.ndarray, test: np.ndarray,
                   C: float) -> dict[tuple[int, str], float]:
    """One ``Pipeline(StandardScaler, LogisticRegression)`` fit per layer and per property."""
    return {(layer, p): float(sklearn_probe_accuracy(acts[layer], y, train, test, C=C, max_iter=2000).mean())
            for layer in range(acts.shape[0]) for p, y in labels.items()}


def _median(ts: list[float]) -> float:
    return float(np.median(ts))


def _runs(ts: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in ts)


def run(args: argparse.Namespace) -> None:
    sents = load_wnut16()
    idx = np.sort(np.random.default_rng(args.seed).choice(len(sents), min(args.sentences, len(sents)), replace=False))
    sentences = [list(sents[i].tokens) for i in idx]
    tags = [list(sents[i].tags) for i in idx]
    tokenizer = load_tokenizer(args.model)
    model = load_encoder(args.model, 0).eval()
    device = torch.device("cpu")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load average {os.getloadavg()[0]:.2f} at start")

    # (a) extraction
    extract_words(model, tokenizer, sentences[:16], args.max_length, args.batch_size, device, progress=False)
    t_plain, t_ours = [], []
    for _ in range(args.repeats):  # alternate, so background load hits both sides alike
        t0 = time.perf_counter()
        plain = plain_word_vectors(model, tokenizer, sentences, args.max_length)
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = extract_words(model, tokenizer, sentences, args.max_length, args.batch_size, device, progress=False)
        t_ours.append(time.perf_counter() - t0)
    acts = res["activations"]
    n_words = acts.shape[1]
    err = float(np.abs(acts - plain).max())
    mp, mo = _median(t_plain), _median(t_ours)
    print(f"data: {len(sentences)} wnut16 sentences, {n_words} words ({res['dropped']} cut by max_length "
          f"{args.max_length}), {res['tokens']} tokens; {args.model}, {acts.shape[0]} layers x {acts.shape[2]}")
    print(f"(a) per-sentence loop + Python piece-to-word loop: median {mp:.2f} s (runs: {_runs(t_plain)}), "
          f"{n_words / mp:.0f} words/s")
    print(f"    extract_words (batch {args.batch_size}, length-sorted, token budget): median {mo:.2f} s "
          f"(runs: {_runs(t_ours)}), {n_words / mo:.0f} words/s")
    print(f"    speed-up {mp / mo:.2f}x; max abs difference of word vectors {err:.2e}")

    # (b) probes
    wi = res["word_index"]
    words = words_at(sentences, wi)
    labels, skipped = word_properties(words, "auto", min_count=args.min_count)
    tag_names = sorted({t for s in tags for t in s})
    labels["tag"] = np.array([tag_names.index(tags[s][w]) for s, w in wi], dtype=np.int64)
    labels["entity"] = np.array([tags[s][w] != "O" for s, w in wi], dtype=np.int64)
    sentence_ids, types = wi[:, 0], word_types(words)
    train, test = token_probe_split(sentence_ids, args.seed, args.max_words)
    labels = {p: y for p, y in labels.items() if np.unique(y[train]).size > 1}
    print(f"(b) {len(labels)} label sets ({', '.join(labels)}; skipped: {skipped or 'none'}); "
          f"split by sentence: train {train.size} / test {test.size} words; "
          f"{acts.shape[0] * len(labels)} probes, C={args.C}")
    kw = dict(seed=args.seed, C=args.C, n_boot=args.n_boot, max_words=args.max_words, control=False)
    token_probe_table({"m": acts}, labels, sentence_ids, types, **kw)  # warm-up
    t_sk, t_table, t_fit = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        acc_sk = sklearn_probes(acts, labels, train, test, args.C)
        t_sk.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        table = token_probe_table({"m": acts}, labels, sentence_ids, types, **kw)
        t_table.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit_probes_batched({"m": acts}, labels, train, test, C=args.C, seed=args.seed)
        t_fit.append(time.perf_counter() - t0)
    acc = table[table.metric == "accuracy"].set_index(["layer", "property"]).value
    diff = np.array([abs(acc_sk[k] - acc.loc[k]) for k in acc_sk])
    ms, mt, mf = _median(t_sk), _median(t_table), _median(t_fit)
    print(f"    scikit-learn, one Pipeline(StandardScaler, LogisticRegression) per layer x property: median "
          f"{ms:.2f} s (runs: {_runs(t_sk)}), {len(acc_sk) * train.size / ms:.0f} training words/s over all probes")
    print(f"    token_probe_table (batched, incl. {args.n_boot}-sample bootstrap intervals): median {mt:.2f} s "
          f"(runs: {_runs(t_table)}); speed-up {ms / mt:.2f}x")
    print(f"    fit_probes_batched alone (same probes, no intervals): median {mf:.2f} s (runs: {_runs(t_fit)}); "
          f"speed-up {ms / mf:.2f}x")
    print(f"    test accuracy difference over {diff.size} probes: max {100 * diff.max():.2f} points, "
          f"mean {100 * diff.mean():.3f} points")
    if not args.skip_cv:
        t0 = time.perf_counter()
        cv = token_probe_table({"m": acts}, labels, sentence_ids, types, seed=args.seed, C="cv", n_boot=args.n_boot,
                               max_words=args.max_words, control=True)
        t_cv = time.perf_counter() - t0
        chosen = cv[cv.metric == "probe_C"].value.value_counts().to_dict()
        print(f"    token_probe_table with C by 3-fold CV and the word-type control task (one run): {t_cv:.2f} s; "
              f"C chosen: {chosen}; type overlap {cv[cv.metric == 'type_overlap'].value.iloc[0]:.3f}")
    print("    accuracy per layer (scikit-learn / batched):")
    print("    layer  " + "  ".join(f"{p:>15s}" for p in labels))
    for layer in range(acts.shape[0]):
        cells = [f"{acc_sk[(layer, p)]:.3f} / {acc.loc[(layer, p)]:.3f}".rjust(15) for p in labels]
        print(f"    {layer:5d}  " + "  ".join(cells))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=1000, help="wnut16 sentences (a seeded random subset)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="minilm", help="backbone (minilm; tiny-bert for a smoke test)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-words", type=int, default=4000, help="probe words (whole sentences), as token_probe_table")
    ap.add_argument("--min-count", type=int, default=20, help="word properties: fewest words in the rarer class")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-cv", action="store_true", help="do not time the cross-validated run")
    ap.add_argument("--out", default=None, help="append the output as a markdown section to this file")
    args = ap.parse_args()
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        run(args)
    text = buffer.getvalue()
    print(text, end="")
    if args.out:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                         if k not in ("out", "skip_cv")) + (" --skip-cv" if args.skip_cv else "")
        with open(args.out, "a") as f:
            f.write(f"\n## Token probes: {args.model}, {args.sentences} wnut16 sentences ({stamp})\n\n"
                    f"    python benchmarks/bench_token_probes.py {flags}\n\n```\n{text}```\n")


if __name__ == "__main__":
    main()
