"""Per-stage seconds of a diagnosis of a given model (``model.finetuned``: no fine-tuning) against the
same run with fine-tuning, in one go.

    python benchmarks/bench_given.py examples/default.yaml
    python benchmarks/bench_given.py examples/decoder.yaml
    python benchmarks/bench_given.py examples/default.yaml --trained reports/default   # reuse a finished run

Runs the config into ``<out>/trained`` (pretraining, if configured, and fine-tuning included), then
diagnoses the model it saved (``models/finetuned``) into ``<out>/given`` with everything else equal,
checks that the behaviour tables agree, and prints both runs' stage timings. It also counts the tokens
each stage of the given run passes through a model (a global forward pre-hook on word-embedding
layers; backward passes counted separately), from which README estimates what a large model's
diagnosis costs (docs: "Memory and time for big models").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _count_tokens():
    """Install the counters: ``{stage: [forward tokens, tokens also back-propagated]}``."""
    import torch

    from probe.engine import context

    counts: dict[str, list[int]] = {}
    current = {"stage": "other"}
    original = context.Timer.stage

    def stage(self, name):
        class _Stage:
            def __enter__(inner):
                inner.prev, current["stage"] = current["stage"], name
                inner.cm = original(self, name)
                return inner.cm.__enter__()

            def __exit__(inner, *exc):
                current["stage"] = inner.prev
                return inner.cm.__exit__(*exc)
        return _Stage()

    def hook(module, args):
        if isinstance(module, torch.nn.Embedding) and module.num_embeddings > 1000 and args:
            n = int(args[0].numel())
            c = counts.setdefault(current["stage"], [0, 0])
            c[0] += n
            c[1] += n if torch.is_grad_enabled() else 0

    context.Timer.stage = stage
    torch.nn.modules.module.register_module_forward_pre_hook(hook)
    return counts


def main() -> None:
    import probe

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="a run config (no sweep)")
    p.add_argument("--out", default=None, help="where the two runs go (default: a temporary folder)")
    p.add_argument("--trained", default=None, help="a finished run of the same config to compare with, instead of "
                   "running it here (its models/finetuned is diagnosed)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-given-"))
    trained = (probe.load_run(args.trained) if args.trained
               else probe.run(args.config, progress=False, output_dir=str(out), name="trained"))
    model_dir = trained.path / "models" / "finetuned"
    counts = _count_tokens()
    given = probe.run(args.config, progress=False, output_dir=str(out), name="given", pretrain__enabled=False,
                      model__backbone=None, model__finetuned=str(model_dir))
    same = trained.table("behaviour").equals(given.table("behaviour"))
    t, g = (json.loads((r.path / "timings.json").read_text()) for r in (trained, given))
    stages = list(dict.fromkeys([*t, *g]))
    print(f"{'stage':<12} {'with fine-tuning':>18} {'given model':>12}")
    for s in stages:
        print(f"{s:<12} {t.get(s, 0.0):>18.1f} {g.get(s, 0.0):>12.1f}")
    print(f"behaviour tables identical: {same}; reference of the given run: {given.summary['model']['backbone']}")
    print("tokens through a model in the given run, per stage (forward; of which also back-propagated):")
    for stage, (fwd, bwd) in counts.items():
        print(f"  {stage:<12} {fwd:>12,} {bwd:>12,}")


if __name__ == "__main__":
    main()
