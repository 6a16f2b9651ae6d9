"""Does ``torch.compile`` pay for probe's passes? Eager against compiled, compile time included.

Issue 16 asks for ``torch.compile`` where it pays and a word on where it does not. probe's analyses
run a model over a few hundred to a few thousand batches of different shapes (length-sorted, the last
batch of each pass shorter), the shape mix a compiled graph has to cover. This measures, on the run's
device, for the default's model (minilm classifier, 64 tokens):

* **inference**: ``--batches`` forward passes of 64 × 64 tokens under ``torch.inference_mode``, plus a
  pass of every other batch shape the causal stage meets (``--shapes`` distinct batch sizes);
* **training**: ``--steps`` fine-tuning steps of 16 × 64 (AdamW, as the fine-tuning loop).

For each: the first call's seconds (compilation for the compiled model), the steady-state seconds
per call, and the number of calls after which compiling has paid for itself (never, if it is not
faster). ``dynamic=None`` (torch's default: recompile once a dimension varies, then treat it as
dynamic).

    python benchmarks/bench_compile.py [--batches 40] [--steps 20] [--shapes 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch


def _model(device):
    from probe.models.backbones import build_classifier

    return build_classifier("minilm", [str(i) for i in range(5)], 0).to(device)


def _timed(fn, n: int, device) -> tuple[float, float]:
    """(seconds of the first call, mean seconds of the next ``n``)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t = time.perf_counter()
    fn(0)
    sync()
    first = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(1, n + 1):
        fn(i)
    sync()
    return first, (time.perf_counter() - t) / n


def _inference(model, batches: int, shapes: int, device) -> tuple[float, float, float]:
    """(first call, steady per 64 × 64 call, seconds for one pass of each other batch size)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (64, 64), generator=gen).to(device)
    mask = torch.ones_like(ids)

    def call(_i):
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask)

    first, steady = _timed(call, batches, device)
    t = time.perf_counter()
    for rows in range(63, 63 - shapes, -1):  # the other shapes a pass meets (e.g. its last batch)
        with torch.inference_mode():
            model(input_ids=ids[:rows], attention_mask=mask[:rows])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return first, steady, time.perf_counter() - t


def _training(model, steps: int, device) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 20000, (16, 64), generator=gen).to(device)
    mask, y = torch.ones_like(ids), torch.randint(0, 5, (16,), generator=gen).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def step(_i):
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _timed(step, steps, device)


def _pays_after(first_eager: float, steady_eager: float, first_comp: float, steady_comp: float) -> str:
    saved = steady_eager - steady_comp
    if saved <= 0:
        return "never"
    return f"{max(0.0, (first_comp - first_eager) / saved):,.0f} calls"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--shapes", type=int, default=4)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args()
    device = torch.device(args.device)
    base = _model(device).eval()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads")
    print("| workload | eager first | eager per call | compiled first (compiling) | compiled per call "
          "| speed-up | compiling pays after | other shapes: eager / compiled |")
    print("|---|---|---|---|---|---|---|---|")
    eager = _inference(copy.deepcopy(base), args.batches, args.shapes, device)
    comp = _inference(torch.compile(copy.deepcopy(base)), args.batches, args.shapes, device)
    print(f"| inference 64 × 64 | {eager[0]:.2f} s | {eager[1]:.3f} s | {comp[0]:.1f} s | {comp[1]:.3f} s "
          f"| {eager[1] / comp[1]:.2f}× | {_pays_after(eager[0], eager[1], comp[0], comp[1])} "
          f"| {eager[2]:.2f} s / {comp[2]:.1f} s |")
    eager = _training(copy.deepcopy(base), args.steps, device)
    comp = _training(torch.compile(copy.deepcopy(base)), args.steps, device)
    print(f"| training step 16 × 64 | {eager[0]:.2f} s | {eager[1]:.3f} s | {comp[0]:.1f} s | {comp[1]:.3f} s "
          f"| {eager[1] / comp[1]:.2f}× | {_pays_after(eager[0], eager[1], comp[0], comp[1])} | |")


if __name__ == "__main__":
    main()
