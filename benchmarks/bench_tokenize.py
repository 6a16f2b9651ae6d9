"""Tokenising BBC News articles for a 64-token model: whole texts with truncation (the plain way) vs
probe's word budget first (``probe.models.batching.tokenize``), which gives the same ids
(tests/test_batching.py) and is checked equal here too.

    python benchmarks/bench_tokenize.py
"""

from __future__ import annotations

import time

from probe.data.sources import _load_bbc_news
from probe.models.backbones import load_tokenizer
from probe.models.batching import tokenize


def main() -> None:
    tokenizer = load_tokenizer("minilm")
    texts = _load_bbc_news().text.tolist()
    for max_length in (64, 128):
        best = {"whole": float("inf"), "probe": float("inf")}
        for _ in range(3):
            t0 = time.perf_counter()
            whole = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
            t1 = time.perf_counter()
            ours = tokenize(tokenizer, texts, max_length)
            t2 = time.perf_counter()
            best = {"whole": min(best["whole"], t1 - t0), "probe": min(best["probe"], t2 - t1)}
        assert ours == whole
        print(f"{len(texts)} articles, max_length {max_length}: whole texts {best['whole']:.2f} s, "
              f"word budget first {best['probe']:.2f} s ({best['whole'] / best['probe']:.1f}x), same ids")


if __name__ == "__main__":
    main()
