"""How each stage's cost grows with the number of test examples (issue 27): the diagnosis of one
fine-tuned model (a given checkpoint, every analysis) at several test-set sizes, each in a fresh
process, with seconds and peak memory per stage and the log-log slope of each in examples.

    # the real one (minilm, the default config's model; fine-tunes it first unless --trained is given):
    OMP_NUM_THREADS=2 python benchmarks/bench_scaling.py --trained reports/default
    # a cheap check of the script itself (tiny-bert, fine-tuned here in seconds):
    OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py --quick

A slope of 1 is linear cost in examples; issue 27 asks for every stage at or under 1.15. Peak memory is
the process's resident set size, sampled every 20 ms by a thread, as the most it rose above the value at the
start of the stage. Extra ``--set key=value`` overrides go to every diagnosis (e.g.
``analyses.precision=full`` to scale the precise mode).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = (100, 200, 400, 800, 1600)
QUICK = {"model.backbone": "tiny-bert", "task.max_length": 32, "task.train_size": 150, "task.validation_size": 50,
         "task.test_size": 120, "finetune.epochs": 1, "analyses.bootstrap_samples": 200,
         "analyses.attribution_examples": 4, "causal.layers": [0, 2]}
# a given model needs no training split; a small one leaves the texts for the largest test set
GIVEN = {"task.train_size": 100, "task.validation_size": 50}


def _parse_sets(sets: list[str]) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)}


def _child(args: argparse.Namespace) -> None:
    """One diagnosis at ``--n`` test examples; prints a JSON line of per-stage seconds and peak memory."""
    import psutil

    import probe
    from probe.engine import context

    proc = psutil.Process()
    peaks: dict[str, float] = {}
    current = {"stage": None, "start": 0.0, "peak": 0.0}
    original = context.Timer.stage

    def sample() -> None:
        while True:
            rss = proc.memory_info().rss
            if current["stage"] is not None:
                current["peak"] = max(current["peak"], rss)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()

    class _Stage:
        def __init__(self, timer, name):
            self.cm, self.name = original(timer, name), name

        def __enter__(self):
            current.update(stage=self.name, start=proc.memory_info().rss, peak=proc.memory_info().rss)
            return self.cm.__enter__()

        def __exit__(self, *exc):
            rise = (current["peak"] - current["start"]) / 2 ** 20
            peaks[self.name] = max(peaks.get(self.name, 0.0), rise)
            current["stage"] = None
            return self.cm.__exit__(*exc)

    context.Timer.stage = lambda self, name: _Stage(self, name)
    over = {**(QUICK if args.quick else {}), **GIVEN, **_parse_sets(args.sets), "task.test_size": args.n,
            "output_dir": args.out, "name": f"n{args.n}", "model.backbone": None, "model.finetuned": args.model,
            "pretrain.enabled": False}
    run = probe.run(args.config, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    seconds = json.loads((run.path / "timings.json").read_text())
    print("RESULT " + json.dumps({"n": args.n, "seconds": seconds, "peak_mb": peaks}), flush=True)


def _trained_model(args: argparse.Namespace, out: Path) -> Path:
    import probe

    if args.trained:
        return Path(args.trained) / "models" / "finetuned"
    over = {**(QUICK if args.quick else {}), "output_dir": str(out), "name": "trained"}
    run = probe.run(args.config, progress=False, **{k.replace(".", "__"): v for k, v in over.items()})
    return run.path / "models" / "finetuned"


def slope(ns: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) on log(n) (NaN with fewer than two positive values)."""
    pairs = [(n, v) for n, v in zip(ns, values) if v > 0]
    if len(pairs) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


def _table(results: list[dict]) -> None:
    ns = [r["n"] for r in results]
    stages = list(dict.fromkeys(s for r in results for s in r["seconds"] if s != "total"))
    print(f"\n{'stage':<12}" + "".join(f"{n:>9}" for n in ns) + f"{'slope':>8}   peak MB rise per size, slope")
    for s in stages:
        secs = [r["seconds"].get(s, 0.0) for r in results]
        mem = [r["peak_mb"].get(s, 0.0) for r in results]
        print(f"{s:<12}" + "".join(f"{v:>9.1f}" for v in secs) + f"{slope(ns, secs):>8.2f}   "
              + " ".join(f"{m:.0f}" for m in mem) + f", {slope(ns, mem):.2f}")
    totals = [r["seconds"].get("total", sum(r["seconds"].values())) for r in results]
    print(f"{'total':<12}" + "".join(f"{v:>9.1f}" for v in totals) + f"{slope(ns, totals):>8.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default=None, help="run config (default: the built-in default)")
    p.add_argument("--trained", help="a finished run whose models/finetuned is diagnosed (else fine-tuned here)")
    p.add_argument("--model", help="a fine-tuned checkpoint folder to diagnose (instead of --trained)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help=f"test-set sizes (default {SIZES})")
    p.add_argument("--quick", action="store_true", help="tiny-bert, small settings, sizes 50 100 200")
    p.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)  # child mode
    args = p.parse_args()
    if args.n is not None:
        _child(args)
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-scaling-"))
    model = Path(args.model) if args.model else _trained_model(args, out)
    sizes = args.sizes or ((50, 100, 200) if args.quick else SIZES)
    results = []
    for n in sizes:
        cmd = [sys.executable, __file__, *([args.config] if args.config else []), "--n", str(n), "--model", str(model),
               "--out", str(out), *(["--quick"] if args.quick else []), *sum((["--set", s] for s in args.sets), [])]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if done.returncode or line is None:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the diagnosis at n = {n} failed (exit {done.returncode})")
        results.append(json.loads(line[len("RESULT "):]))
        print(f"n = {n}: {time.perf_counter() - start:.0f} s wall clock", flush=True)
    _table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
