"""Probing: probe's batched torch solver vs one scikit-learn fit per layer × property.

Activations: mean-pooled hidden states of ``minilm`` (7 layers × 384) for 400 BBC News texts
at max_length 64, cached in /tmp as .npy so reruns skip the extraction. Five properties:
topic (5 classes), a random balanced binary "planted token" label, length bucket (tertiles
of the word count), contains-digit and mentions-money (£ $ €). Probe split: 50/50,
stratified on topic (``probe_split``). Both sides fit the same 35 probes on the same data:
``make_pipeline(StandardScaler(), LogisticRegression(C=1, max_iter=2000))`` in a loop (the
scikit-learn reference, ``benchmarks/sklearn_reference.py``) vs ``fit_probes_batched``; the
script prints both times (median of ``--repeats`` alternating runs), the ratio, and the accuracy
differences.

    python benchmarks/bench_probes.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from probe.analyses.probing import fit_probes_batched, probe_split
from probe.data.sources import load_text_classification
from sklearn_reference import sklearn_probe_accuracy


def load_data(n: int, max_length: int, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Activations ``[7, n, 384]`` (cached in /tmp), the texts and their topic labels."""
    texts, labels, _ = load_text_classification("bbc-news", "text", "label")
    idx = np.random.default_rng(seed).choice(len(texts), n, replace=False)
    texts, labels = [texts[i] for i in idx], labels[idx]
    cache = f"/tmp/probe_bench_minilm_bbc{n}_len{max_length}_seed{seed}.npy"
    if os.path.exists(cache):
        return np.load(cache), texts, labels
    from probe.models.backbones import load_encoder, load_tokenizer
    from probe.representations.extract import extract_pooled

    model = load_encoder("minilm", 0).eval()
    acts = extract_pooled(model, load_tokenizer("minilm"), texts, max_length, 64, torch.device("cpu"),
                          progress=False)["activations"]
    np.save(cache, acts)
    return acts, texts, labels


def make_properties(texts: list[str], topic: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Five probing targets for the same texts."""
    n = len(texts)
    planted = np.zeros(n, dtype=np.int64)
    planted[np.random.default_rng([seed, 1]).permutation(n)[: n // 2]] = 1
    words = np.array([len(t.split()) for t in texts])
    length = np.digitize(words, np.quantile(words, [1 / 3, 2 / 3]))
    digit = np.array([bool(re.search(r"\d", t)) for t in texts], dtype=np.int64)
    money = np.array([bool(re.search(r"[£$€]", t)) for t in texts], dtype=np.int64)
    return {"topic": topic, "planted_token": planted, "length_bucket": length, "has_digit": digit, "money": money}


def run_sklearn(acts, props, train, test, C):
    out = {}
    for layer in range(acts.shape[0]):
        for p, y in props.items():
            out[(layer, p)] = sklearn_probe_accuracy(acts[layer], y, train, test, C=C, max_iter=2000).mean()
    return out


def run_batched(acts, props, train, test, C, dtype):
    res = fit_probes_batched({"m": acts}, props, train, test, C=C, dtype=dtype)
    return {(l, p): r.correct.mean() for (_, l, p), r in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default=None, help="float32 / float64 (default: the solver's, float32)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--cv", action="store_true", help="also time C chosen by 3-fold CV over 4 values")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    acts, texts, topic = load_data(args.n, args.max_length)
    props = make_properties(texts, topic)
    train, test = probe_split(topic, seed=0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.2f} at start")
    print(f"data: minilm pooled activations {acts.shape} (layers, texts, dims), bbc-news max_length "
          f"{args.max_length}; {len(props)} properties; train {len(train)} / test {len(test)}; "
          f"{acts.shape[0] * len(props)} probes, C={args.C}")

    from threadpoolctl import threadpool_limits

    run_batched(acts, props, train, test, args.C, args.dtype)  # warm-up (torch kernels, allocations)
    t_sk, t_sk1, t_b = [], [], []
    for _ in range(args.repeats):  # alternate, so background load hits all sides alike
        t0 = time.perf_counter()
        acc_sk = run_sklearn(acts, props, train, test, args.C)
        t_sk.append(time.perf_counter() - t0)
        with threadpool_limits(1):  # the same, with BLAS / OpenMP pools held to one thread
            t0 = time.perf_counter()
            run_sklearn(acts, props, train, test, args.C)
            t_sk1.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        acc_b = run_batched(acts, props, train, test, args.C, args.dtype)
        t_b.append(time.perf_counter() - t0)
    diff = np.array([abs(acc_sk[k] - acc_b[k]) for k in acc_sk])
    ms, ms1, mb = float(np.median(t_sk)), float(np.median(t_sk1)), float(np.median(t_b))

    def runs(ts):
        return ", ".join(f"{t:.2f}" for t in ts)

    print(f"scikit-learn, 35 Pipeline(StandardScaler, LogisticRegression) fits: median {ms:.3f} s (runs: {runs(t_sk)})")
    print(f"  same, threadpool_limits(1):                                 median {ms1:.3f} s (runs: {runs(t_sk1)})")
    print(f"batched torch solver (fit_probes_batched, {args.dtype or 'float32'}, 1 thread): median {mb:.3f} s "
          f"(runs: {runs(t_b)})")
    print(f"speed-up: {ms / mb:.1f}x vs scikit-learn as configured ({ms1 / mb:.1f}x vs single-threaded "
          f"scikit-learn); best-of-runs ratio {min(t_sk) / min(t_b):.1f}x")
    print(f"test accuracy difference over {len(diff)} probes: max {100 * diff.max():.2f} points, "
          f"mean {100 * diff.mean():.3f} points; probes with any difference: {(diff > 0).sum()}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print("accuracy per layer (sklearn / batched):")
    print("layer  " + "  ".join(f"{p:>15s}" for p in props))
    for layer in range(acts.shape[0]):
        cells = [f"{acc_sk[(layer, p)]:.3f} / {acc_b[(layer, p)]:.3f}".rjust(15) for p in props]
        print(f"{layer:5d}  " + "  ".join(cells))

    if args.cv:
        grid = (0.01, 0.1, 1.0, 10.0)
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        def sklearn_cv():
            best = {}
            for layer in range(acts.shape[0]):
                for p, y in props.items():
                    cv = StratifiedKFold(3, shuffle=True, random_state=0)
                    scores = [cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)),
                                              acts[layer][train], y[train], cv=cv, scoring="neg_log_loss").mean()
                              for c in grid]
                    best[(layer, p)] = grid[int(np.argmax(scores))]
            return best

        t0 = time.perf_counter()
        best_sk = sklearn_cv()
        t_cv_sk = time.perf_counter() - t0
        with threadpool_limits(1):
            t0 = time.perf_counter()
            sklearn_cv()
            t_cv_sk1 = time.perf_counter() - t0
        t0 = time.perf_counter()  # CV on the train split, then the final fit at the chosen C
        res = fit_probes_batched({"m": acts}, props, train, test, cv_grid=grid, cv_folds=3, seed=0, dtype=args.dtype)
        t_cv_b = time.perf_counter() - t0
        best_b = [res[("m", layer, p)].C for layer, p in best_sk]
        same = np.mean([best_sk[k] == c for k, c in zip(best_sk, best_b)])
        print(f"C by 3-fold CV (held-out log-loss) over {grid} ({len(grid) * 3 * len(best_b)} fits): "
              f"scikit-learn {t_cv_sk:.2f} s ({t_cv_sk1:.2f} s single-threaded); batched (fit_probes_batched "
              f"with cv_grid: CV + final fit) {t_cv_b:.2f} s; speed-up {t_cv_sk / t_cv_b:.1f}x "
              f"({t_cv_sk1 / t_cv_b:.1f}x vs single-threaded); same C chosen for {100 * same:.0f}% of probes "
              "(the folds differ, so near-ties can go either way)")


if __name__ == "__main__":
    main()
